"""Test-set metrics from predictions, computed with scikit-learn, and their tables (md, csv, original-style txt).

Per class the counts are one-vs-rest: TP = predicted c and is c, FP = predicted c and is not, FN = is c and
predicted otherwise, TN = the rest. specificity = TN / (TN + FP), which scikit-learn has no function for.
"""

from __future__ import annotations

import csv
import io

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score

PER_CLASS_KEYS = ("tp", "fp", "tn", "fn", "precision", "recall", "specificity", "f1", "support")
SUMMARY_KEYS = ("precision", "recall", "specificity", "f1")


def _div(a, b) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def classification_metrics(y_true: np.ndarray, scores: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, top-5, one-vs-rest counts and rates per class, macro and support-weighted averages.

    `scores`: (N, C) logits or probabilities; the prediction is their argmax.
    """
    y_true = np.asarray(y_true)
    labels = np.arange(len(classes))
    y_pred = scores.argmax(1)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    tn = cm.sum() - tp - fp - fn
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    specificity = _div(tn, tn + fp)
    per_class = {
        name: {
            "tp": int(tp[i]),
            "fp": int(fp[i]),
            "tn": int(tn[i]),
            "fn": int(fn[i]),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "specificity": float(specificity[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    weights = support / max(support.sum(), 1)
    rates = {"precision": precision, "recall": recall, "specificity": specificity, "f1": f1}
    # with 5 classes or fewer every label is in the top 5
    top5 = top_k_accuracy_score(y_true, scores, k=5, labels=labels) if len(classes) > 5 else 1.0
    return {
        "accuracy": float((y_pred == y_true).mean()),
        "top5_accuracy": float(top5),
        "macro": {key: float(v.mean()) for key, v in rates.items()},
        "weighted": {key: float((v * weights).sum()) for key, v in rates.items()},
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


# ---------------------------------------------------------------------------------------------------------------
# tables


def _rows(m: dict) -> list[list]:
    rows = [[name, *[v[k] for k in PER_CLASS_KEYS]] for name, v in m["per_class"].items()]
    total = sum(v["support"] for v in m["per_class"].values())
    for avg in ("macro", "weighted"):
        rows.append(
            [
                f"({avg} avg)",
                "",
                "",
                "",
                "",
                *[m[avg][k] for k in ("precision", "recall", "specificity")],
                m[avg]["f1"],
                total,
            ]
        )
    return rows


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


ONE_VS_REST_NOTE = (
    "Per class, one-vs-rest: tp/fp/fn/tn count that class against all others; specificity = tn / (tn + fp). "
    "The macro row averages the classes, the weighted row weighs them by support."
)


def headline(m: dict) -> str:
    """Overall accuracy; with several seeds their mean ± std first, then the saved model's own figures."""
    seeds = m.get("seeds", [])
    if len(seeds) > 1:
        saved = f"saved model (seed {m['saved_seed']}): accuracy {m['accuracy']:.4f}"
        mean = f"test accuracy over {len(seeds)} seeds {m['mean']:.4f} ± {m['std']:.4f}"
        return f"{mean}; {saved}, top-5 {m['top5_accuracy']:.4f}"
    return f"accuracy **{m['accuracy']:.4f}**, top-5 accuracy {m['top5_accuracy']:.4f}"


def metrics_markdown(m: dict) -> str:
    head = ["class", *PER_CLASS_KEYS]
    lines = [
        headline(m),
        "",
        ONE_VS_REST_NOTE,
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in _rows(m)]
    return "\n".join(lines) + "\n"


def metrics_csv(m: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["class", *PER_CLASS_KEYS])
    writer.writerows(_rows(m))
    return buf.getvalue()


def metrics_text(m: dict) -> str:
    """The original project's plain form: counts and rates, per class (one-vs-rest) and overall (macro)."""
    seeds = m.get("seeds", [])
    out = [f"accuracy (overall): {m['accuracy']:.4f}", f"top-5 accuracy: {m['top5_accuracy']:.4f}"]
    if len(seeds) > 1:
        each = ", ".join(f"seed {s['seed']}: {s['accuracy']:.4f}" for s in seeds)
        out += [
            f"accuracy over {len(seeds)} seeds: {m['mean']:.4f} ± {m['std']:.4f} ({each}); "
            f"the figures here are the saved model's, seed {m['saved_seed']}"
        ]
    out += ["", "per class: one-vs-rest (the class against all others)", ""]
    for name, v in m["per_class"].items():
        acc = (v["tp"] + v["tn"]) / max(v["tp"] + v["tn"] + v["fp"] + v["fn"], 1)
        out += [
            f"class {name}",
            f"TP: {v['tp']}",
            f"TN: {v['tn']}",
            f"FP: {v['fp']}",
            f"FN: {v['fn']}",
            f"one-vs-rest accuracy ((TP+TN)/all, not the overall accuracy): {acc:.4f}",
            f"precision: {v['precision']:.4f}",
            f"recall: {v['recall']:.4f}",
            f"specificity: {v['specificity']:.4f}",
            f"F1: {v['f1']:.4f}",
            "",
        ]
    macro = m["macro"]
    out += ["macro average"] + [f"{k if k != 'f1' else 'F1'}: {macro[k]:.4f}" for k in SUMMARY_KEYS]
    return "\n".join(out) + "\n"
