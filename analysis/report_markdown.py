"""report.md: the markdown story of one report (experiment, search, best config, test set, the original
write-up's figures, plots, the trained model). Text only: the numbers come in computed, the files are written by
analysis/report_files.py, and report.html is rendered from this text (analysis/report_html.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from trainables.metric_names import rule_words

from .classification_metrics import metrics_markdown
from .final_model import options_words
from .parts import report_lines
from .trials import best_report, versus_first_trial

# The original project's published test figures (CIFAR-10's test split, 10 classes). Only accuracy is compared with
# ours: the write-up does not say how it computed the others, and they are not one-vs-rest macro averages
# (original_note shows why from the numbers themselves).
ORIGINAL = {
    "lenet5": {"accuracy": 0.534, "precision": 0.591, "recall": 0.513, "specificity": 0.559, "f1": 0.550},
    "resnet18": {"accuracy": 0.631, "precision": 0.590, "recall": 0.748, "specificity": 0.524, "f1": 0.660},
}
ORIGINAL_NOTE = {
    "lenet5": "LeNet5, 20 epochs",
    "resnet18": "ResNet18 with the 7x7 ImageNet stem, trained from scratch",
}


def report_markdown(exp, m, weights, fw, config, dataset, imp_note, rung, rung_trials) -> str:
    """`m`: metrics.json's content; `weights`: the saved model's file; `rung`, `rung_trials`: the epoch importance was
    compared at (analysis/trials.Experiment.comparison_epoch) and how many trials reached it."""
    s = exp.summary()
    best = exp.best_row
    info = exp.info
    model = info["model"]
    lines = [
        f"# Report: {Path(exp.path).name}",
        "",
        "## Experiment",
        f"- model **{model}**, data `{info['data']['path']}` ({info['data']['kind']}, {len(dataset.classes)} classes; "
        f"{info['data']['num_train']} train / {info['data']['num_val']} val / {len(dataset.y_test)} test images, "
        f"split seed {info['split_seed']})",
        search_line(info, s, exp.metric, exp.mode),
        *report_lines(exp),  # a warm start's origin, an extended search's parts
        f"- best trial `{exp.best_id}` ({rule_words(exp.metric, exp.mode)} reached at any epoch): {exp.metric} "
        f"{best[exp.metric]:.4f} at epoch {int(best['training_iteration'])} of the "
        f"{int(exp.curves[exp.best_id]['training_iteration'].max())} it ran (val_acc {best['val_acc']:.4f})",
        *([f"- {verdict}"] if (verdict := first_trial_line(exp)) else []),
        f"- code {info.get('git_sha') or 'unknown'}; packages {', '.join(f'{k} {v}' for k, v in info['packages'].items())}",
        "",
        "## Best config",
        "```json",
        json.dumps({k: v for k, v in config.items()}, indent=2, default=str),
        "```",
        "",
        *test_set_lines(m, test_set_line(dataset)),
        precision_line(m),
        "",
        *budget_lines(m),
        *final_model_lines(m),
        metrics_table_intro(m),
        "",
        *metrics_md_lines(m),
        "",
    ]
    lines += original_lines(model, config, m)
    lines += [
        "## Plots",
        "![learning curves](learning_curves.png)",
        "![retrain](best_trial.png)",
        "![confusion matrix](confusion_matrix.png)",
        "![hyperparameters](hyperparameters.png)",
        f"![importance](param_importance.png) — {imp_note}. Importance and the hyperparameter plot use epoch {rung}: "
        f"the highest ASHA rung that at least 8 trials reached (else the highest epoch that 8, or all, reached; "
        f"{rung_trials} trials), so every trial shown had the same training.",
        "![samples](samples.png)",
        "",
        "## The trained model",
        f"`{weights}`; config, normalisation and input size in `best_config.json`. To load it for inference:",
        fw.load_note(
            {**config, "input_size": int(dataset.x_train.shape[-1]), "final_model": m.get("final_model")},
            len(dataset.classes),
        ),
        *(
            [
                "The file holds the shipped network's weights; the flip test-time augmentation is not in it: average the "
                "probabilities of each image and its horizontal mirror, as the exported files below do."
            ]
            if (m.get("final_model") or {}).get("flip_tta")
            else []
        ),
        "",
    ]
    return "\n".join(lines)


def search_line(info: dict, s: dict, metric: str, mode: str) -> str:
    """What actually ran (experiment.json's "search" record; older experiments: their arguments)."""
    search = info.get("search") or {}
    how = " + ".join(search.get(k) for k in ("searcher", "scheduler", "stopper") if search.get(k)) or (
        "Optuna TPE + ASHA (as recorded in the arguments)"
    )
    budget = f"; time budget {search['time_budget_min']:g} min" if search.get("time_budget_min") else ""
    return (
        f"- search: {how} on `{metric}` ({mode}){budget}; {s['trials']} trials: {s['completed_all_epochs']} ran all "
        f"{s['max_epochs']} epochs, {s['stopped_early']} stopped early, {s['diverged']} diverged; "
        f"{s['epochs_spent']} trial-epochs in {s['wall_time_s'] / 60:.1f} min of search wall time"
    )


def first_trial_line(exp) -> str | None:
    """Whether the search beat the config it started from (analysis/trials.versus_first_trial)."""
    search = exp.info.get("search") or {}
    first = search.get("first_trial_config")
    if first is None and search.get("first_trial") == "the space's DEFAULTS":  # recorded before the config was
        from search_spaces import get_space

        first = get_space(exp.info["model"])[1]
    best = {t: float(best_report(df, exp.metric, exp.mode)[exp.metric]) for t, df in exp.curves.items() if len(df)}
    n_val = (exp.info.get("data") or {}).get("num_val")  # what the validation set can resolve
    return versus_first_trial(exp.configs, best, first, exp.metric, exp.mode, n_val, search.get("first_trial"))


def test_set_line(dataset) -> str:
    n, full = len(dataset.y_test), dataset.source.get("num_test_full", len(dataset.y_test))
    side = dataset.x_test.shape[-1]
    if n == full:
        return f"{n:,} test images (the whole test split), {side}x{side}."
    return f"{n:,} of the {full:,} test images (a stratified subset, `--test-subset {n}`), {side}x{side}."


def test_set_lines(m, size_line: str) -> list[str]:
    """The section head and the test set's size (`size_line`); how the model(s) were made, and with several seeds the
    per-seed table and which was saved."""
    seeds = m["seeds"]
    fm = m.get("final_model") or {}
    shipped = f" Shipped: {options_words(fm)} (the table below)." if len(fm.get("table", [])) > 1 else ""
    if not m["retrained"]:
        own = f"The best trial's own last checkpoint (epoch {seeds[0]['kept_epoch']}), not retrained.{shipped}"
        return ["## Test set (evaluated once per model)", size_line, "", own, ""]
    rule = m.get("rule", {"metric": "val_loss", "mode": "min"})
    metric = rule["metric"]
    kept = f"keeping the weights of the epoch with the {rule_words(metric, rule['mode'])} (the search's own rule)"
    if len(seeds) == 1:
        return [
            "## Test set (evaluated once per model)",
            size_line,
            "",
            f"Retrained on the training split, {kept} (epoch {seeds[0]['kept_epoch']}).{shipped}",
            "",
        ]
    kept_column = "retrain's kept epoch" if fm.get("refit") else "kept epoch"
    lines = [
        f"## Test set ({len(seeds)} retrained models, each evaluated once)",
        size_line,
        "",
        f"Retrained on the training split with seeds {', '.join(str(s['seed']) for s in seeds)}, each {kept}.{shipped}",
        "",
        f"test accuracy **{m['mean']:.4f} ± {m['std']:.4f}** (mean ± sample std over {len(seeds)} seeds)",
        "",
        f"| seed | test accuracy | top-5 | macro F1 | {kept_column} | {metric} there | saved |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {s['seed']} | {s['accuracy']:.4f} | {s['top5_accuracy']:.4f} | {s['macro_f1']:.4f} | {s['kept_epoch']} | "
        f"{s['kept_value']:.4f} | {'yes' if s['seed'] == m['saved_seed'] else ''} |"
        for s in seeds
    ]
    lines += [
        "",
        f"Saved model: seed {m['saved_seed']}, the {m['saved_seed_rule']} "
        + (
            "(not chosen on the test set). "
            if fm.get("refit")
            else "(chosen on validation data, not on the test set). "
        )
        + "The per-class table, confusion matrix and samples below are this model's.",
        "",
    ]
    return lines


def budget_lines(m) -> list[str]:
    """What the report's time budget changed (analysis/report_budget.py), if anything."""
    lines = (m.get("training_plan") or {}).get("lines") or []
    text = "; ".join(lines).replace("report budget", "**Report budget**", 1)  # the first line names the budget
    return [text + ".", ""] if lines else []


def final_model_lines(m) -> list[str]:
    """The shipped model's options, how the refit's epochs were fixed, and the table of what each option bought
    (test accuracy over the seeds; every row evaluated once on the test set, none chosen by it)."""
    fm = m.get("final_model")
    if not fm or not m["retrained"] and len(fm["table"]) == 1:
        return []
    table, n = fm["table"], len(m["seeds"])
    lines = ["## The shipped model: what each option bought", ""]
    if fm["refit"]:
        r = fm["refit"]
        lines.append(
            f"- **refit**: the config retrained on train + validation ({r['images']:,} images) for {r['epochs']} "
            f"epoch{'s' * (r['epochs'] != 1)}, {r['epochs_rule']}. No validation data is left, so no epoch of the "
            "refit was chosen by it: the count was fixed before it started and its last epoch is shipped "
            "(`retrain_history.csv`: `trained_on` train+val, empty validation cells)."
        )
    if fm["weight_averaging"]:
        a = fm["weight_averaging"]
        lines.append(
            f"- **EMA of the weights**: decay {a['decay']:g} per step, taken at the kept epoch; BatchNorm "
            "statistics recomputed for the averaged weights on training images."
        )
    if fm["flip_tta"]:
        lines.append(
            "- **flip test-time augmentation**: each image's class probabilities are the mean of the image's "
            "and its horizontal mirror's (the config trained with flips); the exported files do the same."
        )
    elif fm.get("flip_tta_asked"):
        lines.append("- flip test-time augmentation: not applied, the config trained without flips.")
    if fm.get("ensemble"):
        lines.append(
            "- **ensemble**: the class probabilities of the plain model and of the refit, averaged: one model of two "
            "networks in the saved and exported files (no extra training, twice the prediction time)."
        )
    seeds = f"mean ± std over {n} seeds" if n > 1 else "1 seed; `--seeds K` for mean ± std"
    lines += ["", f"| model | test accuracy ({seeds}) | per seed |", "|---|---|---|"]
    for row in table:
        value = f"{row['mean']:.4f} ± {row['std']:.4f}" if n > 1 else f"{row['mean']:.4f}"
        label = row["label"] if row is not table[-1] else f"**{row['label']}** (saved)"
        if row is table[-1]:
            value = f"**{value}**"
        lines.append(f"| {label} | {value} | {', '.join(f'{a:.4f}' for a in row['accuracy'])} |")
    lines += [
        "",
        f"Shipped: {options_words(fm)}. Each row is a model evaluated once on the test set; the options "
        "were chosen beforehand, not by these numbers.",
        "",
    ]
    return lines


def precision_line(m) -> str:
    p = m.get("precision")
    if not p:
        return ""
    scored = p.get("test_scored_in", p["used"])
    tail = "" if scored == p["used"] else f"; the test set scored in {scored}, as the exported files run"
    return f"Trained and validated in {p['used']}: {p['chosen_by']}{tail}."


def metrics_table_intro(m) -> str:
    which = f"saved model (seed {m['saved_seed']}): " if len(m["seeds"]) > 1 else ""
    return f"{which}accuracy **{m['accuracy']:.4f}**, top-5 {m['top5_accuracy']:.4f}"


def metrics_md_lines(m) -> list[str]:
    return metrics_markdown(m).splitlines()[2:]  # the table without its headline (said just above)


def original_lines(model: str, config: dict, m: dict) -> list[str]:
    """The original project's test accuracy beside ours, for the models it published."""
    if model not in ORIGINAL:
        return []
    o = ORIGINAL[model]
    same = model != "resnet18" or config.get("stem") == "imagenet"
    ours = (
        f"{m['mean']:.3f} ± {m['std']:.3f} ({len(m['seeds'])} seeds)" if len(m["seeds"]) > 1 else f"{m['accuracy']:.3f}"
    )
    return [
        "## Beside the original write-up",
        f"Original: {ORIGINAL_NOTE[model]}" + ("" if same else " (this run's stem differs: compare with care)") + ".",
        "",
        "| | test accuracy |",
        "|---|---|",
        f"| original | {o['accuracy']:.3f} |",
        f"| this report | {ours} |",
        "",
        original_note(o),
        "",
    ]


def original_note(o: dict) -> str:
    """Why the write-up's other figures are not compared: its numbers rule out the one-vs-rest macro definitions."""
    acc = o["accuracy"]
    spec = 1 - (1 - acc) / 9  # macro one-vs-rest specificity on a balanced 10-class test set
    hm = 2 * o["precision"] * o["recall"] / (o["precision"] + o["recall"])
    return (
        f"The write-up also gives precision {o['precision']:.3f}, recall {o['recall']:.3f}, specificity "
        f"{o['specificity']:.3f} and F1 {o['f1']:.3f} without saying how it computed them, and they are not the "
        f"one-vs-rest macro averages of this report's tables: on CIFAR-10's balanced test split macro recall equals "
        f"accuracy ({acc:.3f}, not {o['recall']:.3f}) and macro specificity is 1 − (1 − accuracy)/9 = {spec:.3f} "
        f"(not {o['specificity']:.3f}); its F1 is the harmonic mean of its own precision and recall ({hm:.3f}), not "
        "a mean of per-class F1s. So only accuracy is compared."
    )
