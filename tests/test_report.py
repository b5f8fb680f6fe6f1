"""report.py: metrics equal scikit-learn's, experiment resolution, an end-to-end report, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_run import one_line_error
from PIL import Image
from sample_data import ROOT
from shared_runs import finished_search
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score

from analysis.classification_metrics import PER_CLASS_KEYS, classification_metrics, metrics_csv, metrics_text
from analysis.trials import ReportError, resolve_experiment

OUTPUTS = ["metrics.json", "metrics.md", "metrics.csv", "metrics.txt", "best_config.json", "model.pth", "report.md",
           "report.html", "learning_curves.png", "best_trial.png", "confusion_matrix.png", "hyperparameters.png",
           "param_importance.png", "samples.png", "model_card.json", "model.onnx"]  # fmt: skip


@pytest.mark.parametrize("n_classes", [3, 10])
def test_metrics_equal_sklearn(n_classes):
    rng = np.random.default_rng(n_classes)
    y = rng.integers(0, n_classes, 500)
    scores = rng.normal(size=(500, n_classes))
    scores[np.arange(500), y] += rng.uniform(0, 2, 500)  # better than chance, not perfect
    pred = scores.argmax(1)
    classes = [f"c{i}" for i in range(n_classes)]
    m = classification_metrics(y, scores, classes)

    cm = confusion_matrix(y, pred)
    p, r, f1, support = precision_recall_fscore_support(y, pred, zero_division=0)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    expected_top5 = top_k_accuracy_score(y, scores, k=5) if n_classes > 5 else 1.0
    assert m["top5_accuracy"] == pytest.approx(expected_top5)
    for i, c in enumerate(classes):
        v = m["per_class"][c]
        assert set(v) == set(PER_CLASS_KEYS)
        assert v["tp"] == cm[i, i] and v["fn"] == cm[i].sum() - cm[i, i] and v["fp"] == cm[:, i].sum() - cm[i, i]
        assert v["tp"] + v["fp"] + v["fn"] + v["tn"] == 500
        assert v["precision"] == pytest.approx(p[i]) and v["recall"] == pytest.approx(r[i])
        assert v["f1"] == pytest.approx(f1[i]) and v["support"] == support[i]
        # specificity: the recall of "not c" in the one-vs-rest binary problem
        _, r_neg, _, _ = precision_recall_fscore_support(y == i, pred == i, labels=[False], zero_division=0)
        assert v["specificity"] == pytest.approx(r_neg[0])
    for avg in ("macro", "weighted"):
        p_a, r_a, f_a, _ = precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        assert m[avg]["precision"] == pytest.approx(p_a) and m[avg]["recall"] == pytest.approx(r_a)
        assert m[avg]["f1"] == pytest.approx(f_a)
    csv_rows = metrics_csv(m).strip().splitlines()
    assert len(csv_rows) == 1 + n_classes + 2  # header, classes, macro, weighted
    assert "TP: " in metrics_text(m) and "specificity: " in metrics_text(m)
    # per-class (TP+TN)/all is labelled as one-vs-rest, never a bare "accuracy:" under the overall one
    lines = metrics_text(m).splitlines()
    assert lines[0].startswith("accuracy (overall): ")
    assert not [ln for ln in lines[1:] if ln.startswith("accuracy:")]
    assert sum(ln.startswith("one-vs-rest accuracy") for ln in lines) == n_classes


def make_fake_experiment(storage, name, started_at):
    d = storage / name
    d.mkdir(parents=True)
    (d / "experiment.json").write_text(json.dumps({"started_at": started_at}))
    return d


def test_resolve_latest_name_and_path(tmp_path):
    make_fake_experiment(tmp_path, "b-old", 100)
    make_fake_experiment(tmp_path, "a-new", 200)
    assert resolve_experiment("latest", str(tmp_path)).endswith("/a-new")  # by start time, not by name
    assert resolve_experiment("b-old", str(tmp_path)).endswith("/b-old")
    assert resolve_experiment(str(tmp_path / "b-old"), "elsewhere").endswith("/b-old")
    with pytest.raises(ReportError, match="'nope'.*a-new, b-old"):
        resolve_experiment("nope", str(tmp_path))
    (tmp_path / "plain").mkdir()
    with pytest.raises(ReportError, match="not an experiment"):
        resolve_experiment(str(tmp_path / "plain"), str(tmp_path))
    with pytest.raises(ReportError, match="no experiments under"):
        resolve_experiment("latest", str(tmp_path / "plain"))


# ---------------------------------------------------------------------------------------------------------------
# end to end on a tiny experiment made with run_search.py --smoke-test


def run_report(*args, timeout=300):
    t = time.time()
    proc = subprocess.run([sys.executable, str(ROOT / "report.py"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)  # fmt: skip
    proc.seconds = time.time() - t
    return proc


@pytest.fixture(scope="session")
def smoke_experiment(image_folder, tmp_path_factory, torch_home):
    """A finished LeNet5 smoke search of 3 trials named "tiny"; its --storage-path. Read only."""
    return finished_search(tmp_path_factory, "tiny", image_folder, torch_home, "--model", "lenet5",
                           "--num-samples", 3).storage  # fmt: skip


def check_outputs(out, weights="model.pth"):
    for name in [n if n != "model.pth" else weights for n in OUTPUTS]:
        assert (out / name).exists(), name
        if name.endswith(".png"):
            with Image.open(out / name) as im:
                im.verify()
                assert im.size[0] > 300 and im.size[1] > 200
    m = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "top5_accuracy", "macro", "weighted", "per_class", "seeds", "mean", "std"):
        assert key in m, key
    assert set(m["per_class"]) == {"cat", "dog", "ship"}
    assert all(set(v) == set(PER_CLASS_KEYS) for v in m["per_class"].values())
    assert sum(v["support"] for v in m["per_class"].values()) == 18  # the whole generated test split
    return m


@pytest.mark.slow
def test_report_end_to_end_with_seeds(smoke_experiment, tmp_path):
    import torch

    from trainables.models import build_model

    proc = run_report("--experiment", "latest", "--storage-path", smoke_experiment, "--out", tmp_path,
                      "--seeds", 2, "--epochs", 2, "--no-refit", "--no-ema", "--no-flip-tta")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "tiny"
    m = check_outputs(out)
    assert len(m["seeds"]) == 2 and [s["seed"] for s in m["seeds"]] == [0, 1]
    assert m["mean"] == pytest.approx(np.mean([s["accuracy"] for s in m["seeds"]]))
    assert m["retrained"] is True and 1 <= m["seeds"][0]["kept_epoch"] <= 2
    assert f"± {m['std']:.4f} over 2 seeds (saved model: seed {m['saved_seed']}" in proc.stdout
    assert "test accuracy" in proc.stdout
    # progress in a pipe (as in a log file): a line per retrain epoch and per step, no tqdm carriage returns
    assert "\r" not in proc.stderr and "retrain seed 1: 2/2 epoch, val_loss=" in proc.stderr
    assert "] drawing the plots" in proc.stderr and "] hyperparameter importance" in proc.stderr
    report = (out / "report.md").read_text()
    assert "0.534" in report and "stopped early" in report  # the original's figures beside ours
    assert "18 test images (the whole test split)" in report
    # --seeds 2: mean ± std headline, a row per seed, which seed's model was saved and why
    assert f"test accuracy **{m['mean']:.4f} ± {m['std']:.4f}** (mean ± sample std over 2 seeds)" in report
    seed_rows = [ln for ln in report.splitlines() if ln.startswith(("| 0 |", "| 1 |"))]
    assert len(seed_rows) == 2 and sum(ln.rstrip().endswith("| yes |") for ln in seed_rows) == 1
    saved = min(m["seeds"], key=lambda s: s["kept_value"])["seed"]
    assert m["saved_seed"] == saved and f"Saved model: seed {saved}, the lowest val_loss at its kept epoch" in report
    assert "evaluated once)" in report and "(evaluated once)" not in report
    # only accuracy beside the original: its other figures' definitions are not ours (and the numbers show it)
    assert "| | test accuracy |" in report and "0.559" in report and "0.948" in report
    assert "| original | 0.534 |" in report and "specificity |" not in report.split("## Beside")[1].split("\n\n")[1]
    text = (out / "metrics.txt").read_text()
    assert "one-vs-rest accuracy" in text and "accuracy over 2 seeds" in text and f"seed {saved}" in text
    config = json.loads((out / "best_config.json").read_text())
    model = build_model("lenet5", num_classes=3, **config)
    model.load_state_dict(torch.load(out / "model.pth", weights_only=True))  # loadable as the note says
    assert not list(tmp_path.glob(".tiny.*"))  # no temporary folder left behind


@pytest.mark.slow
def test_report_ships_refit_ema_and_flip_tta_and_predict_agrees_with_metrics_json(smoke_experiment, tmp_path):
    """Every option on (the ensemble too), 2 seeds: the table (plain, + each option, the shipped model) over the seeds; the saved model
    is the shipped one (headline, metrics.json, model card, predict.py); the exported files, run by predict.py on
    the real test images, give metrics.json's confusion matrix; retrain_history.csv marks the refit's rows."""
    import csv

    proc = run_report(
        "--experiment",
        "tiny",
        "--storage-path",
        smoke_experiment,
        "--out",
        tmp_path,
        "--seeds",
        2,
        "--epochs",
        2,
        "--refit",
        "--ema",
        "--ema-decay",
        0.9,
        "--flip-tta",
        "--ensemble",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "tiny"
    m = check_outputs(out)
    fm = m["final_model"]
    assert fm["refit"]["epochs"] == 2 and fm["refit"]["images"] == 60 and fm["flip_tta"] is True
    assert fm["weight_averaging"] == {"method": "EMA", "decay": 0.9, "batchnorm": "recomputed"}
    table = {row["key"]: row for row in fm["table"]}
    assert list(table) == ["plain", "refit", "ema", "flip_tta", "ensemble", "shipped"]
    assert fm["ensemble"] == {"members": ["plain", "refit"], "of": "class probabilities"}
    assert all(len(row["accuracy"]) == 2 for row in table.values())
    assert table["shipped"]["accuracy"] == [s["accuracy"] for s in m["seeds"]] and m["mean"] == table["shipped"]["mean"]
    assert m["saved_seed"] == 0 and "first seed" in m["saved_seed_rule"] and m["accuracy"] == m["seeds"][0]["accuracy"]
    assert f"saved model: seed 0, {m['accuracy']:.4f}" in proc.stdout and "flip test-time augmentation" in proc.stdout
    report = (out / "report.md").read_text()
    assert "## The shipped model: what each option bought" in report and "no epoch of the refit was chosen" in report
    rows = [ln for ln in report.splitlines() if ln.startswith(("| plain retrain", "| + ", "| **all of them"))]
    assert len(rows) == 6 and rows[-1].startswith("| **all of them: the shipped model** (saved)")
    assert "- **ensemble**: the class probabilities of the plain model and of the refit" in report
    assert "model = ProbabilityMean([member() for _ in range(2)])" in report
    assert f"**{m['mean']:.4f} ± {m['std']:.4f}**" in rows[-1]
    with open(out / "retrain_history.csv") as f:
        history = list(csv.DictReader(f))
    assert {(h["seed"], h["trained_on"]) for h in history} == {(s, t) for s in "01" for t in ("train", "train+val")}
    refit_rows = [h for h in history if h["trained_on"] == "train+val"]
    assert all(h["val_loss"] == h["val_acc"] == "" for h in refit_rows)
    assert [h["kept"] for h in refit_rows if h["seed"] == "0"] == ["0", "1"]  # its last epoch, fixed beforehand
    config = json.loads((out / "best_config.json").read_text())
    assert config["final_model"]["flip_tta"] is True and "ema_decay" not in config
    card = json.loads((out / "model_card.json").read_text())
    assert card["final_model"]["flip_tta"] and card["final_model"]["refit"]["epochs"] == 2
    assert card["test_metrics"]["accuracy"] == m["accuracy"]
    # predict.py on the real test images, through each exported file: metrics.json's confusion matrix exactly
    classes = json.loads((out / "best_config.json").read_text())["classes"]
    for backend in ("onnx", "torch"):
        csv_path = tmp_path / f"{backend}.csv"
        test_dir = smoke_experiment_test_dir(smoke_experiment)
        proc = subprocess.run(
            [
                sys.executable,
                str(ROOT / "predict.py"),
                "--model",
                str(out),
                str(test_dir),
                "--csv",
                str(csv_path),
                "--backend",
                backend,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "refit on train + validation" in proc.stderr.splitlines()[0]
        with open(csv_path) as f:
            predicted = [
                (classes.index(Path(r["path"]).parent.name), classes.index(r["class_1"])) for r in csv.DictReader(f)
            ]
        confusion = np.zeros((len(classes), len(classes)), int)
        for true, pred in predicted:
            confusion[true, pred] += 1
        assert confusion.tolist() == m["confusion_matrix"], backend


def smoke_experiment_test_dir(storage) -> Path:
    """The test split of the folder the smoke experiment searched (its experiment.json names it)."""
    info = json.loads((storage / "tiny" / "experiment.json").read_text())
    return Path(info["data"]["path"]) / "test"


@pytest.mark.slow
def test_report_no_retrain_uses_the_checkpoint(smoke_experiment, tmp_path):
    proc = run_report("--experiment", "tiny", "--storage-path", smoke_experiment, "--out", tmp_path, "--no-retrain")
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = check_outputs(tmp_path / "tiny")
    assert m["retrained"] is False and len(m["seeds"]) == 1
    assert "retrain seed" not in proc.stderr
    assert "exported model.onnx: top-1 agreement 100%" in proc.stderr
    assert "## Using the exported model" in (tmp_path / "tiny" / "report.md").read_text()

    # --export-only: the model of an existing report folder (e.g. one written before exports existed)
    exported = ["model_card.json", "model.onnx", "model.pt2"]
    for name in exported:
        (tmp_path / "tiny" / name).unlink()
    proc = run_report("--export-only", tmp_path / "tiny", "--storage-path", smoke_experiment)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all((tmp_path / "tiny" / name).exists() for name in exported)
    card = json.loads((tmp_path / "tiny" / "model_card.json").read_text())
    assert card["check"]["passed"] and card["test_metrics"]["accuracy"] == m["accuracy"]
    assert card["data"]["num_test"] == 18 and card["files"]["onnx"]["check"]["images"] == 18
    assert (tmp_path / "tiny" / "report.md").read_text().count("## Using the exported model") == 1
    assert "not a report folder" in one_line_error(run_report("--export-only", tmp_path))


def test_interrupted_report_leaves_no_output(smoke_experiment, tmp_path, monkeypatch):
    import report
    from analysis import plots

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "prediction_samples", interrupt)  # Ctrl-C half way through writing
    out = tmp_path / "out"
    code = report.main(["--experiment", str(smoke_experiment / "tiny"), "--out", str(out), "--no-retrain"])
    assert code == 130
    assert list(out.iterdir()) == []  # neither a half-written report nor its temporary folder


@pytest.mark.slow
def test_bad_inputs(smoke_experiment, tmp_path):
    assert "'nope'" in one_line_error(run_report("--experiment", "nope", "--storage-path", smoke_experiment))
    assert "no experiments under" in one_line_error(run_report("--storage-path", tmp_path / "empty"))
    (tmp_path / "plain").mkdir()
    assert "not an experiment" in one_line_error(run_report("--experiment", tmp_path / "plain"))
    # an experiment whose trials never reported
    unfinished = tmp_path / "unfinished"
    shutil.copytree(smoke_experiment / "tiny", unfinished)
    for f in unfinished.glob("trial_*/result.json"):
        f.write_text("")
    for f in unfinished.glob("trial_*/progress.csv"):
        f.unlink()
    assert "no trial" in one_line_error(run_report("--experiment", unfinished))


def test_samples_only(image_folder, tmp_path):
    import report

    assert report.main(["--samples-only", "--data-dir", str(image_folder), "--out", str(tmp_path)]) == 0
    (png,) = tmp_path.glob("samples_*.png")
    with Image.open(png) as im:
        assert im.size[1] > 200


def test_importance_finds_the_hyperparameter_that_matters():
    import pandas as pd

    from analysis.importance import importances

    rng = np.random.default_rng(0)
    lr = 10 ** rng.uniform(-4, -2, 30)
    batch = rng.choice([64, 128, 256], 30)
    loss = (np.log10(lr) + 3) ** 2 + rng.normal(0, 0.01, 30)  # only lr matters
    df = pd.DataFrame({"val_loss": loss, "config/lr": lr, "config/batch_size": batch})
    space = {"lr": {"type": "float", "lower": 1e-4, "upper": 1e-2, "log": True},
             "batch_size": {"type": "choice", "values": [64, 128, 256]}}  # fmt: skip
    imp, note = importances(df, space, "val_loss", "min", "at epoch 1")
    assert imp["lr"] > 0.8 > imp["batch_size"]
    assert "30 trials" in note
    none, why = importances(df.head(2), space, "val_loss", "min", "at epoch 1")
    assert none is None and "at least 3" in why


@pytest.mark.slow
def test_report_of_a_keras_experiment(keras_smoke, tmp_path):
    """The Keras model goes through the same analysis code: retrain, metrics, plots, model.keras."""
    storage = keras_smoke.exp.parent
    proc = run_report("--experiment", "latest", "--storage-path", storage, "--out", tmp_path / "out", "--epochs", 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out" / "keras"
    assert (out / "model.keras").exists() and not (out / "model.pth").exists()
    check_outputs(out, weights="model.keras")
    assert "keras.saving.load_model" in (out / "report.md").read_text()
    card = json.loads((out / "model_card.json").read_text())  # the registry's Keras ResNet-18, exported and checked
    assert set(card["files"]) == {"keras", "savedmodel", "onnx"} and card["check"]["passed"]
    assert (out / "model_savedmodel" / "saved_model.pb").exists() and (out / "model_inference.keras").exists()


def test_pretrained_model_is_saved_with_its_imagenet_input(tiny_arrays, tmp_path, monkeypatch):
    import torch

    from analysis.retrain import local_framework
    from trainables.models import build_model
    from trainables.torch_loop import save_checkpoint

    fw = local_framework("torch", "cpu")
    model = build_model("resnet18_pretrained", num_classes=3, resolution=48)  # the tests' seeded TORCH_HOME
    spec = fw.input_spec(model, tiny_arrays)
    assert spec["input_size"] == 48 and spec["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert fw.input_spec(build_model("lenet5", 3), tiny_arrays)["mean"] == pytest.approx(list(tiny_arrays["mean"]))
    # --no-retrain needs no ImageNet file: the checkpoint holds every tensor
    save_checkpoint({"model": model.state_dict(), "epoch": 2}, str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    loaded, epoch = fw.from_checkpoint(str(tmp_path), {"model": "resnet18_pretrained", "resolution": 48}, 3)
    assert epoch == 2 and torch.equal(loaded.fc.weight, model.fc.weight)
    assert "torchvision.models.resnet18(num_classes=3)" in fw.load_note({"model": "resnet18_pretrained"}, 3)


def test_report_evaluates_the_whole_test_set_of_a_subset_search(image_folder):
    """An experiment searched on --subset 9 is still reported on all 18 test images, and report.md says how many."""
    from types import SimpleNamespace

    from analysis.report_data import load_data
    from analysis.report_markdown import test_set_line

    exp = SimpleNamespace(info={"data": {"path": str(image_folder), "image_size": 32, "subset": 9}, "split_seed": 0},
                          path="exp")  # fmt: skip
    args = SimpleNamespace(data_dir=None, cache_dir=None, test_subset=None)
    ds = load_data(exp, args)
    assert len(ds.y_train) == 9 and len(ds.y_test) == 18
    assert test_set_line(ds) == "18 test images (the whole test split), 32x32."
    cut = load_data(exp, SimpleNamespace(data_dir=None, cache_dir=None, test_subset=6))
    assert test_set_line(cut) == "6 of the 18 test images (a stratified subset, `--test-subset 6`), 32x32."


# ---------------------------------------------------------------------------------------------------------------
# report.html in a real browser (Debian's chromium; .ci/run installs it)


@pytest.mark.slow
def test_report_html_in_headless_chromium(smoke_experiment, tmp_path):
    import re

    import browser

    browser.require()
    proc = run_report("--experiment", "tiny", "--storage-path", smoke_experiment, "--out", tmp_path, "--no-retrain")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "tiny"
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    # everything report.md holds: its headings, its images (embedded), its numbers and code
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert len(images) == 6 and page.count('<img src="data:image/png;base64,') == len(images)
    for heading in re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", md, flags=re.S), re.M):  # not code comments
        assert f">{heading}</h" in page, heading
    m = json.loads((out / "metrics.json").read_text())
    assert f"{m['accuracy']:.4f}" in page and "build_model(" in page and '"lr":' in page.replace("&quot;", '"')
    assert "http://" not in page and "https://" not in page  # nothing fetched: opens offline
    for width, height in ((390, 844), (1280, 800)):  # a phone, a laptop
        found = browser.measure(out / "report.html", width, height, tmp_path)
        assert found["images"] == len(images) and found["decoded"] == len(images), found["undecoded"]
        assert found["scrollWidth"] <= found["clientWidth"] == width, found
        assert found["overflowing"] == [] and found["external"] == [], found
        assert all(0 < w <= width for w in found["imgWidths"]), found["imgWidths"]


def test_the_browser_probe_sees_overflow_and_broken_images(tmp_path):
    """The probe above can fail: a fixed-width block and an undecodable image are caught."""
    import browser

    browser.require()
    page = tmp_path / "bad.html"
    page.write_text('<!doctype html><html><body><div style="width:700px">wide</div>'
                    '<img alt="broken" src="data:image/png;base64,AAAA"></body></html>')  # fmt: skip
    found = browser.measure(page, 390, 600, tmp_path)
    assert found["scrollWidth"] > 390 and found["overflowing"] and found["undecoded"] == ["broken"]


def test_browser_tests_skip_without_chromium_unless_ci_requires_them(tmp_path, monkeypatch):
    """Issue 23.10: on a machine with only what README.md installs, the two browser tests failed with
    FileNotFoundError. They skip with the reason there; .ci/run (which installs Chromium) makes a skip a failure."""
    import browser

    monkeypatch.setattr(browser, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.delenv(browser.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-chromium .*apt-get install chromium"):
        browser.require()
    monkeypatch.setenv(browser.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="CIFAR_TUNE_REQUIRE_BROWSER=1 requires the browser tests"):
        browser.require()
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"export {browser.REQUIRE_ENV}=1" in ci and ci.index("apt-get install -y -qq chromium") < ci.index("pytest")


# ---------------------------------------------------------------------------------------------------------------
# the plots say what they show (issue 23.7): drawn for real, the figure read back before it is saved


@pytest.fixture()
def drawn(monkeypatch):
    """The figures the plot functions draw, kept open instead of saved."""
    from analysis import plots

    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, h_pad=None: figs.append(fig) or path)
    yield figs
    import matplotlib.pyplot as plt

    for fig in figs:
        plt.close(fig)


def test_hyperparameter_plot_draws_the_searched_keys_and_the_best_trial_once(drawn, tmp_path):
    import pandas as pd

    from analysis import plots

    space = {"optimizer": {"type": "constant", "value": "sgd"}, "flip": {"type": "choice", "values": [True, False]},
             "lr": {"type": "float", "lower": 1e-3, "upper": 1e-1, "log": True},
             "depth": {"type": "int", "lower": 1, "upper": 4, "log": False},
             "label_smoothing": {"type": "constant", "value": 0.0}}  # fmt: skip
    finals = pd.DataFrame({"trial_id": ["a", "b", "c", "d"], "val_loss": [0.9, 0.7, 0.8, 1.0],
                           "config/optimizer": ["sgd"] * 4, "config/flip": [True, False, True, True],
                           "config/lr": [1e-3, 1e-2, 3e-2, 1e-1], "config/depth": [1, 2, 3, 4],
                           "config/label_smoothing": [0.0] * 4})  # fmt: skip
    plots.hyperparameters(finals, space, "val_loss", "b", 4, tmp_path / "h.png")
    axes = [ax for ax in drawn[0].axes if ax.axison]
    assert [ax.get_xlabel() for ax in axes] == ["flip", "lr", "depth"]  # no panel for a constant
    for ax in axes:
        others, best = (c.get_offsets() for c in ax.collections)
        assert len(others) == 3 and len(best) == 1 and best[0][1] == 0.7  # the best trial: its star alone
    flip, lr, depth = axes
    assert [t.get_text() for t in flip.get_xticklabels()] == ["True", "False"] and flip.get_xlim() == (-0.5, 1.5)
    assert all(float(t).is_integer() for t in depth.get_xticks())
    drawn[0].canvas.draw()  # tick labels exist once drawn: on the log axis plain numbers, no overlapping minor labels
    assert {t.get_text() for t in lr.get_xticklabels(minor=True)} <= {""}
    assert {t.get_text() for t in lr.get_xticklabels() if t.get_text()} >= {"0.001", "0.01", "0.1"}


def test_learning_curves_have_whole_epochs_and_show_a_one_epoch_trial(drawn, tmp_path):
    import pandas as pd

    from analysis import plots

    def curve(losses):
        return pd.DataFrame({"epoch": range(1, len(losses) + 1), "val_loss": losses})

    curves = {"best": curve([2.0, 1.5, 1.2]), "one": curve([2.2]), "two": curve([2.1, 1.9])}
    plots.learning_curves(curves, "best", "val_loss", [1], tmp_path / "l.png")
    ax = drawn[0].axes[0]
    assert all(float(t).is_integer() for t in ax.get_xticks())
    (ends,) = ax.collections  # each other trial's last epoch, marked: the one-epoch trial is a visible point
    assert sorted(map(tuple, ends.get_offsets().tolist())) == [(1.0, 2.2), (2.0, 1.9)]
    rung = next(line for line in ax.get_lines() if line.get_label() == "ASHA rung")
    assert rung.get_zorder() < ends.get_zorder()  # drawn behind the trials, not over them


def test_threads_follow_the_cores_busy_now_not_the_load_average(monkeypatch):
    """A machine that was busy a minute ago (the README's search) but is idle now gets every core for the retrain."""
    import os

    from analysis import retrain

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 1.9, 1.2))  # the search that just ended
    assert retrain.default_threads(busy=0.0) == 2 and retrain.default_threads(busy=1.0) == 1
    assert retrain.default_threads(busy=7.0) == 1  # never fewer than one
    assert retrain.busy_cores(samples=2, interval=0.01) >= 0.0
