"""Warm start against a cold start (issue 26): for each seed, a finished LeNet5 search of OLD minutes, then a search of
MINUTES warm-started from it (`--warm-start`) and a cold search of MINUTES; the best val_acc of each new search.

    # the measurement: 3 seeds x (10 + 5 + 5) minutes, about an hour on the 2-core VM
    python bench/warm_start.py --data-dir ../shared/data/cifar10 --seeds 0 1 2 --json bench/warm_start.json
    # a check of the script itself (minutes)
    python bench/warm_start.py --data-dir ../shared/data/cifar10 --subset 2000 --old-minutes 1 --minutes 1 --seeds 0

Each search is `run_search.py` as a user runs it (a subprocess), on the same data and split (the seed). Per new
search: its best val_acc at any epoch of any of its own trials (the warm one's old evidence is not counted: it
re-runs the old best configs as its first trials), the val_acc of its best trial by the search metric at that
trial's best epoch, its trials, and the 1-minute load average before it. Within a seed, the warm and cold searches
alternate which runs first, so that a load that drifts over the hour does not favour one of them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.trials import load_experiment  # noqa: E402
from search_driver.ray_compat import quiet_analysis_logs  # noqa: E402
from trainables import metric_names as M  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--old-minutes", type=float, default=10, help="the finished search warm starts come from")
    p.add_argument("--minutes", type=float, default=5, help="each new search, warm and cold")
    p.add_argument("--subset", type=int, default=None, help="training images kept (stratified), for a quick check")
    p.add_argument("--storage-path", default=None, help="default: a temporary folder")
    p.add_argument("--json", default=None, help="write the numbers here")
    return p.parse_args(argv)


def search(bench, storage: str, name: str, seed: int, minutes: float, *extra) -> dict:
    """One run_search.py search; what it found."""
    load = os.getloadavg()[0]
    cmd = [sys.executable, str(ROOT / "run_search.py"), "--model", "lenet5", "--data-dir", bench.data_dir,
           "--time-budget", str(minutes), "--seed", str(seed), "--storage-path", storage, "--name", name, *extra]  # fmt: skip
    if bench.subset:
        cmd += ["--subset", str(bench.subset)]
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {minutes:g} min, load {load:.1f}", flush=True)
    t = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    exp = load_experiment(os.path.join(storage, name))
    best_acc = max(float(df[M.VAL_ACC].max()) for df in exp.curves.values())
    return {
        "name": name, "minutes": minutes, "wall_s": round(time.time() - t, 1), "load_before": round(load, 2),
        "trials": len(exp.curves), "best_val_acc": best_acc, "best_trial_val_acc": float(exp.best_row[M.VAL_ACC]),
    }  # fmt: skip


def mean_std(values) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def main(argv=None) -> int:
    bench = parse_args(argv)
    quiet_analysis_logs()  # Ray's warning about a trial the budget stopped before its first epoch, as report.py does
    storage = bench.storage_path or tempfile.mkdtemp(prefix="warm-start-bench-")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows = []
    for i, seed in enumerate(bench.seeds):
        old = f"ws-old-s{seed}-{stamp}"
        row = {"seed": seed, "old": search(bench, storage, old, seed, bench.old_minutes)}
        runs = [("warm", ["--warm-start", old]), ("cold", [])]
        for kind, extra in runs if i % 2 == 0 else runs[::-1]:
            row[kind] = search(bench, storage, f"ws-{kind}-s{seed}-{stamp}", seed, bench.minutes, *extra)
        rows.append(row)
        print(f"seed {seed}: best val_acc warm {row['warm']['best_val_acc']:.4f} ({row['warm']['trials']} trials), "
              f"cold {row['cold']['best_val_acc']:.4f} ({row['cold']['trials']} trials)", flush=True)  # fmt: skip

    print(f"\nLeNet5, {bench.minutes:g}-minute searches, warm-started from a finished {bench.old_minutes:g}-minute one "
          f"or cold; {len(rows)} seed(s); storage {storage}\n")  # fmt: skip
    print("| seed | old best val_acc | warm best val_acc (trials) | cold best val_acc (trials) | warm - cold |")
    print("|---|---|---|---|---|")
    for r in rows:
        w, c = r["warm"], r["cold"]
        print(f"| {r['seed']} | {r['old']['best_val_acc']:.4f} | {w['best_val_acc']:.4f} ({w['trials']}) | "
              f"{c['best_val_acc']:.4f} ({c['trials']}) | {w['best_val_acc'] - c['best_val_acc']:+.4f} |")  # fmt: skip
    warm, cold = ([r[k]["best_val_acc"] for r in rows] for k in ("warm", "cold"))
    print(f"\nbest val_acc, mean ± std over seeds: warm {mean_std(warm)}, cold {mean_std(cold)}")
    if bench.json:
        out = {"args": vars(bench), "storage": storage, "rows": rows}
        Path(bench.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
