"""Extending a finished experiment: `run_search.py --resume NAME --time-budget M` (or `--num-samples N`) adds M
minutes (N trials) to it, in the same folder and the same Optuna study.

Why a new Tune run in the experiment's folder, not `Tuner.restore`: Tune restores a finished experiment with the
limits it ended on, and has no public way to raise them (ray-project/ray issue 42221). The spent time budget comes
back as the TimeoutStopper pickled in the experiment snapshot (TuneController's `runner_data`), and the trial count
and "finished" flag as the SearchGenerator's saved state (search_gen_state-*.json), both restored after anything
the caller passes in. So an extension is an ordinary new `Tuner` with the experiment's saved arguments and the new
budget, in the same storage path and name; Tune writes its own experiment_state-<time>.json beside the earlier
ones and new trial_<id>/ folders beside the earlier trials, and leaves those alone. What carries over:

- the Optuna study: the same journal file (search_driver/tracking.py), so TPE continues with every earlier trial;
  the searcher never reuses an earlier Tune trial id (search_driver/optuna_searcher.py). On remote storage
  (s3://, gs://) the study lives in memory and in the searcher's saved state: the extension's new study starts
  with the earlier study's trials, read from the newest searcher-state-*.pkl (our searcher's own pickle);
- ASHA's rungs: the new ResumableASHA replays the earlier trials' result files before any new trial reports
  (search_driver/stopping.py);
- the record: experiment.json's `extensions` list (budget, start, the trials that came before, end); report.py and
  the summary read the trials of every Tune run in the folder (analysis/trials.experiment_analysis) and say how many
  trials and minutes came from each part (analysis/parts.py).

An interrupted extension is continued like any search: `--resume NAME` restores its own Tune run.
"""

from __future__ import annotations

import json
import time

from search_driver.cli import UsageError


def check_space(args, path: str, space: dict, defaults: dict) -> None:
    """The extension searches the space the experiment searched (the LR finder's range included), or says so."""
    from analysis.experiment import EXPERIMENT_FILE, join, read_json
    from search_spaces import describe

    info = read_json(join(path, EXPERIMENT_FILE))
    if args.lr_range_from_finder and info.get("lr_finder"):
        from search_driver.lr_find import search_lr_around

        search_lr_around(info["lr_finder"]["suggested_lr"], space, defaults)
    then = info.get("search_space")
    now = json.loads(json.dumps(describe(space), default=str))  # as experiment.json holds it
    if then is not None and now != then:
        changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
        name = path.rstrip("/").rsplit("/", 1)[-1]
        raise UsageError(
            f"{name}'s search space has changed since it ran ({', '.join(changed)}): an extension searches the "
            f"same space; start a new experiment from its trials with --warm-start {name}"
        )


def trial_folders(path: str) -> dict[str, str]:
    """Trial id -> trial folder, for every trial in the experiment's Tune snapshots (every run in the folder)."""
    from analysis.experiment import filesystem, join
    from analysis.trials import snapshot_files

    out = {}
    for snapshot in snapshot_files(path):
        fs, p = filesystem(snapshot)
        with fs.open_input_stream(p) as f:
            state = json.loads(f.read().decode())
        for trial_json, _ in state["trial_data"]:
            tid = json.loads(trial_json)["trial_id"]
            out[tid] = join(path, f"trial_{tid}")  # build_tuner's trial_dirname_creator
    return out


def earlier_study(path: str) -> list:
    """Remote storage: the finished trials of the study in the experiment's newest saved searcher state (the
    OptunaSearcher's pickled attributes, search_driver/optuna_searcher.py `save`), [] without one. Unpickling
    trusts the folder, as Tuner.restore does."""
    import pickle

    import pyarrow.fs as pafs
    from optuna.trial import TrialState

    from analysis.experiment import filesystem, join

    fs, root = filesystem(path)
    names = sorted(
        i.base_name for i in fs.get_file_info(pafs.FileSelector(root)) if i.base_name.startswith("searcher-state-")
    )
    if not names:
        return []
    fs, p = filesystem(join(path, names[-1]))
    with fs.open_input_stream(p) as f:
        study = pickle.loads(f.read()).get("_study")
    ended = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [] if study is None else study.get_trials(deepcopy=True, states=ended)


def budget_words(args) -> str:
    words = [f"up to {args.num_samples} more trials" if args.num_samples > 0 else "as many more trials as fit"]
    if args.time_budget:
        words.append(f"{args.time_budget:g} more minutes")
    return " in ".join(words)


def begin(args, path: str):
    """Record the extension in experiment.json, say what came before, and return what the new Tune run needs."""
    import pandas as pd

    from analysis.experiment import EXPERIMENT_FILE, is_uri, join, read_json
    from analysis.parts import console_lines, parts
    from search_driver import resume
    from search_driver.stopping import read_rows
    from search_driver.tuner import Prior

    info = read_json(join(path, EXPERIMENT_FILE))
    folders = trial_folders(path)
    part = len(info.get("extensions") or []) + 2
    curves = {tid: pd.DataFrame(read_rows(folder)) for tid, folder in folders.items()}
    print(f"extending {args.name} with part {part}: {budget_words(args)}", flush=True)
    print("\n".join(console_lines("so far: ", parts(info, curves, folders))), flush=True)
    resume.record(
        path,
        extension={
            "part": part,
            "started_at": time.time(),
            "time_budget_min": args.time_budget,
            "num_samples": None if args.num_samples == -1 else args.num_samples,
            "earlier_trials": sorted(folders),
        },
    )
    evidence = earlier_study(path) if is_uri(path) and args.searcher == "optuna" else []  # local: the same journal
    return Prior(part=part, earlier_trials=[folders[t] for t in sorted(folders)], first=[], evidence=evidence)


def results(path: str, results, args):
    """What the summary reads: the run's own results, or for an extended experiment every part's."""
    from analysis.experiment import EXPERIMENT_FILE, join, read_json

    if not read_json(join(path, EXPERIMENT_FILE)).get("extensions"):
        return results
    from analysis.trials import all_results
    from trainables.metric_names import SEARCH_METRICS

    return all_results(path, args.metric, SEARCH_METRICS[args.metric])
