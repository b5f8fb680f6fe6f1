"""What report.py's shipped-model options buy, and what they cost: the report's own trainings and table for one seed
per process (so seeds can run side by side), then mean ± std over the seeds' JSON files.

    # one seed: plain retrain + refit (each keeping an EMA), every table row evaluated on the test set; --epochs 40
    # as the README's search gives a trial that ran all 40
    python bench/final_model.py --storage-path experiments --experiment NAME --epochs 40 --seed 2 --json s2.json

    # the table over the seeds' files
    python bench/final_model.py --summarize s0.json s1.json s2.json

Each file holds every row's test accuracy, the wall time of each training and of the test evaluations, and the
1-minute load average before and after: name the load with the numbers (docs/measurements.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--storage-path", default="experiments")
    p.add_argument("--experiment", default="latest")
    p.add_argument("--epochs", type=int, default=None, help="as report.py's --epochs (default: the best trial's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument("--summarize", nargs="+", metavar="JSON", help="mean ± std over these files, nothing trained")
    return p.parse_args(argv)


def measure(args) -> dict:
    from analysis import evaluation
    from analysis.classification_metrics import classification_metrics
    from analysis.final_model import Options, Variant
    from analysis.report_budget import TrainingPlan
    from analysis.report_data import load_data
    from analysis.retrain import local_framework
    from analysis.trials import load_experiment, resolve_experiment

    load_before = os.getloadavg()
    exp = load_experiment(resolve_experiment(args.experiment, args.storage_path))
    exp.configs[exp.best_id] = {**exp.best_config, "seed": args.seed}  # evaluate_runs starts at the config's seed
    rargs = SimpleNamespace(
        no_retrain=False,
        epochs=args.epochs,
        seeds=1,
        precision="trial",
        data_dir=None,
        cache_dir=None,
        test_subset=None,
    )
    dataset = load_data(exp, rargs)
    fw = local_framework(exp.info.get("framework", "torch"), "cpu", args.threads)
    options = Options(refit=True, ema_decay=args.ema_decay, flip_tta=True, ensemble=True)
    seconds = {}
    real_train_one, real_predict = evaluation.train_one, fw.predict

    def timed_train_one(fw_, config, data, epochs, what, exp_):
        t0 = time.perf_counter()
        run = real_train_one(fw_, config, data, epochs, what, exp_)
        seconds["refit" if run.trained_on == "train+val" else "retrain"] = time.perf_counter() - t0
        return run

    def timed_predict(model, x, data, config, *, flip_tta=False):
        t0 = time.perf_counter()
        out = real_predict(model, x, data, config, flip_tta=flip_tta)
        seconds.setdefault("test_eval_tta" if flip_tta else "test_eval", time.perf_counter() - t0)
        return out

    evaluation.train_one, fw.predict = timed_train_one, timed_predict
    ev = evaluation.evaluate_runs(exp, rargs, dataset, fw, options, TrainingPlan(False, options.refit))
    # the combinations a default could be, beside the table's one-option rows and its everything row
    scoring = {**exp.best_config, "precision": "fp32"} if fw.name == "torch" else exp.best_config
    combos = [
        Variant("refit_tta", "refit + flip TTA (no EMA)", refit=True, tta=True),
        Variant("ensemble_tta", "ensemble + flip TTA (no EMA)", tta=True, ensemble=True),
    ]
    for v in combos:
        scores = real_predict(ev.model(v, 0), dataset.x_test, dataset.search_arrays(), scoring, flip_tta=True)
        ev.results[v.key] = [classification_metrics(dataset.y_test, scores, dataset.classes)]
    epoch_seconds = {
        run.trained_on: float(np.median([h["epoch_seconds"] for h in run.history]))
        for run in (ev.plain[0], ev.refits[0])
    }
    return {
        "experiment": exp.path,
        "config": exp.best_config,
        "seed": args.seed,
        "threads": args.threads,
        "table": {
            v.key: {"label": v.label, "accuracy": ev.results[v.key][0]["accuracy"]} for v in [*ev.variants, *combos]
        },
        "kept_epoch": ev.plain[0].best_epoch,
        "refit_epochs": ev.refit_epochs,
        "seconds": seconds,
        "median_epoch_seconds": epoch_seconds,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


def summarize(paths: list[str]) -> str:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    lines = [
        f"{len(runs)} seeds: {', '.join(str(r['seed']) for r in runs)}",
        "| model | test accuracy | per seed |",
        "|---|---|---|",
    ]
    plain = np.array([r["table"]["plain"]["accuracy"] for r in runs])
    for key, row in runs[0]["table"].items():
        accs = np.array([r["table"][key]["accuracy"] for r in runs])
        std = accs.std(ddof=1) if len(accs) > 1 else 0.0
        gain = f"; {accs.mean() - plain.mean():+.4f} over plain" if key != "plain" else ""
        lines.append(
            f"| {row['label']} | {accs.mean():.4f} ± {std:.4f}{gain} | {', '.join(f'{a:.4f}' for a in accs)} |"
        )
    for key in ("retrain", "refit", "test_eval", "test_eval_tta"):
        values = [r["seconds"].get(key) for r in runs if r["seconds"].get(key) is not None]
        if values:
            lines.append(f"{key}: {', '.join(f'{v:.1f}' for v in values)} s")
    lines.append(
        "load (1-min) before/after: " + "; ".join(f"{r['load_before'][0]:.1f}/{r['load_after'][0]:.1f}" for r in runs)
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    result = measure(args)
    text = json.dumps(result, indent=2, default=str)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
