"""The report's figures (matplotlib, Agg, PNG): each function draws one file and returns its path."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed (CI, clusters)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from trainables import metric_names as M  # noqa: E402

DPI = 110


def _save(fig, path: Path, h_pad: float | None = None) -> Path:
    fig.tight_layout(h_pad=h_pad)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def learning_curves(curves: dict[str, pd.DataFrame], best_id: str, metric: str, rungs: list[int], path: Path):
    """Every trial's validation metric per epoch, ASHA's rungs as vertical lines (behind the trials), the best trial
    highlighted, and each trial's last epoch marked: a trial stopped after one epoch is a point, not a line, and
    would vanish under the first rung without its marker."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, r in enumerate(rungs):
        ax.axvline(r, color="tab:blue", ls=":", lw=1, zorder=0, label="ASHA rung" if i == 0 else None)
    for tid, df in curves.items():
        if tid != best_id:
            ax.plot(df[M.EPOCH], df[metric], color="tab:gray", alpha=0.5, lw=1, marker=".", ms=4)
    ends = [df.iloc[-1] for tid, df in curves.items() if tid != best_id]
    if ends:
        ax.scatter(
            [e[M.EPOCH] for e in ends],
            [e[metric] for e in ends],
            s=22,
            facecolors="none",
            edgecolors="tab:gray",
            lw=1,
            zorder=3,
            label=f"other trials' last epoch ({len(ends)})",
        )
    best = curves[best_id]
    ax.plot(
        best[M.EPOCH], best[metric], color="tab:red", lw=2.5, marker="o", ms=5, label=f"best trial {best_id}", zorder=4
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch of every trial")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def training_history(history: list[dict], best_epoch: int, path: Path):
    """Train/val loss and accuracy per epoch of the retrain, the kept (lowest val_loss) epoch marked."""
    df = pd.DataFrame(history)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((a1, "loss", "loss"), (a2, "acc", "accuracy")):
        ax.plot(df[M.EPOCH], df[f"train_{key}"], marker="o", label=f"train {label}")
        ax.plot(df[M.EPOCH], df[f"val_{key}"], marker="o", label=f"validation {label}")
        ax.axvline(best_epoch, color="tab:green", ls="--", lw=1, label=f"kept weights (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("retrain of the best config")
    return _save(fig, path)


def confusion(cm: np.ndarray, classes: list[str], path: Path):
    """Counts and row-normalised (recall per true class) side by side."""
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(5.0, 0.55 * len(classes) + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, mat, title, fmt in ((axes[0], cm, "counts", "d"), (axes[1], norm, "row-normalised", ".2f")):
        im = ax.imshow(mat, cmap="Blues")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"confusion matrix ({title})")
        if len(classes) <= 20:
            thresh = mat.max() / 2
            for i in range(len(classes)):
                for j in range(len(classes)):
                    ax.text(
                        j,
                        i,
                        format(mat[i, j], fmt),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if mat[i, j] > thresh else "black",
                    )
    return _save(fig, path)


def hyperparameters(finals: pd.DataFrame, space: dict, metric: str, best_id: str, epoch: int, path: Path):
    """Each searched hyperparameter (x) against each trial's best validation metric by `epoch` (y): one row per
    trial that reached that epoch (Experiment.results_at), so every point had the same training.

    Only the keys this space searches (its constants would be one column of points); choices (booleans, strings,
    numbers) on a categorical axis of their values, integers with whole ticks; the best trial is its red star alone.
    """
    keys = [k for k in space if f"config/{k}" in finals and space[k].get("type") != "constant"]
    cols = min(4, max(1, len(keys)))
    rows = max(1, math.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    is_best = (finals["trial_id"] == best_id).to_numpy()
    y = finals[metric].to_numpy(dtype=float)
    for ax, key in zip(axes.flat, keys, strict=False):
        spec, x = space[key], finals[f"config/{key}"]
        if spec["type"] == "choice":
            cats = [str(v) for v in spec["values"]]
            pos = x.astype(str).map({c: i for i, c in enumerate(cats)}).to_numpy(dtype=float)
            pos = pos + np.random.default_rng(0).uniform(-0.12, 0.12, len(pos))  # points of one value side by side
            ax.set_xticks(range(len(cats)), cats, rotation=30 if max(map(len, cats)) > 4 else 0)
            ax.set_xlim(-0.5, len(cats) - 0.5)
        else:
            pos = x.to_numpy(dtype=float)
            if spec.get("log"):  # ticks at 1, 2, 5 x 10^k as plain numbers: a decade or less has no 10^k to label
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            elif spec["type"] == "int":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.scatter(pos[~is_best], y[~is_best], alpha=0.7)
        ax.scatter(pos[is_best], y[is_best], color="tab:red", s=80, marker="*", label="best", zorder=3)
        ax.set_xlabel(key)
        ax.set_ylabel(f"best {metric} by epoch {epoch}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle(
        f"hyperparameters vs best {metric} by epoch {epoch} ({len(finals)} trials that reached it; red star = best)"
    )
    return _save(fig, path)


def param_importance(importances: dict[str, float] | None, note: str, path: Path):
    """Horizontal bars of Optuna's importances (fANOVA), or the reason they could not be computed."""
    fig, ax = plt.subplots(figsize=(7, 0.4 * max(len(importances or {}), 4) + 1.5))
    if importances:
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names], color="tab:blue")
        ax.set_xlabel("importance (share of the metric's variance, Optuna fANOVA)")
        ax.set_ylabel("hyperparameter")
        ax.grid(alpha=0.3, axis="x")
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, note, ha="center", va="center", wrap=True)
    ax.set_title("hyperparameter importance" + (f"\n{note}" if importances and note else ""))
    return _save(fig, path)


def _show_image(ax, img_chw: np.ndarray):
    ax.imshow(np.asarray(img_chw).transpose(1, 2, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def prediction_samples(x: np.ndarray, y: np.ndarray, pred: np.ndarray, classes: list[str], path: Path, n: int = 32):
    """A grid of test images titled true/predicted; mistakes in red with a red frame."""
    n = min(n, len(y))
    idx = np.random.default_rng(0).choice(len(y), n, replace=False)
    cols = 8
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 2.15 * rows), squeeze=False)
    for ax, i in zip(axes.flat, idx, strict=False):
        _show_image(ax, x[i])
        wrong = pred[i] != y[i]
        color = "tab:red" if wrong else "black"
        ax.set_title(f"{classes[y[i]]}\n→ {classes[pred[i]]}", fontsize=8, color=color)
        if wrong:
            for s in ax.spines.values():
                s.set_color("tab:red")
                s.set_linewidth(2.5)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("test images: true → predicted (red = mistake)")
    return _save(fig, path, h_pad=1.6)  # the two-line titles clear the images above them


def class_grid(x: np.ndarray, y: np.ndarray, classes: list[str], path: Path | None, per_class: int = 8):
    """N training images per class, one row per class (the original project's visualize_data)."""
    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(
        len(classes), per_class, figsize=(1.2 * per_class + 1.2, 1.25 * len(classes)), squeeze=False
    )
    for r, name in enumerate(classes):
        idx = np.flatnonzero(y == r)
        pick = rng.choice(idx, min(per_class, len(idx)), replace=False) if len(idx) else []
        for c in range(per_class):
            ax = axes[r, c]
            if c < len(pick):
                _show_image(ax, x[pick[c]])
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"{per_class} training images per class")
    if path is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plt.show()
        return None
    return _save(fig, path)
