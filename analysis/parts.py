"""An experiment's parts: the first search, then each extension of it (search_driver/extend.py), with the trials and
the minutes that came from each; and the warm start it began from (search_driver/warm_start.py). The end-of-search
summary and report.md say both.

experiment.json's `extensions` list records, for each extension, the trials the experiment held when it began
(`earlier_trials`), so a trial belongs to the first part that did not know it. Minutes are the part's wall time as
its trials' results show it (the first start to the last report), like the report's "search wall time".
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

SHOWN_DROPPED = 3  # dropped warm-start trials named on the console; experiment.json names them all


@dataclass
class Part:
    number: int
    kind: str  # "search" or "extension"
    budget_min: float | None  # its --time-budget
    trial_ids: list[str]
    minutes: float

    def line(self) -> str:
        budget = f", {self.budget_min:g} min budget" if self.budget_min else ""
        n = len(self.trial_ids)
        return f"part {self.number} ({self.kind}{budget}): {n} trial{'' if n == 1 else 's'}, {self.minutes:.1f} min"


def minutes(curves: dict[str, pd.DataFrame], ids) -> float:
    """Wall minutes from the first start to the last report of these trials (0 when none reported)."""
    spans = [
        (df["timestamp"].iloc[0] - df["time_this_iter_s"].iloc[0], df["timestamp"].iloc[-1])
        for tid in ids
        if (df := curves.get(tid)) is not None and len(df) and {"timestamp", "time_this_iter_s"} <= set(df)
    ]
    return float(max(e for _, e in spans) - min(s for s, _ in spans)) / 60 if spans else 0.0


def parts(info: dict, curves: dict[str, pd.DataFrame], trial_ids) -> list[Part]:
    """The parts of an experiment, in order; `trial_ids`: all of its trials (reported or not)."""
    extensions = info.get("extensions") or []
    known = [set(e["earlier_trials"]) for e in extensions]
    everything = set(trial_ids).union(*known)
    bounds = [set(), *known, everything]  # the trials known before each part began, then all of them
    budgets = [(info.get("search") or {}).get("time_budget_min"), *(e.get("time_budget_min") for e in extensions)]
    out = []
    for i, budget in enumerate(budgets):
        ids = sorted(bounds[i + 1] - bounds[i])
        out.append(Part(i + 1, "search" if i == 0 else "extension", budget, ids, minutes(curves, ids)))
    return out


def parts_line(info: dict, curves: dict[str, pd.DataFrame], trial_ids) -> str | None:
    """One line for an extended experiment ("part 1 (search): 12 trials, 10.2 min; part 2 ..."), else None."""
    if not info.get("extensions"):
        return None
    return "; ".join(p.line() for p in parts(info, curves, trial_ids))


def console_lines(head: str, parts_: list[Part]) -> list[str]:
    """`head` then one part per line, aligned under the first ("Extended search: part 1 ...")."""
    return [f"{head if i == 0 else ' ' * len(head)}{p.line()}" for i, p in enumerate(parts_)]


def results_curves(results) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """(trial id -> its reports, every trial id) of a Tune ResultGrid."""
    curves, ids = {}, []
    for r in results:
        tid = r.path.rstrip("/").rsplit("/", 1)[-1].removeprefix("trial_")
        ids.append(tid)
        if r.metrics_dataframe is not None:
            curves[tid] = r.metrics_dataframe
    return curves, ids


def warm_start_words(ws: dict, shown: int = SHOWN_DROPPED) -> str:
    """What a warm start took from the old experiment and what it dropped (the first `shown` named)."""
    n = len(ws["dropped"])
    text = (
        f"{ws['evidence']} of its {ws['old_trials']} trials as evidence for TPE, its top {len(ws['first_trials'])} "
        f"config{'' if len(ws['first_trials']) == 1 else 's'} first; {n} dropped"
    )
    if n:
        named = ", ".join(f"{d['trial']} ({d['why']})" for d in ws["dropped"][:shown])
        text += f" (not in the new space): {named}" + (f" and {n - shown} more" if n > shown else "")
    return text


def report_lines(exp) -> list[str]:
    """report.md's bullet lines: where the search was warm-started from, and its parts."""
    lines = []
    if ws := exp.info.get("warm_start"):
        lines.append(f"- warm-started from `{ws['from']}`: {warm_start_words(ws, shown=len(ws['dropped']))}")
    line = parts_line(exp.info, exp.curves, [t.trial_id for t in exp.analysis.trials])
    if line:
        lines.append(f"- extended: {line}")
    return lines
