"""The search's plan: what the time budget buys on the machine the trials run on, from measured cost.

Before the trials start, search_driver/epoch_cost.py measures what an epoch costs for each cost class of the space
(each combination of the searched values of COST_KEYS; the model and the stored image size are the search's own)
with the trial's own training step, per layout: how many trials run at once and with how many threads each. From
that table this module decides, in pure functions that tests drive with a fake table:

- the layout (`--cpus-per-trial`): one trial per core or one trial on every core, whichever brings the longer
  horizon within the budget, then the more trial-epochs;
- which cost classes the budget can afford (the space the searcher sees): a class is excluded when its first rung
  (grace epochs) takes more than a fair share of the budget, the trial-time in which `reduction_factor` trials reach
  the first rung (ASHA promotes one in reduction_factor; fewer, but at least one per slot, when even the cheapest
  class cannot bring that many there), or when its whole horizon would not fit in the budget;
- the horizon (`--max-epochs`: every trial's cosine and ASHA's max_t): the space's MAX_EPOCHS, or fewer when the
  budget's trial-time holds fewer than SEARCH_MULTIPLE horizons of the cheapest class that reaches a first rung, or
  one such horizon is more than FINISH_SHARE of the wall time;
- ASHA's rungs (`--grace-period` from the horizon, cli.default_grace, lowered until the cheapest class reaches it
  in the fair share);
- the first trial: the space's DEFAULTS, or, when their class is excluded, DEFAULTS with the fewest cost keys changed
  to an affordable class (the cheapest such).

Without --time-budget the plan only informs (the costs, and what the search's epochs would cost). Flags given on
the command line (--max-epochs, --grace-period, --cpus-per-trial, --max-concurrent) win over the plan.
"""

from __future__ import annotations

import itertools
import math
import textwrap
from dataclasses import dataclass, field

from search_driver.cli import UsageError, default_grace
from search_driver.epoch_cost import describe_class

COST_KEYS = ("stem", "batch_size", "resolution")  # keys whose value changes what an epoch costs
STARTUP_S = 10.0  # of the budget, before the first trial trains: worker start, imports, data from the object store
SEARCH_MULTIPLE = 2.5  # trial-time for 2.5 horizons: the first trial's, one more finisher, first rungs of the rest
FINISH_SHARE = 0.8  # one horizon fits in 80% of the wall time: a trial started in the first fifth still finishes
# A class is excluded only when it misses a limit by more than this factor: on a shared 2-core machine two probes of
# the same class differed by up to 2x, while the costs worth excluding (ResNet18's 3x3 stem on a CPU) miss by 5-10x.
EXCLUDE_MARGIN = 1.5
INFORM_LIMIT_S = 1800.0  # without a budget, a probe stops once its epoch is clearly longer than this
WIDTH = 120

Layout = tuple[int, float]  # (trials at once, CPUs = threads per trial)
Key = tuple  # a cost class: ((key, value), ...) in COST_KEYS order


class PlanError(UsageError):
    """Even the cheapest config cannot reach a first rung in the budget: one line, exit 2, before any trial."""


def class_key(config: dict) -> Key:
    return tuple((k, config[k]) for k in COST_KEYS if k in config)


def cost_classes(space: dict, defaults: dict, constants: dict) -> tuple[list[Key], Key]:
    """The space's cost classes (every combination of the searched values of COST_KEYS, constants as they are) and
    the class of the space's DEFAULTS."""
    from ray.tune.search.sample import Categorical, Domain

    fixed = {k: v for k, v in {**space, **constants}.items() if not isinstance(v, Domain)}
    values = {}
    for k in COST_KEYS:
        dom = space.get(k)
        if isinstance(dom, Categorical):
            values[k] = list(dom.categories)
        elif k in fixed:
            values[k] = [fixed[k]]
        elif k in defaults:  # a numeric range of a cost key: planned at its DEFAULTS value
            values[k] = [defaults[k]]
    keys = [tuple(zip(values, combo, strict=True)) for combo in itertools.product(*values.values())]
    return keys, class_key({**fixed, **defaults})


def layouts(cpus: float, cpus_per_trial: float | None, max_concurrent: int | None) -> list[Layout]:
    """The layouts to weigh on `cpus` CPUs: one trial per core and one trial on all of them, or what the given flags
    fix (a CPU count per trial, or a number of trials at once)."""
    cpus = max(1.0, float(cpus))
    if cpus_per_trial:
        k = max(1, int(cpus // cpus_per_trial))
        return [(min(k, max_concurrent) if max_concurrent else k, cpus_per_trial)]
    if max_concurrent:
        return [(max_concurrent, max(1, int(cpus // max_concurrent)))]
    return sorted({(int(cpus), 1), (1, int(cpus))})


# ---------------------------------------------------------------------------------------------------------------
# the arithmetic


@dataclass
class Choice:
    """What one layout buys."""

    layout: Layout
    max_epochs: int
    grace: int
    first: Key
    affordable: list[Key]
    fair_share_s: float  # trial-time in which `first_rung_trials` trials reach the first rung
    first_rung_trials: int
    trial_epochs: float  # the budget's trial-time in epochs of the first trial's class


@dataclass
class Plan:
    budget_s: float | None
    reduction_factor: int
    epoch_s: dict  # Layout -> Key -> seconds per epoch of one trial, with that many trials at once
    classes: list[Key]
    defaults: Key
    choice: Choice | None  # None without a budget: the plan informs
    kept: dict[str, list] = field(default_factory=dict)  # cost key -> values the searcher may still propose
    given: dict = field(default_factory=dict)  # flags the user gave, which win over the plan

    @property
    def excluded(self) -> list[Key]:
        return [c for c in self.classes if self.choice and not _in(c, self.kept)]

    @property
    def rungs(self) -> list[int]:
        from analysis.trials import asha_rungs

        c = self.choice
        return asha_rungs(c.grace, self.reduction_factor, c.max_epochs) if c else []


def _in(key: Key, kept: dict) -> bool:
    return all(v in kept.get(k, [v]) for k, v in key)


def choose(
    epoch_s: dict,
    classes: list[Key],
    defaults: Key,
    *,
    budget_s: float,
    space_max_epochs: int,
    reduction_factor: int,
    max_epochs: int | None = None,
    grace: int | None = None,
) -> Choice | None:
    """The best layout's Choice (the longest horizon, then the most trial-epochs), or None when no layout brings any
    class to a first rung. `max_epochs` / `grace`: given by the user, kept as they are."""
    choices = [
        c
        for lay in epoch_s
        if (
            c := choose_for(
                lay,
                epoch_s[lay],
                classes,
                defaults,
                budget_s=budget_s,
                space_max_epochs=space_max_epochs,
                reduction_factor=reduction_factor,
                max_epochs=max_epochs,
                grace=grace,
            )
        )
    ]
    return max(choices, key=lambda c: (c.max_epochs, c.trial_epochs, -c.layout[1]), default=None)


def choose_for(
    layout: Layout,
    cost: dict,
    classes: list[Key],
    defaults: Key,
    *,
    budget_s: float,
    space_max_epochs: int,
    reduction_factor: int,
    max_epochs: int | None = None,
    grace: int | None = None,
) -> Choice | None:
    """What `layout` buys: None when no class reaches a first rung in the fair share. The horizon is what the
    cheapest class affords; a class that cannot reach the first rung in the fair share, or finish that horizon in
    the budget, is not affordable."""
    budget = budget_s - STARTUP_S
    cheap = min(cost[c] for c in classes)
    reach = int(layout[0] * budget / ((grace or 1) * cheap))  # trials of the cheapest class that reach a first rung
    if reach < layout[0]:  # not even one per slot
        return None
    trials = min(reduction_factor, reach)
    fair = layout[0] * budget / trials
    horizon = max_epochs
    if horizon is None:
        horizon = min(
            space_max_epochs, int(layout[0] * budget / (SEARCH_MULTIPLE * cheap)), int(FINISH_SHARE * budget / cheap)
        )
        horizon = max(1, horizon)
    rung = grace or default_grace(horizon)
    while grace is None and rung > 1 and rung * cheap > fair:  # a first rung the cheapest class can reach
        rung -= 1
    affordable = [
        c
        for c in classes
        if rung * cost[c] <= fair * EXCLUDE_MARGIN
        and (max_epochs is not None or horizon * cost[c] <= budget * EXCLUDE_MARGIN)
    ]
    if not affordable:  # only a given grace or horizon can leave none
        return None
    first = defaults if defaults in affordable else nearest(defaults, affordable, cost)
    return Choice(layout, horizon, rung, first, affordable, fair, trials, layout[0] * budget / cost[first])


def nearest(target: Key, candidates: list[Key], cost: dict) -> Key:
    """The candidate with the fewest cost keys changed from `target`, the cheapest among those."""
    return min(candidates, key=lambda c: (sum(a != b for a, b in zip(c, target, strict=True)), cost[c]))


def kept_values(classes: list[Key], affordable: list[Key], first: Key, cost: dict) -> dict[str, list]:
    """Per cost key, the values the searcher may propose: every combination of them an affordable class. Greedily,
    from the costliest unaffordable combination left: drop one of its values (never the first trial's) that keeps the
    most affordable combinations."""
    kept = {}
    for key in classes:
        for k, v in key:
            kept.setdefault(k, [])
            if v not in kept[k]:
                kept[k].append(v)
    ok = set(affordable)
    while True:
        bad = [c for c in classes if _in(c, kept) and c not in ok]
        if not bad:
            return kept
        worst = max(bad, key=lambda c: cost[c])
        first_values = dict(first)
        options = [(k, v) for k, v in worst if v != first_values.get(k) and len(kept[k]) > 1]

        def left(option):
            k, v = option
            trial = {**kept, k: [x for x in kept[k] if x != v]}
            return sum(_in(c, trial) for c in ok)

        k, v = max(options, key=left)
        kept[k] = [x for x in kept[k] if x != v]


def make_plan(
    epoch_s: dict,
    classes: list[Key],
    defaults: Key,
    *,
    budget_s: float | None,
    space_max_epochs: int,
    reduction_factor: int,
    given: dict | None = None,
) -> Plan:
    """The plan for a measured table; PlanError (one line) when the budget brings no class to a first rung.
    `given`: flags set on the command line ({"max_epochs": 12, "grace_period": ..., ...})."""
    given = dict(given or {})
    plan = Plan(budget_s, reduction_factor, epoch_s, classes, defaults, None, given=given)
    if budget_s is None:
        return plan
    choice = choose(
        epoch_s,
        classes,
        defaults,
        budget_s=budget_s,
        space_max_epochs=space_max_epochs,
        reduction_factor=reduction_factor,
        max_epochs=given.get("max_epochs"),
        grace=given.get("grace_period"),
    )
    if choice is None:
        raise PlanError(infeasible_line(epoch_s, classes, budget_s, given.get("grace_period") or 1))
    plan.choice = choice
    plan.kept = kept_values(classes, choice.affordable, choice.first, epoch_s[choice.layout])
    return plan


def infeasible_line(epoch_s: dict, classes: list[Key], budget_s: float, grace: int) -> str:
    """What no layout affords, and the budget that would: the cheapest class's first rung, one trial per slot."""
    need = {lay: grace * min(cost[c] for c in classes) + STARTUP_S for lay, cost in epoch_s.items()}
    lay = min(need, key=need.get)
    cheapest = min(classes, key=lambda c: epoch_s[lay][c])
    epochs = f"{grace} epoch{'s' if grace > 1 else ''}"
    return (
        f"--time-budget {budget_s / 60:g} min cannot bring any config to its first rung here: the cheapest "
        f"({describe_class(cheapest)}) takes {_dur(epoch_s[lay][cheapest])} per epoch with {_layout(lay)}, and a "
        f"first rung is {epochs}; give --time-budget {math.ceil(need[lay] / 60)} or more, fewer pixels or images "
        "(--image-size, --subset), or a GPU"
    )


# ---------------------------------------------------------------------------------------------------------------
# what the plan says and records


def _dur(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _layout(lay: Layout) -> str:
    k, c = lay
    threads = f"{c:g} thread{'s' if c != 1 else ''}"
    return f"{k} trial{'s' if k != 1 else ''} at once x {threads}"


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, subsequent_indent="    ", break_on_hyphens=False)


def cost_line(plan: Plan, lay: Layout, at_least: list[Key] | None = None) -> str:
    """Every class's epoch with `lay` ("> " where the measurement stopped early: a lower bound)."""
    cost = plan.epoch_s[lay]
    return "; ".join(f"{describe_class(k)} {'>' if k in (at_least or []) else ''}{_dur(cost[k])}" for k in plan.classes)


def lines(
    plan: Plan,
    *,
    cpus: float,
    precision: str,
    images: str,
    measured_s: float,
    model: str,
    max_epochs: int,
    num_samples: int | None = None,
    at_least: list[Key] | None = None,
) -> list[str]:
    """The plan in a few lines of at most WIDTH columns. `max_epochs`, `num_samples`: the search's (for the line of
    a plan that only informs)."""
    c = plan.choice
    shown = c.layout if c else max(plan.epoch_s, key=lambda lay: lay[1])
    first = c.first if c else plan.defaults
    out = _wrap(
        f"plan: an epoch of {model} ({images}, {precision}) per trial with {_layout(shown)} on {cpus:g} CPUs, "
        f"measured in {measured_s:.0f} s:"
    )
    out += _wrap("  " + cost_line(plan, shown, at_least))
    for lay in plan.epoch_s:
        if lay != shown:
            ratio = plan.epoch_s[lay][first] / plan.epoch_s[shown][first]
            out += _wrap(f"  with {_layout(lay)}: {ratio:.2f}x that per trial ({describe_class(first)})")
    if c is None:
        tail = ""
        if num_samples and num_samples > 0:
            worst = max(plan.epoch_s[shown][k] for k in plan.classes)
            tail = f"; {num_samples} trials of up to {max_epochs} epochs take up to {_dur(num_samples * max_epochs * worst / shown[0])}"
        out += _wrap(f"  no --time-budget: the plan only informs, the search runs as its flags say{tail}")
        return out
    mine = " (your flags)" if {"cpus_per_trial", "max_concurrent"} & set(plan.given) else ""
    out += _wrap(
        f"  {plan.budget_s / 60:g} min buy ~{c.trial_epochs:.0f} trial-epochs of the first trial's class with "
        f"{_layout(c.layout)}{mine}; a fair share for a first rung is {_dur(c.fair_share_s)} of trial-time "
        f"({c.first_rung_trials} trials reach it)"
    )
    if plan.excluded:
        dropped = [f"{k} {v}" for k, vals in _all_values(plan.classes).items() for v in vals if v not in plan.kept[k]]
        costs = ", ".join(f"{describe_class(k)} {_dur(c.grace * plan.epoch_s[c.layout][k])}" for k in plan.excluded)
        out += _wrap(
            f"  excluded: {', '.join(dropped)} (a first rung of {c.grace} epoch{'s' if c.grace > 1 else ''} "
            f"takes {costs}; or the horizon would not fit the budget)"
        )
    else:
        out += _wrap("  excluded: nothing, every cost class is affordable")
    epochs = f"{c.max_epochs} epoch{'s' if c.max_epochs != 1 else ''}"
    whose = "your --max-epochs" if "max_epochs" in plan.given else "the budget"
    grace = " (your --grace-period)" if "grace_period" in plan.given else ""
    rungs = f"ASHA rungs at epochs {', '.join(map(str, plan.rungs))}{grace}" if plan.rungs else "no ASHA rung before it"
    if c.first == plan.defaults:
        start = "the space's DEFAULTS"
    else:
        start = f"DEFAULTS with {describe_class(_changed(plan.defaults, c.first))} (theirs are excluded)"
    out += _wrap(
        f"  horizon {epochs} ({whose}'s), {rungs} (reduction factor {plan.reduction_factor}); first trial: {start}"
    )
    # one trial alone: as fast per trial as the faster layout here (report.py picks its threads by the load)
    alone = min(plan.epoch_s, key=lambda lay: plan.epoch_s[lay][c.first])
    retrain = c.max_epochs * plan.epoch_s[alone][c.first]
    out += _wrap(
        f"  report.py: retrain ~{_dur(retrain)} ({alone[1]:g} thread{'s' if alone[1] != 1 else ''}) + refit; over "
        f"{_dur(plan.budget_s / 2)} (half the budget): the winner's weights, no refit"
    )
    return out


def _changed(a: Key, b: Key) -> Key:
    return tuple((k, v) for (k, v), (_, w) in zip(b, a, strict=True) if v != w)


def _all_values(classes: list[Key]) -> dict[str, list]:
    values = {}
    for key in classes:
        for k, v in key:
            values.setdefault(k, [])
            if v not in values[k]:
                values[k].append(v)
    return values


def record(plan: Plan, measured: dict, printed: list[str], applied: dict) -> dict:
    """experiment.json's "plan": the measured costs, the choice, what was excluded and what it changed."""
    c = plan.choice
    rows = []
    for key in plan.classes:
        rows.append(
            {
                "class": dict(key),
                "epoch_s": {f"{lay[0]}x{lay[1]:g}": round(cost[key], 2) for lay, cost in plan.epoch_s.items()},
                "excluded": key in plan.excluded,
            }
        )
    out = {
        "budget_min": None if plan.budget_s is None else plan.budget_s / 60,
        "measured": measured,
        "classes": rows,
        "given_flags": sorted(plan.given),
        "lines": printed,
        "applied": applied,
    }
    if c:
        out.update(
            layout={"trials_at_once": c.layout[0], "cpus_per_trial": c.layout[1]},
            max_epochs=c.max_epochs,
            grace_period=c.grace,
            reduction_factor=plan.reduction_factor,
            rungs=plan.rungs,
            fair_share_s=round(c.fair_share_s, 1),
            first_rung_trials=c.first_rung_trials,
            trial_epochs=round(c.trial_epochs, 1),
            kept=plan.kept,
            first_trial_class=dict(c.first),
            defaults_class=dict(plan.defaults),
        )
    return out


# ---------------------------------------------------------------------------------------------------------------
# the search's plan: measure, decide, apply, record

PLANNED_FLAGS = ("max_epochs", "grace_period", "cpus_per_trial", "max_concurrent")


def plan_search(args, space: dict, defaults: dict, constants: dict, data: dict, given: set[str]) -> dict | None:
    """Measure, plan and (with --time-budget) apply the plan to `space` and `defaults` in place; returns
    experiment.json's "plan" (None under --smoke-test: nothing to plan for seconds of tiny data). PlanError when the
    budget brings no config to a first rung."""
    import ray
    from ray.tune.search.sample import Domain

    from search_driver import epoch_cost
    from trainables.framework import framework_of

    if args.smoke_test:
        return None
    gpu = 0.0 if args.train_on_cpu else float(args.gpus_per_trial)
    resources = ray.cluster_resources()
    cpus = float(resources.get("CPU", 1))
    mine = {k: getattr(args, k) for k in PLANNED_FLAGS if k in given}
    budget_s = args.time_budget * 60 if args.time_budget else None
    if budget_s is not None and budget_s <= STARTUP_S:
        raise PlanError(
            f"--time-budget {args.time_budget:g} min is less than a search's start-up (about "
            f"{STARTUP_S:.0f} s); give --time-budget 1 or more"
        )
    if args.address or gpu or budget_s is None:  # the layout the flags give: measured, not chosen
        k = int(cpus // args.cpus_per_trial)
        if gpu:
            k = min(k, int(resources.get("GPU", 0) // gpu) or 1)
        options = [(max(1, min(k, args.max_concurrent or k)), args.cpus_per_trial)]
    else:  # a local CPU search with a budget: one trial per core, or one on all cores
        options = layouts(cpus, mine.get("cpus_per_trial"), mine.get("max_concurrent"))
    classes, default_class = cost_classes(space, defaults, constants)
    base = {k: v for k, v in space.items() if not isinstance(v, Domain)} | defaults | constants
    # an epoch longer than the budget reaches no first rung; without one, past half an hour it is only "> 30 min"
    hopeless = budget_s - STARTUP_S if budget_s else INFORM_LIMIT_S
    n = f"{len(classes)} config{'s' if len(classes) > 1 else ''}"
    print(f"plan: measuring what an epoch costs here ({n}, the trial's own training step)...", flush=True)
    m = epoch_cost.measure(
        framework_of(args.model).name,
        classes,
        default_class,
        base,
        data,
        options,
        gpu_fraction=gpu,
        device=constants.get("device"),
        hopeless_s=hopeless,
        show=epoch_cost.stderr_show,
    )
    epoch_cost.stderr_show("")
    plan = make_plan(
        m.epoch_s,
        classes,
        default_class,
        budget_s=budget_s,
        space_max_epochs=args.max_epochs,
        reduction_factor=args.reduction_factor,
        given={k: v for k, v in mine.items() if v is not None},
    )
    images = f"{len(data['y_train']):,} training + {len(data['y_val']):,} validation images"
    printed = lines(
        plan,
        cpus=cpus,
        precision=m.precision,
        images=images,
        measured_s=m.seconds,
        model=args.model,
        max_epochs=args.max_epochs,
        num_samples=args.num_samples,
        at_least=m.at_least,
    )
    print("\n".join(printed), flush=True)
    applied = apply(plan, args, space, defaults, given) if plan.choice else {}
    return record(plan, m.record, printed, applied)


SETTINGS = ("max_epochs", "grace_period", "cpus_per_trial")  # what the plan decides that is a flag


def settings_changes(record: dict) -> dict:
    """The flags a plan (experiment.json's "plan") changed, for Settings.changed."""
    return {k: after for k, (_, after) in record.get("applied", {}).items() if k in SETTINGS}


def apply(plan: Plan, args, space: dict, defaults: dict, given: set[str]) -> dict:
    """The plan's decisions into the search space and first trial (flags given on the command line stay): the
    searched values of the cost keys, the first trial; and, returned for the settings, the horizon, rungs and CPUs
    per trial. Returns {what: [before, after]}."""
    from ray import tune

    c, changed = plan.choice, {}
    for name, value in zip(SETTINGS, (c.max_epochs, c.grace, c.layout[1]), strict=True):
        if name not in given and getattr(args, name) != value:
            changed[name] = [getattr(args, name), value]
    for key, values in plan.kept.items():
        before = list(space[key].categories) if hasattr(space.get(key), "categories") else None
        if before is None or values == before:
            continue
        changed[key] = [before, values]
        if len(values) == 1:
            space[key] = values[0]  # a constant now: Optuna's first point must name searched keys only
            defaults.pop(key, None)
        else:
            space[key] = tune.choice(values)
    for key, value in c.first:
        if key in defaults and defaults[key] != value:
            changed[f"first trial {key}"] = [defaults[key], value]
            defaults[key] = value
    return changed
