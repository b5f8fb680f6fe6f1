"""The report folder's files: metrics.json/.md/.csv/.txt, best_config.json, retrain_history.csv, the model, the plots,
report.md and report.html; and the folder itself, which appears only when complete (`replacing`)."""

from __future__ import annotations

import csv
import json
import math
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from trainables import metric_names as M

from . import importance, plots
from .classification_metrics import metrics_csv, metrics_markdown, metrics_text
from .evaluation import saved_model_metrics
from .progress import step
from .report_html import report_html
from .report_markdown import report_markdown
from .shell import command, path_arg
from .trials import asha_rungs


@contextmanager
def replacing(out: Path):
    """A temporary sibling of `out` to write into; it replaces `out` when the block ends without an error, and is
    removed otherwise. An interrupted or failed report thus leaves the previous one, never half a new one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:  # KeyboardInterrupt too
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_report(exp, args, dataset, fw, ev, out: Path) -> int:
    """Every file of the report on `ev` (evaluation.evaluate_runs) into the folder `out`; returns the index of the
    saved seed (its shipped model is `ev.shipped_model(index)`)."""
    config = exp.best_config
    m, saved = saved_model_metrics(ev, config, exp.metric, exp.mode)
    m["precision"] = ev.precision
    run, pred, model = ev.plain[saved], ev.preds[ev.shipped.key][saved], ev.shipped_model(saved)
    write_metrics(m, out)
    write_history(ev, [s["seed"] for s in m["seeds"]], out / "retrain_history.csv")
    best_config = {
        **config,
        "seed": m["saved_seed"],
        M.PRECISION: ev.precision["used"],
        "input": fw.input_spec(model, dataset.search_arrays()),
        "classes": dataset.classes,
        "final_model": {k: v for k, v in m["final_model"].items() if k != "table"},
    }
    (out / "best_config.json").write_text(json.dumps(best_config, indent=2, default=str))
    weights = fw.save_model(model, out)

    step("drawing the plots")
    note, rung, rung_trials = draw_plots(exp, dataset, run, m, pred, out)
    (out / "report.md").write_text(report_markdown(exp, m, weights, fw, config, dataset, note, rung, rung_trials))
    (out / "report.html").write_text(report_html((out / "report.md").read_text(), out))  # same content, one file
    return saved


HISTORY_KEYS = (
    M.EPOCH,
    M.TRAIN_LOSS,
    M.TRAIN_ACC,
    M.VAL_LOSS,
    M.VAL_ACC,
    M.LR,
    M.IMAGES_PER_S,
    M.EPOCH_SECONDS,
    M.PRECISION,
    M.DIVERGED,
)


def write_history(ev, seeds: list[int], path: Path) -> None:
    """retrain_history.csv: one row per seed, training and epoch of the report's own trainings, under the trainables'
    metric names, and which epoch each kept (the shipped model's curves without the experiment folder).
    `trained_on` says which data: "train" (validated on the validation split) or "train+val" (a refit: nothing
    left to validate on, so its val_loss and val_acc cells are empty, never a number)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["seed", "trained_on", *HISTORY_KEYS, "kept"])
        for seed, plain, refit in zip(seeds, ev.plain, ev.refits, strict=True):
            for run in (plain, refit) if refit is not None else (plain,):
                for h in run.history:
                    cells = [
                        "" if isinstance(v, float) and math.isnan(v) else v
                        for v in (h.get(k, "") for k in HISTORY_KEYS)
                    ]
                    w.writerow([seed, run.trained_on, *cells, int(h.get(M.EPOCH) == run.best_epoch)])


def write_metrics(m: dict, out: Path) -> None:
    (out / "metrics.json").write_text(json.dumps(m, indent=2))
    (out / "metrics.md").write_text(metrics_markdown(m))
    (out / "metrics.csv").write_text(metrics_csv(m))
    (out / "metrics.txt").write_text(metrics_text(m))


def draw_plots(exp, dataset, run, m: dict, pred: np.ndarray, out: Path) -> tuple[str, int, int]:
    """The report's PNGs; returns what report.md says about importance: its note, the epoch the trials were
    compared at, and how many trials reached it."""
    search_args = exp.info["args"]
    rungs = asha_rungs(search_args["grace_period"], search_args["reduction_factor"], search_args["max_epochs"])
    if search_args.get("scheduler", "asha") != "asha":
        rungs = []
    plots.learning_curves(exp.curves, exp.best_id, exp.metric, rungs, out / "learning_curves.png")
    plots.training_history(run.history, run.best_epoch, out / "best_trial.png")
    plots.confusion(np.array(m["confusion_matrix"]), dataset.classes, out / "confusion_matrix.png")
    # Importance and the hyperparameter plot compare trials at one epoch that enough of them reached, never final
    # values taken at different epochs.
    rung = exp.comparison_epoch()
    at_rung = exp.results_at(rung)
    space = exp.info["search_space"]
    plots.hyperparameters(at_rung, space, exp.metric, exp.best_id, rung, out / "hyperparameters.png")
    imp, note = importance.importances(at_rung, space, exp.metric, exp.mode, f"best by epoch {rung}")
    step(f"hyperparameter importance (Optuna fANOVA, at epoch {rung})")
    plots.param_importance(imp, note, out / "param_importance.png")
    plots.prediction_samples(dataset.x_test, dataset.y_test, pred, dataset.classes, out / "samples.png")
    return note, rung, len(at_rung)


def add_export_section(out_dir: Path, card: dict) -> None:
    """report.md's (and report.html's) "Using the exported model", from the export's model card; a re-export
    replaces it. The export (serving/export.py) hands over its card; only analysis/ writes the report's files."""
    report = out_dir / "report.md"
    if not report.exists():
        return
    text = report.read_text().split("\n## Using the exported model\n")[0].rstrip("\n")  # re-export replaces it
    files = ", ".join(f"`{f['path']}`" for f in card["files"].values() if f.get("path"))
    checks = [f["check"] for f in card["files"].values() if "check" in f]
    side, n = card["input"]["size"], len(card["classes"])
    lines = [
        "",
        "## Using the exported model",
        f"{files} take uint8 RGB images, NHWC (N, {side}, {side}, 3), and return the probabilities of the {n} classes; "
        + (
            "normalisation and resize are inside"
            if card["preprocessing_inside"]["resize_to"]
            else "normalisation is inside"
        )
        + (
            ", and the flip test-time augmentation (the mean of each image's and its mirror's probabilities). "
            if card["preprocessing_inside"]["flip_tta"]
            else ". "
        )
        + f"Each was checked against {card['framework']} on {checks[0]['images']} test images: top-1 agreement 100%, "
        f"max |Δp| {max(c['max_abs_diff'] for c in checks):.1e}. Classes, input and versions: `model_card.json`.",
        "```",
        command("predict.py", "--model", path_arg(out_dir), "IMAGE_OR_FOLDER...", "[--csv predictions.csv]"),
        "```",
    ]
    report.write_text(text + "\n" + "\n".join(lines) + "\n")
    if (out_dir / "report.html").exists():  # the same content in one file: written again with the new section
        (out_dir / "report.html").write_text(report_html(report.read_text(), out_dir))
