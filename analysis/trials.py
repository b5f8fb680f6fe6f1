"""Find an experiment (latest / NAME / PATH / URI) and read its trials with Ray's ExperimentAnalysis.

An experiment folder may hold several Tune runs: each `--resume` writes a new experiment_state-<time>.json, and each
extension of a finished search (search_driver/extend.py) is a new Tune run in the same folder. Ray's
ExperimentAnalysis reads the newest snapshot only; `experiment_analysis` gives it the trials of every snapshot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from trainables import metric_names as M

from .experiment import EXPERIMENT_FILE, exists, filesystem, is_uri, join, normalize_storage_path, read_json


class ReportError(Exception):
    """The report cannot be made (no such experiment, nothing in it to report on, a bad report.py argument): one
    line naming what was looked for and what exists. report.py prints it as its one `error:` line."""


def list_experiments(storage_path: str) -> list[str]:
    """Names of the folders under storage_path that hold an experiment.json."""
    fs, root = filesystem(storage_path)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=False))
    dirs = [i.base_name for i in infos if i.type == pafs.FileType.Directory]
    return sorted(d for d in dirs if exists(join(storage_path, d, EXPERIMENT_FILE)))


def resolve_experiment(which: str, storage_path: str) -> str:
    """`latest` (most recently started under storage_path), a NAME under it, or a PATH / URI of an experiment."""
    storage = normalize_storage_path(storage_path)
    names = list_experiments(storage)
    if which == "latest":
        if not names:
            raise ReportError(
                f"no experiments under {storage} (folders with {EXPERIMENT_FILE}); run run_search.py first"
            )
        return join(storage, max(names, key=lambda n: read_json(join(storage, n, EXPERIMENT_FILE))["started_at"]))
    if is_uri(which) or "/" in which or which.startswith("."):
        path = normalize_storage_path(which)
        if not exists(join(path, EXPERIMENT_FILE)):
            what = "does not exist" if not exists(path) else f"has no {EXPERIMENT_FILE}, so it is not an experiment"
            raise ReportError(f"{path} {what}")
        return path
    if which in names:
        return join(storage, which)
    known = ", ".join(names[-10:]) or "none"
    raise ReportError(f"no experiment named {which!r} under {storage}; experiments there: {known}")


@dataclass
class Experiment:
    path: str
    info: dict  # experiment.json
    analysis: object  # ray.tune.ExperimentAnalysis
    curves: dict[str, pd.DataFrame]  # trial_id -> one row per reported epoch
    configs: dict[str, dict]  # trial_id -> config
    best_id: str

    @property
    def metric(self) -> str:
        return self.info["metric"]

    @property
    def mode(self) -> str:
        return self.info["mode"]

    @property
    def best_config(self) -> dict:
        return self.configs[self.best_id]

    @property
    def best_row(self) -> dict:
        """The best trial's report at its best epoch (the one rule for "best", see `best_report`)."""
        return best_report(self.curves[self.best_id], self.metric, self.mode)

    def final_results(self) -> pd.DataFrame:
        """One row per trial: its last report, its config (prefixed config/), epochs run."""
        rows = []
        for tid, df in self.curves.items():
            last = df.iloc[-1].to_dict()
            rows.append({"trial_id": tid, **last, **{f"config/{k}": v for k, v in self.configs[tid].items()}})
        return pd.DataFrame(rows)

    def results_at(self, epoch: int) -> pd.DataFrame:
        """One row per trial that trained at least `epoch` epochs: its best report among epochs 1..epoch, with its
        config (config/ columns). Trials compared here have had the same training, unlike their final values,
        which ASHA, the stopper or the time budget took at different epochs."""
        rows = []
        for tid, df in self.curves.items():
            if int(df["training_iteration"].max()) < epoch:
                continue
            row = best_report(df[df["training_iteration"] <= epoch], self.metric, self.mode)
            rows.append({"trial_id": tid, **row, **{f"config/{k}": v for k, v in self.configs[tid].items()}})
        return pd.DataFrame(rows)

    def comparison_epoch(self, min_trials: int = 8) -> int:
        """The highest epoch at which trials are compared at equal training: the highest ASHA rung (or max_epochs)
        that at least `min_trials` trials with a finite metric reached. When no rung has that many (few trials, or a
        time budget that ended before the first rung), the highest epoch that min(min_trials, trials) reached."""
        args = self.info["args"]
        epochs = [*asha_rungs(args["grace_period"], args["reduction_factor"], args["max_epochs"]), args["max_epochs"]]
        if args.get("scheduler", "asha") != "asha":
            epochs = [args["max_epochs"]]
        for epoch in sorted(set(epochs), reverse=True):
            df = self.results_at(epoch)
            if len(df) and int(np.isfinite(df[self.metric].astype(float)).sum()) >= min_trials:
                return epoch
        reached = sorted((int(df["training_iteration"].max()) for df in self.curves.values()), reverse=True)
        return reached[min(min_trials, len(reached)) - 1]

    def summary(self) -> dict:
        """Trials run / stopped early / diverged, epochs spent, wall time (first start to last report)."""
        max_epochs = int(self.info["args"]["max_epochs"])
        finals = self.final_results()
        starts = [df["timestamp"].iloc[0] - df["time_this_iter_s"].iloc[0] for df in self.curves.values()]
        ends = [df["timestamp"].iloc[-1] for df in self.curves.values()]
        diverged = finals[M.DIVERGED].astype(bool) if M.DIVERGED in finals else pd.Series(False, index=finals.index)
        epochs = finals["training_iteration"].astype(int)
        return {
            "trials": len(finals),
            "completed_all_epochs": int((epochs >= max_epochs).sum()),
            "stopped_early": int(((epochs < max_epochs) & ~diverged).sum()),
            "diverged": int(diverged.sum()),
            "epochs_spent": int(epochs.sum()),
            "max_epochs": max_epochs,
            "wall_time_s": self._wall_time_s(starts, ends),
        }

    def _wall_time_s(self, starts, ends) -> float:
        """First start to last report; an extended experiment's parts each so (not the pauses between them)."""
        if not ends:
            return 0.0
        if not self.info.get("extensions"):
            return float(max(ends) - min(starts))
        from .parts import parts

        ids = [t.trial_id for t in self.analysis.trials]
        return 60 * sum(p.minutes for p in parts(self.info, self.curves, ids))


SNAPSHOT_PREFIX = "experiment_state-"  # Tune's snapshot files: experiment_state-<session start time>.json


def snapshot_files(path: str) -> list[str]:
    """The experiment folder's Tune snapshots, oldest first (their names carry the session's start time)."""
    fs, root = filesystem(path)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=False))
    except (FileNotFoundError, OSError):
        return []
    names = sorted(
        i.base_name for i in infos if i.base_name.startswith(SNAPSHOT_PREFIX) and i.base_name.endswith(".json")
    )
    return [join(path, n) for n in names]


def experiment_analysis(path: str, metric: str, mode: str):
    """Ray's ExperimentAnalysis over every trial of every Tune run in the folder (each trial as the newest snapshot
    that lists it has it)."""
    from ray.tune import ExperimentAnalysis

    files = snapshot_files(path)
    if len(files) < 2:
        return ExperimentAnalysis(path, default_metric=metric, default_mode=mode)
    trials = {}
    for f in files:  # oldest first: a newer snapshot's copy of a trial replaces an older one's
        trials.update({t.trial_id: t for t in ExperimentAnalysis(f).trials})
    return ExperimentAnalysis(path, trials=list(trials.values()), default_metric=metric, default_mode=mode)


def all_results(path: str, metric: str, mode: str):
    """A ResultGrid (what Tuner.fit returns) over every trial of the experiment, earlier Tune runs included."""
    from ray.tune import ResultGrid

    return ResultGrid(experiment_analysis(path, metric, mode))


def load_experiment(path: str) -> Experiment:
    info = read_json(join(path, EXPERIMENT_FILE))
    try:
        analysis = experiment_analysis(path, info["metric"], info["mode"])
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as e:  # KeyError: a snapshot missing a field
        raise ReportError(f"{path} has experiment.json but no readable Tune state ({e})") from None
    curves = {tid: df for tid, df in analysis.trial_dataframes.items() if len(df) and info["metric"] in df}
    if not curves:
        raise ReportError(no_result_message(path, info))
    configs = {t.trial_id: dict(t.config) for t in analysis.trials}
    best = best_trial_id(curves, info["metric"], info["mode"])
    if best is None:
        raise ReportError(f"no trial of {path} has a finite {info['metric']}")
    return Experiment(path, info, analysis, curves, configs, best)


def no_result_message(path: str, info: dict) -> str:
    """Why an experiment without any reported epoch has nothing to report, for a search that ended (run_search
    recorded `finished_at`) and for one still running or interrupted."""
    if info.get("finished_at"):
        return (
            f"no trial of {path} reported a result: its search ended before any trial finished an epoch; run a new "
            "search with a longer --time-budget, fewer pixels or images (--image-size, --subset) or a GPU "
            "(experiment.json's plan says what an epoch costs)"
        )
    return (
        f"no trial of {path} reported a result yet: if its search is running, wait for a first epoch; if it was "
        f"stopped, continue it with: python run_search.py --resume --name {info.get('name', '<name>')}"
    )


# ---------------------------------------------------------------------------------------------------------------
# The one rule for "best": the lowest val_loss (highest val_acc with --metric val_acc) reached at ANY epoch — the
# epoch whose weights a retrain keeps. Ranking by the last report instead penalises every trial that went on past its
# best (a --patience stop is `patience` epochs past it by construction). run_search's summary, report.py,
# importance and the plots all use these two functions.


def best_report(df: pd.DataFrame, metric: str, mode: str) -> dict:
    """The row of one trial's reports with the best finite `metric` (the last row if none is finite)."""
    values = pd.to_numeric(df[metric], errors="coerce").where(lambda v: np.isfinite(v))
    if values.isna().all():
        return df.iloc[-1].to_dict()
    return df.loc[values.idxmin() if mode == "min" else values.idxmax()].to_dict()


def best_trial_id(curves: dict[str, pd.DataFrame], metric: str, mode: str) -> str | None:
    """The trial whose best epoch is best; None when no trial has a finite metric."""
    best, best_value = None, None
    for tid, df in curves.items():
        value = float(best_report(df, metric, mode)[metric])
        if not math.isfinite(value):
            continue
        if M.better(value, best_value, mode):
            best, best_value = tid, value
    return best


def asha_rungs(grace_period: int, reduction_factor: int, max_t: int) -> list[int]:
    """Epochs at which ASHA compares trials: grace * rf^k below max_t."""
    rungs, r = [], grace_period
    while r < max_t:
        rungs.append(r)
        r *= reduction_factor
    return rungs


# What a validation set of n images can resolve (docs/search.md, "Did the search beat its starting point?"): a
# difference counts only beyond RESOLVE_SE standard errors of one trial's metric. val_acc: binomial,
# sqrt(p(1-p)/n). val_loss: sd/sqrt(n), where sd, the spread of per-image cross-entropy (not recorded per trial), is
# taken as max(val_loss, LOSS_SD_FLOOR) nats: above every spread measured (docs/measurements.md).
RESOLVE_SE = 2.0
LOSS_SD_FLOOR = 1.2


def metric_standard_error(metric: str, value: float, n: int) -> float:
    """The standard error of one trial's `metric` measured on n validation images (see RESOLVE_SE above)."""
    if metric == M.VAL_ACC:
        p = min(max(value, 1 / n), 1 - 1 / n)  # a perfect or zero score still has the resolution of one image
        return math.sqrt(p * (1 - p) / n)
    return max(value, LOSS_SD_FLOOR) / math.sqrt(n)


DEFAULTS_LABEL = "the space's DEFAULTS"  # experiment.json's search.first_trial when nothing changed them


def versus_first_trial(
    configs: dict[str, dict],
    best: dict[str, float],
    first: dict | None,
    metric: str,
    mode: str,
    n_val: int | None = None,
    label: str | None = None,
) -> str | None:
    """Did the search beat the config it started from? One line comparing the first trial (found by its config
    `first`; `label` says what it was, experiment.json's search.first_trial: the space's DEFAULTS, or them as the
    plan changed them) with the best trial the searcher proposed, each at its best epoch; None without one.
    A verdict only when the difference exceeds what `n_val` validation images resolve (RESOLVE_SE standard errors);
    otherwise "no difference the validation set can show"."""
    if not first or len(best) < 2:
        return None

    def same(a, b) -> bool:
        return math.isclose(a, b, rel_tol=1e-9) if isinstance(a, float) or isinstance(b, float) else a == b

    first_ids = [t for t, c in configs.items() if t in best and all(k in c and same(c[k], v) for k, v in first.items())]
    if not first_ids:
        return None
    d = first_ids[0]
    pick = min if mode == "min" else max
    other = pick((t for t in best if t != d), key=lambda t: best[t])
    diff = abs(best[other] - best[d])
    pair = (
        f"best proposed trial {other} {metric} {best[other]:.4f} vs {best[d]:.4f} for the first trial {d} "
        f"({label or DEFAULTS_LABEL})"
    )
    if not n_val:
        return f"{pair}, a difference of {diff:.4f} (the validation set's size is not recorded: no verdict)"
    resolves = RESOLVE_SE * max(metric_standard_error(metric, best[t], n_val) for t in (d, other))
    scale = f"{RESOLVE_SE:g} standard errors on {n_val:,} validation images: {resolves:.4f}"
    if diff <= resolves:
        return f"no difference the validation set can show: {pair}, a difference of {diff:.4f}, within {scale}"
    beat = M.better(best[other], best[d], mode)
    verdict = "the search beat its starting point" if beat else "the search did not beat its starting point"
    return f"{verdict}: {pair}, a difference of {diff:.4f}, more than {scale}"
