"""Hyperparameter importance with Optuna's evaluator, over a study rebuilt from the trials' configs and results.

The searcher's own study lives inside Ray's pickled searcher state; rebuilding it from result.json works for every
experiment (also ones whose searcher state is gone) and uses exactly the final metric the report shows.
"""

from __future__ import annotations

import math

import pandas as pd


def distributions(space: dict) -> dict:
    """Optuna distributions from experiment.json's search-space description (search_spaces.describe)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for key, spec in space.items():
        if spec["type"] == "choice":
            out[key] = CategoricalDistribution(spec["values"])
        elif spec["type"] == "float":
            out[key] = FloatDistribution(spec["lower"], spec["upper"], log=spec["log"])
        elif spec["type"] == "int":
            out[key] = IntDistribution(spec["lower"], spec["upper"], log=spec["log"])
    return out


def rebuild_study(finals: pd.DataFrame, space: dict, metric: str, mode: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = distributions(space)
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    for _, row in finals.iterrows():
        value = row.get(metric)
        if value is None or not math.isfinite(float(value)):
            continue  # diverged trials carry no information about the shape of the good region
        params = {k: _native(row[f"config/{k}"]) for k in dists if f"config/{k}" in row}
        try:
            trial = optuna.trial.create_trial(
                params=params, distributions={k: dists[k] for k in params}, value=float(value)
            )
        except ValueError:  # a value outside today's space (the space module changed since the search)
            continue
        study.add_trial(trial)
    return study


def importances(results: pd.DataFrame, space: dict, metric: str, mode: str, when: str) -> tuple[dict | None, str]:
    """({param: importance}, note). None with the reason when there are too few trials to say anything.

    `results`: one row per trial (its metric and config/ columns); `when` says which epoch the metric is from.
    """
    import optuna

    study = rebuild_study(results, space, metric, mode)
    n = len(study.trials)
    if n < 3:
        return None, f"{n} trial(s) with a finite {metric}: importance needs at least 3"
    try:
        result = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as e:
        return None, f"Optuna could not compute importances ({e})"
    note = f"from {n} trials' {metric} {when}" + ("; few trials: treat as a hint" if n < 10 else "")
    return dict(result), note


def _native(v):
    """numpy scalars from pandas -> Python values that Optuna's distributions compare equal to."""
    if hasattr(v, "item"):
        v = v.item()
    return v
