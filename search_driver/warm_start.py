"""`--warm-start NAME`: a new experiment (new data, another --image-size, a changed space) whose Optuna TPE starts
from a finished experiment's study instead of from nothing.

- Evidence: the old study's trials go into the new, empty study through Optuna's public API
  (`optuna.trial.create_trial` with each trial's state, value and intermediate values, then `study.add_trials`), so
  TPE's first proposal already knows them. Only trials whose config is a point of the new space go in: every
  searched key present and inside its new range, every key the new space fixes at the value it fixes it at. The
  rest are counted and named with the reason (experiment.json `warm_start.dropped`), as are trials that failed or
  never finished (no value).
- First trials: the old best configs (TOP_K, by the value the study holds for each: its best epoch) are enqueued as
  the new search's first trials, in place of the space's DEFAULTS (already among the evidence).
- The old experiment is only read: its journal is copied to a temporary folder and opened there (Optuna's journal
  backend may create a lock file beside the file it opens); nothing else of it is opened for writing.

The values carry over as they are. New data or a new image size changes what a config scores; TPE only splits
trials into its better and worse ones by value, so old values on another scale weigh on that split until the new
trials outnumber them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from dataclasses import dataclass

from search_driver.cli import UsageError

TOP_K = 3  # old best configs run first
FROM, TRIAL = "warm_start_from", "warm_start_trial"  # user attributes of the evidence trials in the new study


@dataclass
class WarmStart:
    evidence: list  # optuna FrozenTrials, for the new study
    first: list[dict]  # the new search's first configs
    record: dict  # experiment.json's `warm_start`


def source(args) -> tuple[str, dict]:
    """The old experiment's (path, experiment.json), checked against this search before anything loads: an unknown
    NAME, another model, another metric or no Optuna study is one line each."""
    from analysis.experiment import EXPERIMENT_FILE, exists, is_uri, join, normalize_storage_path, read_json
    from analysis.trials import list_experiments
    from search_driver.tracking import STUDY_FILE

    which = args.warm_start
    local = "/" in which or which.startswith(".")
    path = normalize_storage_path(which) if is_uri(which) or local else join(args.storage_path, which)
    if not exists(join(path, EXPERIMENT_FILE)):
        known = ", ".join(list_experiments(args.storage_path)[-10:]) or "none"
        raise UsageError(
            f"no experiment {which!r} to warm-start from under {args.storage_path}; experiments there: {known}"
        )
    info = read_json(join(path, EXPERIMENT_FILE))
    old = path.rstrip("/").rsplit("/", 1)[-1]
    model = info.get("model") or info["args"].get("model")
    if model != args.model:
        raise UsageError(
            f"{old} searched {model}, this search {args.model}: warm-start from an experiment of the same model "
            f"(--model {model}), or start without --warm-start"
        )
    metric = info.get("metric") or info["args"].get("metric", "val_loss")
    if metric != args.metric:
        raise UsageError(
            f"{old} searched {metric}, this search {args.metric}: its values do not compare; give --metric {metric}"
        )
    if is_uri(path) or not os.path.exists(join(path, STUDY_FILE)):
        raise UsageError(
            f"{old} has no Optuna study ({STUDY_FILE}) to start from: it ran --searcher random, or on remote storage"
        )
    return path, info


def old_trials(path: str, info: dict) -> list:
    """The old study's trials (FrozenTrials), read from a copy of its journal."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from search_driver.tracking import STUDY_FILE

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="warm-start-") as tmp:
        copy = os.path.join(tmp, STUDY_FILE)
        shutil.copyfile(os.path.join(path, STUDY_FILE), copy)
        storage = JournalStorage(JournalFileBackend(copy))
        names = optuna.get_all_study_names(storage)
        if not names:
            return []
        name = info.get("name") if info.get("name") in names else names[0]
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=True)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _contains(dist, value) -> bool:
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return any(type(value) is type(c) and value == c for c in dist.choices)  # True is not the choice 1
    if not isinstance(value, int | float) or isinstance(value, bool) or not dist.low <= value <= dist.high:
        return False
    steps = (value - dist.low) / dist.step if dist.step else 0
    return abs(steps - round(steps)) < 1e-6


def _outside(key: str, dist, value) -> str:
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return f"{key} {_fmt(value)} not among {', '.join(map(_fmt, dist.choices))}"
    return f"{key} {_fmt(value)} outside [{_fmt(dist.low)}, {_fmt(dist.high)}]"


def misfit(trial, dists: dict, fixed: dict) -> str | None:
    """Why an old trial cannot be evidence in the new space, or None when it can."""
    from optuna.trial import TrialState

    if trial.state == TrialState.FAIL:
        return "failed: no value"
    if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED) or trial.value is None:
        return f"{trial.state.name.lower()}: no value"
    params = trial.params
    for key, dist in dists.items():
        if key not in params:
            return f"no {key} (searched now)"
        if not _contains(dist, params[key]):
            return _outside(key, dist, params[key])
    for key, value in params.items():
        if key in dists:
            continue
        if key not in fixed:
            return f"{key} is not in the space now"
        if value != fixed[key]:
            return f"{key} {_fmt(value)}, fixed at {_fmt(fixed[key])} now"
    return None


def fit_evidence(trials: list, space: dict, old: str) -> tuple[list, list[tuple[str, str]]]:
    """(the trials that fit `space` as new FrozenTrials, [(name, why)] of the rest). `space`: the new search's Tune
    space; a space that shares no searched key with the old trials is one line."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch
    from ray.tune.search.sample import Domain

    from search_driver.optuna_searcher import TUNE_TRIAL_ID

    searched = {k: v for k, v in space.items() if isinstance(v, Domain)}
    fixed = {k: v for k, v in space.items() if not isinstance(v, Domain)}
    dists = OptunaSearch.convert_search_space(searched)  # as the searcher converts it (public static method)
    old_keys = set().union(*(t.params for t in trials))
    if old_keys and not old_keys & set(dists):
        raise UsageError(
            f"this search space shares no searched key with {old}'s (then: {', '.join(sorted(old_keys))}; now: "
            f"{', '.join(sorted(dists))}): nothing to warm-start from; start without --warm-start"
        )
    evidence, dropped = [], []
    for t in trials:
        name = f"trial_{t.user_attrs[TUNE_TRIAL_ID]}" if TUNE_TRIAL_ID in t.user_attrs else f"study trial {t.number}"
        why = misfit(t, dists, fixed)
        if why is None:
            try:
                evidence.append(
                    optuna.trial.create_trial(
                        state=t.state,
                        value=t.value,
                        params={k: t.params[k] for k in dists},
                        distributions=dists,
                        intermediate_values=t.intermediate_values,
                        user_attrs={FROM: old, TRIAL: name},
                    )
                )
                continue
            except ValueError as e:  # Optuna's own check disagrees with ours: trust it
                why = str(e).split(".")[0]
        dropped.append((name, why))
    return evidence, dropped


def top_configs(evidence: list, mode: str, k: int = TOP_K) -> list[dict]:
    """The k best distinct configs of the evidence, best first (each trial's value: its best epoch's)."""
    ranked = sorted(evidence, key=lambda t: t.value if mode == "min" else -t.value)
    out = []
    for t in ranked:
        if dict(t.params) not in out:
            out.append(dict(t.params))
        if len(out) == k:
            break
    return out


def prepare(args, space: dict, old_path: str, old_info: dict) -> WarmStart:
    """The evidence and the first configs for a search over `space` (Tune domains and constants), said in a line."""
    from analysis.parts import warm_start_words
    from trainables.metric_names import SEARCH_METRICS

    old = old_path.rstrip("/").rsplit("/", 1)[-1]
    trials = old_trials(old_path, old_info)
    if not trials:
        raise UsageError(f"{old}'s study holds no trials: nothing to warm-start from; start without --warm-start")
    evidence, dropped = fit_evidence(trials, space, old)
    if not evidence:
        first = f" (e.g. {dropped[0][0]}: {dropped[0][1]})" if dropped else ""
        raise UsageError(
            f"none of {old}'s {len(trials)} trials fits this search space{first}: nothing to "
            "warm-start from; start without --warm-start"
        )
    first = top_configs(evidence, SEARCH_METRICS[args.metric])
    record = {
        "from": old,
        "path": old_path,
        "old_trials": len(trials),
        "evidence": len(evidence),
        "first_trials": first,
        "dropped": [{"trial": n, "why": w} for n, w in dropped],
    }
    print(textwrap.fill(f"warm start from {old}: {warm_start_words(record)}", 120, subsequent_indent="    "))
    return WarmStart(evidence, first, record)
