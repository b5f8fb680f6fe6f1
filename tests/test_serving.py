"""serving/: export with preprocessing inside (reloaded in a fresh process, ONNX parity, the export-time check),
the model card (its snippet runs without this repository), predict.py on a folder with a corrupt file."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_run import printed
from PIL import Image
from sample_data import CLASSES, ROOT, write_image_folder

from image_data.cache import load_dataset
from serving import export_torch
from serving import predict as serving_predict
from serving.export import TOLERANCE, ExportError, compare, export_model
from serving.model_card import CARD_FILE, read_card
from serving.predict import decode_image, ignored_line, load_predictor, resolve_backend
from trainables.models import build_model

INFO = {"data": {"path": "tiny", "kind": "folder", "image_size": 32, "subset": None}, "split_seed": 0,
        "git_sha": "abc", "packages": {"torch": torch.__version__}}  # fmt: skip
METRICS = {"accuracy": 0.5, "top5_accuracy": 1.0, "macro": {"f1": 0.4}, "seeds": [{}], "retrained": True}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    return load_dataset(write_image_folder(root / "data"), cache_dir=root / "cache")


def export_lenet(dataset, out):
    torch.manual_seed(0)
    model = build_model("lenet5", len(dataset.classes), dropout=0.2).eval()
    out.mkdir(parents=True, exist_ok=True)
    card = export_model(out, framework="torch", model=model, dataset=dataset,
                        config={"model": "lenet5", "dropout": 0.2, "lr": 1e-3}, info=INFO, metrics=METRICS)  # fmt: skip
    return model, card


@pytest.fixture(scope="module")
def lenet(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("results") / "tiny"
    model, card = export_lenet(dataset, out)
    expected = export_torch.reference(model, dataset.x_test, dataset.mean, dataset.std)  # the framework's answer
    return out, card, expected


def data_root(dataset) -> Path:
    return Path(dataset.source["path"])


def nhwc(x_nchw):
    return np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))


def assert_same_predictions(got, expected):
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
    assert np.abs(got - expected).max() <= TOLERANCE
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)  # probabilities, not logits


def run_isolated(code: str, cwd, timeout=120):
    """`python -I`: no PYTHONPATH, no script folder, so nothing of this repository is importable."""
    proc = subprocess.run([sys.executable, "-I", "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def run_predict(*args, timeout=120):
    return subprocess.run([sys.executable, str(ROOT / "predict.py"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# export


def test_export_reloads_in_a_fresh_process_with_the_same_predictions(lenet, dataset, tmp_path):
    out, card, expected = lenet
    assert (out / "model.pt2").exists() and (out / "model.onnx").exists()
    np.save(tmp_path / "images.npy", nhwc(dataset.x_test))
    code = (
        "import numpy as np, torch, sys\n"
        "assert not any('cifar' in p or 'export' in p for p in sys.path[:1])\n"
        f"m = torch.export.load({str(out / 'model.pt2')!r}).module()\n"
        "x = torch.from_numpy(np.load('images.npy'))\n"
        "np.save('pt2.npy', m(x).detach().numpy())\n"
        "np.save('pt2_one.npy', m(x[:1]).detach().numpy())  # batch 1: the batch axis is dynamic\n"
    )
    run_isolated(code, tmp_path)
    assert_same_predictions(np.load(tmp_path / "pt2.npy"), expected)
    assert_same_predictions(np.load(tmp_path / "pt2_one.npy"), expected[:1])


def test_onnx_parity_with_torch_at_any_batch_size(lenet, dataset):
    import onnxruntime as ort

    out, card, expected = lenet
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("images", "tensor(uint8)", [32, 32, 3])
    assert outp.name == "probabilities" and outp.shape[1] == len(CLASSES)
    x = nhwc(dataset.x_test)
    for n in (1, 5, len(x)):
        assert_same_predictions(session.run(None, {"images": x[:n]})[0], expected[:n])
    # and the export-time check recorded what it saw
    for key in ("torch_export", "onnx"):
        check = card["files"][key]["check"]
        assert check["passed"] and check["top1_agreement"] == 1.0 and check["max_abs_diff"] <= TOLERANCE
        assert check["images"] == len(dataset.x_test)


@pytest.mark.slow
def test_pretrained_model_resizes_inside_the_export(dataset, tmp_path):
    """resnet18_pretrained trains on batches resized to its resolution with ImageNet statistics: the exported file
    takes images at the stored 32x32 and does both itself, matching the training framework's predict."""
    import onnxruntime as ort

    torch.manual_seed(0)
    model = build_model("resnet18_pretrained", 3, resolution=48, load_weights=False).eval()
    card = export_model(tmp_path, framework="torch", model=model, dataset=dataset,
                        config={"model": "resnet18_pretrained", "resolution": 48}, info=INFO, metrics=METRICS)  # fmt: skip
    pre = card["preprocessing_inside"]
    assert pre["resize_to"] == 48 and pre["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert card["input"]["shape"] == [None, 32, 32, 3]  # the stored size, not the model's resolution
    expected = export_torch.reference(model, dataset.x_test, dataset.mean, dataset.std)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert_same_predictions(session.run(None, {"images": nhwc(dataset.x_test)})[0], expected)
    # without the resize the network would see 32x32 images: different probabilities, so the check has teeth
    m, s = export_torch.norm_tensors(pre["mean"], pre["std"], "cpu")
    with torch.no_grad():
        unresized = torch.softmax(model((torch.from_numpy(dataset.x_test).float() / 255 - m) / s), 1).numpy()
    assert np.abs(unresized - expected).max() > 10 * TOLERANCE


def test_flip_tta_inside_the_export_matches_the_reports_evaluation(dataset, tmp_path):
    """A shipped model with flip TTA: model.onnx and model.pt2 give, on the real test images, the probabilities the
    report's evaluation computed (the framework's predict with flip_tta), not the plain model's; predict.py and the
    card say the model carries it."""
    import onnxruntime as ort

    from analysis.retrain import local_framework

    torch.manual_seed(0)
    model = build_model("lenet5", len(dataset.classes), dropout=0.0).eval()
    # fp32: the report scores the test set as the exported files run (analysis/evaluation.py)
    config = {"model": "lenet5", "dropout": 0.0, "batch_size": 64, "flip": True, "precision": "fp32"}
    fw = local_framework("torch", "cpu")
    report_eval = fw.predict(model, dataset.x_test, dataset.search_arrays(), config, flip_tta=True)
    plain = fw.predict(model, dataset.x_test, dataset.search_arrays(), config)
    assert np.abs(report_eval - plain).max() > 10 * TOLERANCE  # the check below has teeth
    final_model = {"refit": None, "weight_averaging": None, "flip_tta": True, "flip_tta_asked": True}
    card = export_model(
        tmp_path,
        framework="torch",
        model=model,
        dataset=dataset,
        config=config,
        info=INFO,
        metrics=METRICS,
        final_model=final_model,
    )
    assert card["preprocessing_inside"]["flip_tta"] is True and "flip" in card["final_model"]["carries"]
    x = nhwc(dataset.x_test)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert_same_predictions(session.run(None, {"images": x})[0], report_eval)
    program = torch.export.load(str(tmp_path / "model.pt2")).module()
    assert_same_predictions(program(torch.from_numpy(x)).detach().numpy(), report_eval)
    proc = run_predict("--model", tmp_path, data_root(dataset) / "test" / "ship", "--top-k", 1)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "flip test-time augmentation" in proc.stderr.splitlines()[0]


ENSEMBLE = {"refit": None, "weight_averaging": None, "flip_tta": True, "flip_tta_asked": True,
            "ensemble": {"members": ["plain", "refit"], "of": "class probabilities"}}  # fmt: skip


def test_an_ensemble_ships_as_one_model_whose_probabilities_are_its_members_mean(dataset, tmp_path):
    """report.py --ensemble: the plain model and the refit as one network (trainables.torch_loop.ProbabilityMean).
    Its probabilities are the mean of its members', flip TTA on top; model.onnx and model.pt2 give what the
    report's evaluation computed; --export-only rebuilds the two-network model.pth from best_config.json."""
    import onnxruntime as ort

    from analysis.retrain import local_framework
    from serving.export import export_existing

    fw = local_framework("torch", "cpu")
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(build_model("lenet5", len(dataset.classes), dropout=0.0).eval())
    config = {"model": "lenet5", "dropout": 0.0, "batch_size": 64, "flip": True, "precision": "fp32"}
    data = dataset.search_arrays()
    each = [fw.predict(m, dataset.x_test, data, config) for m in members]
    model = fw.ensemble(members)
    np.testing.assert_allclose(fw.predict(model, dataset.x_test, data, config), np.mean(each, 0), atol=1e-6)
    report_eval = fw.predict(model, dataset.x_test, data, config, flip_tta=True)
    out = tmp_path / "results" / "ens"
    out.mkdir(parents=True)
    card = export_model(out, framework="torch", model=model, dataset=dataset, config=config, info=INFO,
                        metrics=METRICS, final_model=ENSEMBLE)  # fmt: skip
    assert card["check"]["passed"] and "ensemble" in card["final_model"]["carries"]
    x = nhwc(dataset.x_test)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert_same_predictions(session.run(None, {"images": x})[0], report_eval)
    program = torch.export.load(str(out / "model.pt2")).module()
    assert_same_predictions(program(torch.from_numpy(x)).detach().numpy(), report_eval)

    # --export-only: model.pth holds both networks; best_config.json's final_model says so
    fw.save_model(model, out)
    storage = tmp_path / "experiments"
    (storage / "ens").mkdir(parents=True)
    info = {**INFO, "data": {**INFO["data"], "path": str(data_root(dataset))}, "framework": "torch"}
    (storage / "ens" / "experiment.json").write_text(json.dumps(info))
    best = {**config, "input": {"input_size": 32}, "classes": dataset.classes, "final_model": ENSEMBLE}
    (out / "best_config.json").write_text(json.dumps(best))
    (out / "metrics.json").write_text(json.dumps(METRICS))
    (out / "model.onnx").unlink()
    card = export_existing(str(out), storage_path=str(storage), cache_dir=str(tmp_path / "cache"))
    assert card["check"]["passed"]
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert_same_predictions(session.run(None, {"images": x})[0], report_eval)
    note = fw.load_note({**config, "input_size": 32, "final_model": ENSEMBLE}, len(dataset.classes))
    assert "model = ProbabilityMean([member() for _ in range(2)])" in note


@pytest.mark.slow
def test_a_keras_ensemble_saves_loads_and_exports_as_one_model(dataset, tmp_path):
    """The Keras ensemble (keras_loop.ensemble): the mean of its members' probabilities, saved as one .keras file
    that loads again, and exported (SavedModel, ONNX) with the same predictions as Keras' own predict."""
    import onnxruntime as ort

    from analysis.retrain import local_framework
    from serving import export_keras
    from trainables.keras_env import keras

    fw = local_framework("keras", "cpu")
    members = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
        # one builder names both alike (keras_resnet18 does): the ensemble must still be one valid model
        members.append(
            keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x)), name="net")
        )
    data = dataset.search_arrays()
    each = [fw.predict(m, dataset.x_test, data, {}) for m in members]
    model = fw.ensemble(members)
    expected = fw.predict(model, dataset.x_test, data, {}, flip_tta=True)
    np.testing.assert_allclose(fw.predict(model, dataset.x_test, data, {}), np.mean(each, 0), atol=1e-6)
    reloaded = export_keras.load_trained(tmp_path / fw.save_model(model, tmp_path), None)
    np.testing.assert_allclose(fw.predict(reloaded, dataset.x_test, data, {}, flip_tta=True), expected, atol=1e-6)
    (tmp_path / "out").mkdir()

    # a subclassed Keras model has no fixed input: the ensemble takes any height and width
    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.pool, self.out = keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")

        def call(self, x):
            return self.out(self.pool(x))

    tiny = Tiny()
    tiny(np.zeros((1, 32, 32, 3), "float32"))
    both = fw.ensemble([tiny, members[0]])
    np.testing.assert_allclose(fw.predict(both, dataset.x_test, data, {}),
                               (fw.predict(tiny, dataset.x_test, data, {}) + each[0]) / 2, atol=1e-6)  # fmt: skip
    card = export_model(tmp_path / "out", framework="keras", model=reloaded, dataset=dataset,
                        config={"model": "keras_resnet18"}, info=INFO, metrics=METRICS, final_model=ENSEMBLE)  # fmt: skip
    assert card["check"]["passed"]
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert_same_predictions(session.run(None, {session.get_inputs()[0].name: nhwc(dataset.x_test)})[0], expected)


def test_compare_needs_full_agreement_and_close_probabilities():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]], dtype=np.float32)
    assert compare("f", "torch", p, p + 5e-5)["passed"]
    with pytest.raises(ExportError, match=r"max \|Δp\| 2\.0e-04"):
        compare("f", "torch", p, p + 2e-4)
    swapped = p[:, [0, 2, 1]]  # second image's top-1 flips
    with pytest.raises(ExportError, match="top-1 agreement 50.00%"):
        compare("f", "torch", p, swapped)


def test_a_failed_check_fails_loudly_and_leaves_no_export(dataset, tmp_path, monkeypatch):
    real = export_torch.reference
    monkeypatch.setattr(export_torch, "reference", lambda *a: np.roll(real(*a), 1, axis=1))  # a wrong framework
    with pytest.raises(ExportError, match="model.pt2 disagrees with torch on 18 test images: top-1 agreement"):
        export_lenet(dataset, tmp_path)
    assert not any((tmp_path / n).exists() for n in ("model.pt2", "model.onnx", CARD_FILE))


# ---------------------------------------------------------------------------------------------------------------
# model card


def test_model_card_says_what_a_user_needs(lenet, dataset, tmp_path):
    out, card, _ = lenet
    card = read_card(out)  # as written to disk
    assert card["classes"] == CLASSES and card["framework"] == "torch" and card["model"] == "lenet5"
    spec = {k: card["input"][k] for k in ("dtype", "layout", "shape", "channels")}
    assert spec == {"dtype": "uint8", "layout": "NHWC", "shape": [None, 32, 32, 3], "channels": "RGB"}
    assert "bilinear" in card["input"]["how_to_make"] and "32x32" in card["input"]["how_to_make"]
    assert card["preprocessing_inside"]["mean"] == pytest.approx(dataset.mean)
    assert card["preprocessing_inside"]["std"] == pytest.approx(dataset.std)
    assert card["output"]["shape"] == [None, 3] and "softmax" in card["output"]["meaning"]
    assert card["test_metrics"] == {
        "accuracy": 0.5,
        "top5_accuracy": 1.0,
        "retrained": True,
        "macro_f1": 0.4,
        "seeds": 1,
    }
    assert card["config"]["dropout"] == 0.2 and card["check"]["passed"]
    assert len(card["data"]["fingerprint_sha256"]) == 64 and card["data"]["split_seed"] == 0
    assert card["versions"]["torch"] == torch.__version__.split("+")[0] and "onnxruntime" in card["versions"]
    for f in card["files"].values():
        assert len(f["sha256"]) == 64 and f["load"]
    # The usage snippet, run with nothing but the card, the ONNX file and an image (of another size) in a folder.
    user = tmp_path / "user"
    user.mkdir()
    shutil.copy(out / CARD_FILE, user)
    shutil.copy(out / "model.onnx", user)
    image = next((data_root(dataset) / "test" / "ship").glob("*.png"))
    Image.open(image).resize((50, 40)).save(user / "my_image.jpg", quality=95)
    proc = run_isolated(card["usage"]["python_onnxruntime"], user)
    first_class, first_prob = proc.stdout.splitlines()[0].split()
    predictor = load_predictor(out, backend="onnx", device="cpu")
    probs = predictor(decode_image(user / "my_image.jpg", 32)[None])[0]
    assert first_class == CLASSES[probs.argmax()] and float(first_prob) == pytest.approx(probs.max(), abs=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# predict.py


def mixed_folder(root, source):
    """Three readable images (PNG, JPEG of another size, BMP in a sub-folder), one corrupt JPEG, one text file."""
    root.mkdir()
    files = sorted((source / "test").rglob("*.png"))[:3]
    Image.open(files[0]).save(root / "a.png")
    Image.open(files[1]).resize((64, 48)).save(root / "b.jpg")
    (root / "sub").mkdir()
    Image.open(files[2]).convert("L").save(root / "sub" / "c.bmp")  # greyscale: converted to RGB as in training
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (root / "notes.txt").write_text("not an image")
    return [root / "a.png", root / "b.jpg", root / "sub" / "c.bmp"]


def test_predict_folder_with_a_corrupt_file(lenet, dataset, tmp_path):
    out, card, _ = lenet
    good = mixed_folder(tmp_path / "images", data_root(dataset))
    proc = run_predict("--model", out, tmp_path / "images", "--top-k", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert [ln.split(":")[0] for ln in lines] == [str(p) for p in sorted(good)]
    skipped = [ln for ln in proc.stderr.splitlines() if ln.startswith("skipped")]
    assert len(skipped) == 1 and "broken.jpg" in skipped[0], proc.stderr
    assert "Traceback" not in proc.stderr and "1 unreadable" in proc.stderr and "1 non-image" in proc.stderr
    # what it prints is the exported model's answer on the data loader's decode of each file
    predictor = load_predictor(out, backend="torch", device="cpu")
    probs = predictor(np.stack([decode_image(p, 32) for p in sorted(good)]))
    for line, p in zip(lines, probs, strict=True):
        (c1, p1), (c2, p2) = [pair.rsplit(" ", 1) for pair in line.split(": ", 1)[1].split(", ")]
        order = np.argsort(-p)
        assert [c1, c2] == [CLASSES[order[0]], CLASSES[order[1]]]
        assert float(p1) == pytest.approx(p[order[0]], abs=1e-3)

    (tmp_path / "images" / "empty.png").write_bytes(b"")  # issue 23.8: was "not an image: PIL cannot identify it"
    (tmp_path / "images" / "labels.json").write_text("{}")
    proc = run_predict("--model", out, tmp_path / "images", "--csv", tmp_path / "pred.csv", "--batch-size", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == "" and "wrote" in proc.stderr
    # the files not tried are named, not only counted
    (ignored,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("ignored ")]
    assert ignored.startswith(f"ignored 2 files without an image extension: {tmp_path / 'images' / 'labels.json'}")
    assert ignored.endswith(("notes.txt", ", ... (1 more)")), ignored  # as many names as 120 columns hold
    assert ignored_line([Path("a/notes.txt"), Path("a/labels.json")]) == (
        "ignored 2 files without an image extension: a/notes.txt, a/labels.json"
    )
    raw = (tmp_path / "pred.csv").read_bytes()
    assert b"\r\n" not in raw and raw.endswith(b"\n")  # LF, as every other file the project writes
    rows = list(csv.DictReader(open(tmp_path / "pred.csv")))
    assert len(rows) == 5
    by_path = {r["path"]: r for r in rows}
    # the reason alone: the path is in its own column
    assert by_path[str(tmp_path / "images" / "broken.jpg")]["error"].startswith(("corrupt: ", "truncated: "))
    assert by_path[str(tmp_path / "images" / "empty.png")]["error"] == "empty: zero bytes"
    assert not any(r["path"] in r["error"] for r in rows)
    for path, p in zip(sorted(good), probs, strict=True):
        r = by_path[str(path)]
        assert r["error"] == "" and r["class_1"] == CLASSES[p.argmax()]
        assert float(r["prob_1"]) == pytest.approx(p.max(), abs=1e-5)


def test_predict_exits_nonzero_only_when_nothing_was_read(lenet, tmp_path):
    out, _, _ = lenet
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("x.jpg", "y.png"):
        (bad / name).write_bytes(b"garbage")
    proc = run_predict("--model", out, bad, tmp_path / "missing.jpg")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if ln.startswith("skipped")]) == 3
    assert proc.stderr.strip().splitlines()[-1] == "error: no image could be read (3 inputs tried)"
    # a report folder without an export: one error saying how to make one, the command on its own line to paste
    report = tmp_path / "old_report"
    report.mkdir()
    (report / "best_config.json").write_text("{}")
    proc = run_predict("--model", report, bad)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "export it with:\n" in proc.stderr
    command = proc.stderr.split("export it with:\n")[1].replace(" \\\n    ", " ").strip()  # ` \` continues it
    assert command == f"{printed(sys.executable)} report.py --export-only {report}"  # run from the repo root


def test_backend_choice_and_gpu_requests(lenet, monkeypatch):
    out, card, _ = lenet
    assert resolve_backend(card, "auto", "cpu") == ("onnx", "cpu")
    assert resolve_backend(card, "torch", "cpu") == ("torch", "cpu")
    with pytest.raises(Exception, match="no such export"):
        resolve_backend(card, "savedmodel", "cpu")
    no_onnx = {**card, "files": {**card["files"], "onnx": {"path": None, "error": "not exported: converter failed"}}}
    assert resolve_backend(no_onnx, "auto", "cpu") == ("torch", "cpu")  # a Keras model whose ONNX conversion failed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(Exception, match="--device cuda: the onnx backend sees no CUDA GPU"):
        resolve_backend(card, "auto", "cuda")
    assert resolve_backend(card, "auto", "auto") == ("onnx", "cpu")
    # a GPU that torch sees but the CPU build of onnxruntime cannot use: auto runs the torch program on it
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(serving_predict, "gpu_driver_present", lambda: True)
    assert resolve_backend(card, "auto", "auto") == ("torch", "cuda")
    assert resolve_backend(card, "auto", "cuda") == ("torch", "cuda")


# ---------------------------------------------------------------------------------------------------------------
# Keras


@pytest.mark.slow
def test_keras_export_savedmodel_and_onnx(dataset, tmp_path):
    """A small Keras model with the project's custom Block: .keras, SavedModel and ONNX (tf2onnx), each checked;
    the SavedModel predicts through predict.py in a fresh process, the ONNX file matches Keras' predict."""
    import onnxruntime as ort

    from serving import export_keras
    from trainables.keras_env import keras
    from trainables.models.keras_resnet import Block

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = Block(8, stride=2)(keras.layers.Conv2D(8, 3, strides=2)(inputs))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    card = export_model(tmp_path, framework="keras", model=model, dataset=dataset, config={"model": "keras_resnet18"},
                        info=INFO, metrics=METRICS)  # fmt: skip
    assert set(card["files"]) == {"keras", "savedmodel", "onnx"} and card["check"]["passed"]
    assert card["input"]["layout"] == "NHWC" and card["preprocessing_inside"]["resize_to"] is None
    expected = export_keras.reference(model, dataset.x_test, dataset.mean, dataset.std)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    x = nhwc(dataset.x_test)
    for n in (1, len(x)):
        assert_same_predictions(session.run(None, {session.get_inputs()[0].name: x[:n]})[0], expected[:n])

    proc = run_predict("--model", tmp_path, data_root(dataset) / "test", "--backend", "savedmodel", "--csv",
                       tmp_path / "p.csv", "--top-k", 3)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "with savedmodel on cpu" in proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == len(x)
    # the test split is read in the same (sorted) order by the data loader and by predict.py's folder walk
    got = np.array([[float(r[f"prob_{k}"]) for k in (1, 2, 3)] for r in rows])
    np.testing.assert_allclose(got, -np.sort(-expected, axis=1), atol=1e-4)
    assert json.loads((tmp_path / CARD_FILE).read_text())["files"]["savedmodel"]["path"] == "model_savedmodel"


@pytest.mark.slow
def test_keras_flip_tta_inside_the_export(dataset, tmp_path):
    """The Keras files with flip TTA inside match Keras' predict with flip_tta (the report's evaluation)."""
    import onnxruntime as ort

    from serving import export_keras
    from trainables.keras_env import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x))  # position-sensitive
    model = keras.Model(inputs, outputs)
    final_model = {"refit": None, "weight_averaging": None, "flip_tta": True}
    card = export_model(
        tmp_path,
        framework="keras",
        model=model,
        dataset=dataset,
        config={"model": "keras_resnet18"},
        info=INFO,
        metrics=METRICS,
        final_model=final_model,
    )
    assert card["check"]["passed"] and card["preprocessing_inside"]["flip_tta"] is True
    expected = export_keras.reference(model, dataset.x_test, dataset.mean, dataset.std, flip_tta=True)
    plain = export_keras.reference(model, dataset.x_test, dataset.mean, dataset.std)
    assert np.abs(expected - plain).max() > 10 * TOLERANCE
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert_same_predictions(session.run(None, {session.get_inputs()[0].name: nhwc(dataset.x_test)})[0], expected)
    assert_same_predictions(
        export_keras.run_savedmodel(tmp_path / "model_savedmodel", nhwc(dataset.x_test), 8), expected
    )


def test_every_framework_has_an_exporter_and_an_unknown_one_is_one_line(dataset, tmp_path):
    from serving.export import EXPORTERS
    from trainables.framework import FRAMEWORKS

    assert set(EXPORTERS) == set(FRAMEWORKS)  # adding a Framework without its exporter fails here
    with pytest.raises(ExportError, match=r"^no exporter for framework 'jax' \(have: torch, keras\)$"):
        export_model(tmp_path, framework="jax", model=None, dataset=dataset, config={}, info=INFO, metrics=METRICS)


def test_export_only_rebuilds_a_model_trained_at_another_image_size(tmp_path):
    """--export-only of a LeNet5 report trained at --image-size 40 (its first linear layer depends on the size):
    rebuilt as trained and exported; a model file that does not fit its config is one line, not a traceback."""
    from serving.export import export_existing

    data = write_image_folder(tmp_path / "data")
    ds = load_dataset(data, image_size=40, cache_dir=tmp_path / "cache")
    storage, report = tmp_path / "experiments", tmp_path / "results" / "big"
    (storage / "big").mkdir(parents=True)
    info = {**INFO, "data": {**INFO["data"], "path": str(data), "image_size": 40}, "framework": "torch"}
    (storage / "big" / "experiment.json").write_text(json.dumps(info))
    report.mkdir(parents=True)
    torch.manual_seed(0)
    model = build_model("lenet5", len(ds.classes), dropout=0.1, input_size=40)
    torch.save(model.state_dict(), report / "model.pth")
    config = {"model": "lenet5", "dropout": 0.1, "input": {"input_size": 40}, "classes": ds.classes}
    (report / "best_config.json").write_text(json.dumps(config))
    (report / "metrics.json").write_text(json.dumps(METRICS))
    card = export_existing(str(report), storage_path=str(storage), cache_dir=str(tmp_path / "cache"))
    assert card["input"]["size"] == 40 and card["check"]["passed"]
    torch.save(build_model("lenet5", len(ds.classes)).state_dict(), report / "model.pth")  # a 32-pixel model
    with pytest.raises(ExportError, match="cannot rebuild the model of .*size mismatch"):
        export_existing(str(report), storage_path=str(storage), cache_dir=str(tmp_path / "cache"))


def test_the_export_hands_its_card_to_the_report_which_alone_writes_report_md(dataset, tmp_path):
    """One writer of the report folder (analysis/): export_model leaves report.md alone; add_export_section adds the
    "Using the exported model" section from the card, once, however often it is called."""
    from analysis.report_files import add_export_section

    out = tmp_path / "tiny"
    out.mkdir()
    (out / "report.md").write_text("# Report\n")
    _, card = export_lenet(dataset, out)
    assert (out / "report.md").read_text() == "# Report\n"
    add_export_section(out, card)
    add_export_section(out, card)
    text = (out / "report.md").read_text()
    assert text.startswith("# Report\n") and text.count("## Using the exported model") == 1
    assert "predict.py --model" in text and "top-1 agreement 100%" in text
