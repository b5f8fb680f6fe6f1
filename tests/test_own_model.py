"""Your own model (trainables/models/user.py, timm_models.py): `--model path/to/file.py:function`,
`package.module:function` and `timm:NAME[:pretrained]`, from the one-line errors before Ray to the search, the
report, the export and predict.py; resume after the file changed; a two-node cluster whose trials import the file
from the copy Ray shipped."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_run import one_line_error, run_cli, trial_results
from sample_data import ROOT

from trainables.models import build_model, get_spec
from trainables.models import user as U

# An unreachable proxy: downloads fail at once, as offline, whatever network the test machine has (test_pretrained).
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}

# The docs' example (docs/own-model.md): a small torch CNN whose width the search tunes.
CNN = '''
"""A small CNN whose width the search tunes."""
from ray import tune
from torch import nn

SPACE = {"width": tune.choice([8, 16])}
DEFAULTS = {"width": 8}
MAX_EPOCHS = 2


def build(num_classes: int, width: int = 8) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )
'''

# No SPACE, DEFAULTS or MAX_EPOCHS: the shared space; `input_size` is passed by name.
PLAIN = """
from torch import nn


def net(num_classes, input_size=32):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * input_size * input_size, num_classes))
"""

KERAS = """
import keras
from ray import tune

SPACE = {"width": tune.choice([4, 8])}
MAX_EPOCHS = 2


def build(num_classes, input_shape, width=4):
    return keras.Sequential([
        keras.Input(shape=input_shape),
        keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(num_classes, activation="softmax"),
    ])
"""

BROKEN = {
    "no_function": ("def other(num_classes):\n    pass\n", "has no function 'build' (its functions: other)"),
    "raises": (
        "def build(num_classes, width=8):\n    raise RuntimeError('width 8 is not supported')\n",
        "the builder raised RuntimeError: width 8 is not supported",
    ),
    "not_a_model": (
        "import torch\n\ndef build(num_classes):\n    return {'layers': 3}\n",
        "the builder returned builtins.dict, not a torch nn.Module or a Keras model",
    ),
    "fails_on_batch": (
        "from torch import nn\n\ndef build(num_classes):\n    return nn.Sequential(nn.Flatten(), nn.Linear(100, num_classes))\n",
        "the model fails on a dummy batch of 2x3x32x32 float images: RuntimeError: mat1 and mat2 shapes",
    ),
    "wrong_output": (
        "from torch import nn\n\ndef build(num_classes):\n    return nn.Sequential(nn.Flatten(), nn.Linear(3072, 7))\n",
        "the model returned (2, 7); expected (2, 3), one logit for each of the 3 classes",
    ),
}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def run_report(*args, cwd=ROOT, env=None, timeout=300):
    import os
    import time

    t = time.time()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "report.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )
    proc.seconds = time.time() - t
    return proc


# ---------------------------------------------------------------------------------------------------------------
# the registry: references, the space, the check


def test_references_are_parsed_and_files_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert [
        U.kind(r) for r in ("net.py:build", "pkg.mod:make", "timm:resnet10t", "timm:vit_t:pretrained", "lenet5")
    ] == ["file", "module", "timm", "timm", None]
    assert U.canonical("net.py:build") == f"{tmp_path / 'net.py'}:build"
    assert U.canonical("timm:resnet10t") == "timm:resnet10t" and U.canonical("lenet5") == "lenet5"
    assert U.slug(f"{tmp_path}/net.py:build") == "net-build" and U.slug("timm:a:pretrained") == "timm-a-pretrained"


def test_a_file_with_its_own_space_and_one_without(tmp_path):
    from ray.tune.search import sample

    from search_spaces import common, get_max_epochs, get_space, space_note

    cnn = f"{write(tmp_path / 'cnn.py', CNN)}:build"
    space, defaults = get_space(cnn)
    assert isinstance(space["width"], sample.Categorical) and space["width"].categories == [8, 16]
    assert space["lr"] is common.COMMON["lr"]  # laid over the shared space: the loop still gets lr, batch size...
    assert defaults == {**common.COMMON_DEFAULTS, "width": 8} and get_max_epochs(cnn) == 2
    assert space_note(cnn) is None

    plain = f"{write(tmp_path / 'plain.py', PLAIN)}:net"
    assert get_space(plain) == (common.COMMON, common.COMMON_DEFAULTS) and get_max_epochs(plain) == common.MAX_EPOCHS
    assert space_note(plain) == (
        "note: plain.py has no SPACE, DEFAULTS, MAX_EPOCHS: the shared space (search_spaces/common.py), the shared "
        "first trial, 20 epochs; see docs/own-model.md"
    )
    # config keys reach the builder by the names of its parameters; the rest is ignored
    assert build_model(cnn, 3, width=16, lr=0.1)[0].out_channels == 16
    assert build_model(plain, 3, input_size=16)[1].in_features == 3 * 16 * 16


def test_defaults_left_out_start_at_the_builders_default(tmp_path):
    from search_spaces import get_space

    text = CNN.replace('DEFAULTS = {"width": 8}\n', "").replace("width: int = 8", "width: int = 16")
    assert get_space(f"{write(tmp_path / 'n.py', text)}:build")[1]["width"] == 16


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_broken_builder_is_one_line_naming_the_file(case, tmp_path):
    text, expected = BROKEN[case]
    ref = f"{write(tmp_path / f'{case}.py', text)}:build"
    with pytest.raises(U.ModelError) as e:
        U.check(ref, 3, 32, {"lr": 0.001})
    message = str(e.value)
    assert message.startswith(f"--model {ref}: ") and expected in message and "\n" not in message


def test_the_framework_is_what_the_builder_returns(tmp_path):
    from trainables.framework import framework_of

    ref = f"{write(tmp_path / 'cnn.py', CNN)}:build"
    assert get_spec(ref).framework is None  # not known before it was built
    assert U.check(ref, 3, 32, {"width": 8}) == "torch"
    assert framework_of(ref).name == "torch" and get_spec(ref).framework == "torch"
    other = f"{write(tmp_path / 'other.py', CNN)}:build"
    assert framework_of(other, "torch").name == "torch"  # a trial: the framework its config carries


def test_a_package_module_from_the_working_directory_is_shipped_whole(tmp_path, monkeypatch):
    write(tmp_path / "mynets" / "__init__.py", "")
    write(tmp_path / "mynets" / "small.py", CNN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    ref = "mynets.small:build"
    assert U.check(ref, 3, 32, {"width": 8}) == "torch"
    assert U.ship(ref, tmp_path) == [str(tmp_path / "mynets")]  # Ray's py_modules: importable on every node
    assert U.ship("timm:test_resnet", tmp_path) == []
    record = U.source_record(ref)
    assert record["path"] == str(tmp_path / "mynets" / "small.py") and record["import_root"] == str(tmp_path)


def test_a_file_is_shipped_as_a_copy_under_its_module_name(tmp_path):
    ref = f"{write(tmp_path / 'cnn.py', CNN)}:build"
    (tmp_path / "scratch").mkdir()
    [copy] = U.ship(ref, tmp_path / "scratch")
    assert Path(copy).name == f"{U.module_name(str(tmp_path / 'cnn.py'))}.py"
    assert Path(copy).read_text() == (tmp_path / "cnn.py").read_text()


def test_source_record_and_change_detection(tmp_path):
    f = write(tmp_path / "cnn.py", CNN)
    record = U.source_record(f"{f}:build")
    assert record == {"kind": "file", "function": "build", "path": str(f), "sha256": U.sha256(f)}
    info = {"model_source": record}
    assert U.changed(info, "report.py") is None
    f.write_text(CNN.replace("[8, 16]", "[8, 32]"))
    line = U.changed(info, "report.py")
    assert line.startswith(f"the model file {f} changed since the search started (sha256 {record['sha256'][:12]}")
    f.unlink()
    assert "no longer exists" in U.changed(info, "--resume")


# ---------------------------------------------------------------------------------------------------------------
# timm


def test_timm_from_scratch_and_pretrained_from_a_file(tmp_path):
    import timm
    import torch

    scratch = build_model("timm:test_resnet", 3, input_size=32)
    assert scratch.pretrained_cfg is None and scratch(torch.randn(2, 3, 32, 32)).shape == (2, 3)

    torch.manual_seed(0)
    state = timm.create_model("test_resnet").state_dict()  # the architecture with its ImageNet head
    torch.save(state, tmp_path / "w.pth")
    model = build_model("timm:test_resnet:pretrained", 3, weights_path=str(tmp_path / "w.pth"), resolution=48)
    got = model.state_dict()
    for k in state:  # every backbone tensor from the file, a new head for 3 classes
        if not k.startswith("fc."):
            torch.testing.assert_close(got[k], state[k], rtol=0, atol=0)
    assert got["fc.weight"].shape == (3, state["fc.weight"].shape[1])
    # its pretrained_cfg drives the loop: resolution, normalisation, head (trainables/torch_loop.input_config)
    assert model.pretrained_cfg["input_size"] == (3, 48, 48) and model.pretrained_cfg["classifier"] == "fc"
    assert tuple(model.pretrained_cfg["mean"]) == tuple(timm.models.get_pretrained_cfg("test_resnet").mean)


def test_timm_pretrained_space_resolutions_come_from_its_input_size():
    from search_spaces import get_max_epochs, get_space, space_note

    space, defaults = get_space("timm:test_resnet:pretrained")  # test_resnet's weights: 160x160
    assert space["resolution"].categories == [64, 96, 128, 160] and defaults["resolution"] == 160
    assert {"freeze_epochs", "backbone_lr_mult", "crop_scale"} <= set(space) and get_max_epochs(
        "timm:test_resnet"
    ) == 20
    assert space_note("timm:test_resnet").startswith("note: timm:test_resnet from scratch searches the shared space")


def test_timm_unknown_name_and_offline_weights_are_one_line(tmp_path, monkeypatch):
    from trainables.models.timm_models import check_weights
    from trainables.models.weights import WeightsError

    with pytest.raises(U.ModelError, match=r"timm 1\.\S+ has no model 'test_resnett' \(close: test_resnet"):
        get_spec("timm:test_resnett")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for k, v in OFFLINE.items():
        monkeypatch.setenv(k, v)
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))  # read at import; the env is set now
    with pytest.raises(WeightsError) as e:
        check_weights("test_resnet")
    assert "pretrained weights of timm's test_resnet are not in" in str(e.value) and "--weights PATH" in str(e.value)
    with pytest.raises(WeightsError, match="no such file"):
        check_weights("test_resnet", str(tmp_path / "nope.pth"))


# ---------------------------------------------------------------------------------------------------------------
# the command line, as a user runs it


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no_function", "raises", "not_a_model", "fails_on_batch"])
def test_broken_builders_stop_the_search_in_one_line_before_ray(case, image_folder, tmp_path):
    text, expected = BROKEN[case]
    f = write(tmp_path / "models" / f"{case}.py", text)
    proc = run_cli("--model", f"{f}:build", "--data-dir", image_folder, "--storage-path", tmp_path / "exp")
    line = one_line_error(proc, within=60)
    assert line.startswith(f"error: --model {f}:build: ") and expected in line
    assert not (tmp_path / "exp").exists()  # nothing started: no experiment folder, no Ray
    if case != "no_function":  # imported: without a SPACE of its own the search would use the shared one
        assert f"note: {case}.py has no SPACE, DEFAULTS, MAX_EPOCHS: the shared space" in proc.stdout


@pytest.mark.slow
def test_own_torch_file_search_report_export_predict_then_resume_refused_after_an_edit(image_folder, tmp_path):
    """The docs' example file outside the repo, run from another directory: the search tunes its width, the report
    retrains and exports it, predict.py reads images with the export; after an edit, report.py and --resume stop."""
    f = write(tmp_path / "mymodel" / "net.py", CNN)
    proc = run_cli(
        "--model",
        "mymodel/net.py:build",
        "--data-dir",
        image_folder,
        "--num-samples",
        2,
        "--storage-path",
        tmp_path / "exp",
        "--name",
        "own",
        "--num-cpus",
        2,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    info = json.loads((tmp_path / "exp" / "own" / "experiment.json").read_text())
    assert info["model"] == f"{f}:build" and info["framework"] == "torch"
    assert info["model_source"] == {"kind": "file", "function": "build", "path": str(f), "sha256": U.sha256(f)}
    assert info["search_space"]["width"] == {"type": "choice", "values": [8, 16]} and info["args"]["max_epochs"] == 2
    results = trial_results(tmp_path / "exp" / "own")
    assert len(results) == 2 and all(len(rows) == 2 for rows in results.values())
    assert {rows[0]["config"]["width"] for rows in results.values()} <= {8, 16}
    assert all(rows[0]["config"]["framework"] == "torch" for rows in results.values())

    rep = run_report("--experiment", "latest", "--storage-path", tmp_path / "exp", "--out", tmp_path / "res")
    assert rep.returncode == 0, rep.stderr[-3000:]
    out = tmp_path / "res" / "own"
    card = json.loads((out / "model_card.json").read_text())
    assert card["model"] == f"{f}:build" and card["check"]["passed"]
    assert card["rebuild"]["sha256_at_search"] == U.sha256(f) and str(f) in card["rebuild"]["python"]
    assert {"model.onnx", "model.pt2", "model.pth"} <= {p.name for p in out.iterdir()}
    pred = subprocess.run(
        [sys.executable, str(ROOT / "predict.py"), "--model", out, image_folder / "test" / "cat"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pred.returncode == 0 and len(pred.stdout.splitlines()) == len(
        list((image_folder / "test" / "cat").iterdir())
    )

    f.write_text(CNN.replace("[8, 16]", "[8, 32]"))  # the user edits the file after the search
    rep = run_report("--experiment", "latest", "--storage-path", tmp_path / "exp", "--out", tmp_path / "res2")
    assert f"the model file {f} changed since the search started" in one_line_error(rep, within=60)
    resumed = run_cli("--resume", "--name", "own", "--storage-path", tmp_path / "exp")
    assert f"the model file {f} changed since the search started" in one_line_error(resumed, within=60)


def one_epoch_search(model: str, image_folder: Path, storage: Path, name: str, *extra, env=None):
    """A search at its cheapest (one trial of one epoch) that must succeed; its folder."""
    args = ["--model", model, "--data-dir", image_folder, "--num-samples", 1, "--max-epochs", 1, *extra]
    proc = run_cli(*args, "--storage-path", storage, "--name", name, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    proc.folder = storage / name
    return proc


def fit_first_trial(ref: str, data: dict) -> list[dict]:
    """The trials' own training loop (trainables/torch_loop.fit), in this process, on the first config of `ref`'s
    space for one epoch: the reports it made."""
    import torch

    from search_driver.lr_find import first_config
    from search_spaces import get_space
    from trainables.torch_loop import fit

    space, defaults = get_space(ref)
    reports = []
    config = first_config(space, defaults, {"model": ref, "max_epochs": 1, "seed": 0})
    fit(config, data, lambda r, _: reports.append(r), device=torch.device("cpu"))
    return reports


def test_own_file_without_a_space_trains_on_the_shared_space(tiny_arrays, tmp_path):
    import math

    from trainables import metric_names as M

    [report] = fit_first_trial(f"{write(tmp_path / 'plain.py', PLAIN)}:net", tiny_arrays)
    assert set(M.REPORT_KEYS) <= set(report) and math.isfinite(report[M.VAL_LOSS]) and not report[M.DIVERGED]


def test_timm_from_scratch_trains_in_the_loop(tiny_arrays):
    from trainables import metric_names as M

    [report] = fit_first_trial("timm:test_resnet", tiny_arrays)
    assert report[M.EPOCH] == 1 and report[M.VAL_LOSS] > 0 and not report[M.DIVERGED]


@pytest.mark.slow
def test_own_keras_file_search_and_report(image_folder, tmp_path):
    f = write(tmp_path / "knet.py", KERAS)
    proc = one_epoch_search(f"{f}:build", image_folder, tmp_path / "exp", "k")
    assert json.loads((proc.folder / "experiment.json").read_text())["framework"] == "keras"
    assert [rows[0]["config"]["framework"] for rows in trial_results(proc.folder).values()] == ["keras"]
    rep = run_report("--experiment", "latest", "--storage-path", tmp_path / "exp", "--out", tmp_path / "res")
    assert rep.returncode == 0, rep.stderr[-3000:]
    card = json.loads((tmp_path / "res" / "k" / "model_card.json").read_text())
    assert card["framework"] == "keras" and card["check"]["passed"]
    assert card["files"]["savedmodel"]["path"] == "model_savedmodel" and str(f) in card["rebuild"]["python"]


@pytest.mark.slow
def test_timm_pretrained_with_weights_offline_search_and_export(image_folder, tmp_path):
    """No network, no Hugging Face cache: --weights (a state dict the test makes) is enough (without it: one line,
    test_timm_unknown_name_and_offline_weights_are_one_line); the export resizes to the model's resolution and
    normalises with its pretrained_cfg's statistics inside."""
    import timm
    import torch

    torch.save(timm.create_model("test_resnet").state_dict(), tmp_path / "w.pth")
    env = {**OFFLINE, "HF_HOME": str(tmp_path / "hf")}
    model = "timm:test_resnet:pretrained"
    extra = ("--weights", tmp_path / "w.pth", "--resolution", 40)
    proc = one_epoch_search(model, image_folder, tmp_path / "exp", "tp", *extra, env=env)
    [rows] = trial_results(proc.folder).values()
    assert rows[0]["config"]["weights_path"] == str(tmp_path / "w.pth") and rows[0]["config"]["resolution"] == 40
    rep = run_report("--experiment", "latest", "--storage-path", tmp_path / "exp", "--out", tmp_path / "res", env=env)
    assert rep.returncode == 0, rep.stderr[-3000:]
    card = json.loads((tmp_path / "res" / "tp" / "model_card.json").read_text())
    mean = list(timm.models.get_pretrained_cfg("test_resnet").mean)
    assert card["preprocessing_inside"]["resize_to"] == 40 and card["preprocessing_inside"]["mean"] == mean
    assert "timm.create_model('test_resnet', num_classes=3)" in card["rebuild"]["python"]


def test_the_docs_example_file_searches_its_width(tmp_path):
    """docs/own-model.md's example, as written there: it builds, passes the check and searches `width`."""
    text = (ROOT / "docs" / "own-model.md").read_text().split("```python\n", 1)[1].split("```", 1)[0]
    ref = f"{write(tmp_path / 'net.py', text)}:build"
    from search_spaces import get_max_epochs, get_space

    space, defaults = get_space(ref)
    assert space["width"].categories == [8, 16, 32] and defaults["width"] == 16 and get_max_epochs(ref) == 15
    assert U.check(ref, 10, 32, {**defaults, "width": 8}) == "torch"


def test_help_names_the_own_model_forms_and_how_to_list_timm():
    from search_driver.cli import build_parser

    flat = " ".join(build_parser().format_help().split())
    for fragment in (
        "path/to/file.py:function",
        "package.module:function",
        "timm:NAME:pretrained",
        "import timm; print(timm.list_models())",
        "docs/own-model.md",
    ):
        assert fragment in flat, fragment


# ---------------------------------------------------------------------------------------------------------------
# a two-node cluster: the trial imports the copy Ray shipped, not the driver's file


@pytest.mark.slow
def test_two_node_cluster_trial_imports_the_shipped_file(image_folder, tmp_path):
    """The head has 1 CPU, trials ask for 2: they run on a worker node the autoscaler starts, in a working
    directory of Ray's, and import the model file from the py_modules copy the driver uploaded."""
    from local_cluster import LocalCluster

    from trainables import metric_names as M

    log = tmp_path / "imports.log"
    logged = (
        CNN
        + f"\nimport os\nwith open({str(log)!r}, 'a') as _f:\n    _f.write(f'{{os.getpid()}} {{__file__}} {{os.getcwd()}}\\n')\n"
    )
    f = write(tmp_path / "elsewhere" / "net.py", logged)
    cluster = LocalCluster(num_cpus=1, worker_types={"cpu_worker": {"resources": {"CPU": 2}, "max_workers": 1}})
    try:
        proc = cluster.run(
            sys.executable,
            ROOT / "run_search.py",
            "--address",
            cluster.address,
            "--model",
            f"{f}:build",
            "--data-dir",
            image_folder,
            "--num-samples",
            1,
            "--cpus-per-trial",
            2,
            "--storage-path",
            tmp_path / "exp",
            "--name",
            "mn",
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        [rows] = trial_results(tmp_path / "exp" / "mn").values()
        assert len(rows) == 2 and rows[0]["config"]["framework"] == "torch"
        from test_multinode import node_resources

        head = next(n for n, res in node_resources(cluster).items() if "node:__internal_head__" in res)
        assert rows[-1][M.NODE_ID] != head  # trained on the worker node
    finally:
        cluster.stop()
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [path for _, path, _ in lines][0] == str(f)  # the driver's check imported the file itself
    shipped = [(path, cwd) for _, path, cwd in lines[1:]]
    assert shipped, "no trial imported the model"
    for path, cwd in shipped:
        assert path != str(f) and "runtime_resources" in path and Path(path).name.startswith("cifar_tune_model_net_")
        assert cwd != str(f.parent)
