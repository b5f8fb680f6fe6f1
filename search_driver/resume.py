"""`--resume [NAME]`: which experiment (the latest unfinished one when no name is given), whether it is continued or
extended, which flags may change, and how a new --max-failures reaches a restored experiment.

Unfinished: run_search.py records `finished_at` in experiment.json when Tune's run ends on its own (all trials
done or stopped, or the time budget spent). An experiment without it, whose newest Tune snapshot
(experiment_state-*.json) lists a trial that is pending, running or paused, or fewer trials than --num-samples,
is unfinished: the driver was interrupted or killed. Errored trials count as ended (an explicit
`--resume NAME` still retries them).

Unfinished experiments are continued with Tune's Tuner.restore. A finished one given a new --time-budget or
--num-samples is extended (search_driver/extend.py); a finished one given neither, with no errored trial to retry,
is refused in one line that says how to extend it.

Flags on resume: Tune restores the experiment as it was pickled (searcher, scheduler, stopper, run config), so only
what does not define the search may change. --max-failures: Ray offers no way to change it on restore (each trial
keeps the limit it was created with), so a Tune callback every search carries (max_failures_callback) sets every
trial's limit to the value the resume recorded; failures count per trial over the whole experiment, before and
after the resume. --time-budget: Tune restores the budget that was
left from its snapshot and offers no way to replace it, so a different value is refused until the experiment has
finished; then it is an extension's budget.
"""

from __future__ import annotations

import json
import shlex
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from analysis.experiment import EXPERIMENT_FILE, exists, filesystem, join, read_json, write_json

# May differ from the experiment's saved arguments: where and on what it runs, how failures are retried.
CHANGEABLE = {"resume", "name", "storage_path", "address", "num_cpus", "local_gpus", "cache_dir", "max_failures"}
BUDGET = {"time_budget", "num_samples"}  # an extension's own: how much more to search
PATH_FLAGS = {"data_dir", "weights"}  # compared as resolved paths
NOT_RESUMABLE_WHY = {
    "time_budget": "Tune restores the budget left from its snapshot and cannot replace it",
}
ENDED = {"TERMINATED", "ERROR"}


class ResumeError(Exception):
    """--resume cannot go ahead: one line saying why and what to do."""


@dataclass
class Progress:
    trials: int  # in the Tune snapshot
    finished: int  # TERMINATED
    errored: int
    num_samples: int  # of the current part (the search, or its latest extension); -1: no cap
    marked_finished: bool  # run_search recorded finished_at
    started: int = 0  # RUNNING or PAUSED in the snapshot: stopped mid-way by the interrupt, continued by --resume

    @property
    def unfinished(self) -> bool:
        return not self.marked_finished and (
            self.trials < self.num_samples or self.finished + self.errored < self.trials
        )

    def counts(self) -> str:
        """As the console's status line counts them (trial_counts): not started = pending in the snapshot, or not
        created yet (of --num-samples; a search under a time budget has no such number)."""
        capped = self.num_samples > 0
        created = self.trials - self.finished - self.errored - self.started
        not_started = created + (max(0, self.num_samples - self.trials) if capped else 0)
        return trial_counts(
            self.finished, self.errored, self.started, not_started, self.num_samples if capped else None
        )


def trial_counts(
    done: int, errors: int, stopped: int, not_started: int, of: int | None = None, running: int | None = None
) -> str:
    """The one wording of trial counts, for the status line and the interrupt summary alike:
    '1 running, 3 done, 0 errors, 2 stopped mid-way, 2 not started (of 8)'."""
    parts = [f"{running} running"] if running is not None else []
    parts += [f"{done} done", f"{errors} errors"]
    if stopped:
        parts.append(f"{stopped} stopped mid-way")
    if of is not None or not_started:
        parts.append(f"{not_started} not started")
    return ", ".join(parts) + (f" (of {of})" if of is not None else "")


def tune_state(path: str) -> dict | None:
    """The newest experiment_state-*.json of an experiment folder (local or URI), or None if Tune wrote none."""
    fs, root = filesystem(path)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=False))
    except (FileNotFoundError, OSError):
        return None
    states = sorted(
        i.path for i in infos if i.base_name.startswith("experiment_state-") and i.base_name.endswith(".json")
    )
    if not states:
        return None
    with fs.open_input_stream(states[-1]) as f:
        return json.loads(f.read().decode())


def progress(path: str, info: dict | None = None) -> Progress | None:
    """Trials finished / errored / in the snapshot, or None without a Tune snapshot (nothing to resume)."""
    state = tune_state(path)
    if state is None:
        return None
    info = info or read_json(join(path, EXPERIMENT_FILE))
    statuses = [json.loads(t)["status"] for t, _ in state["trial_data"]]
    extensions = info.get("extensions") or []  # an extension is a Tune run of its own: its snapshot, its budget
    num_samples = (extensions[-1]["num_samples"] or -1) if extensions else info["args"]["num_samples"]
    return Progress(
        trials=len(statuses),
        finished=statuses.count("TERMINATED"),
        errored=statuses.count("ERROR"),
        num_samples=int(num_samples),
        marked_finished="finished_at" in info,
        started=statuses.count("RUNNING") + statuses.count("PAUSED"),
    )


def _started(info: dict) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(info.get("started_at", 0)))


def choose_experiment(storage_path: str, name: str | None) -> tuple[str, str]:
    """(name, a line saying what is resumed). No name: the most recently started unfinished experiment."""
    from analysis.trials import list_experiments  # imports pandas: only when resuming

    names = list_experiments(storage_path)
    if name is not None:
        if name not in names:
            known = ", ".join(names[-10:]) or "none"
            raise ResumeError(f"no experiment {name!r} to resume under {storage_path}; experiments there: {known}")
        candidates = [name]
    else:
        if not names:
            raise ResumeError(
                f"no experiments under {storage_path} to resume; start one with run_search.py --model ..."
            )
        candidates = sorted(names, key=lambda n: _info(storage_path, n).get("started_at", 0), reverse=True)
    for n in candidates:
        info = _info(storage_path, n)
        p = progress(join(storage_path, n), info)
        if name is not None or (p is not None and p.unfinished):
            done = f"trials {p.counts()}" if p else "no Tune state yet"
            return n, textwrap.fill(f"resuming {n} (started {_started(info)}): {done}", 120, subsequent_indent="  ")
    raise ResumeError(
        f"no unfinished experiment under {storage_path} (latest: {candidates[0]}, finished); "
        f"to extend it: {extend_command(candidates[0])}"
    )


def extend_command(name: str) -> str:
    from analysis.shell import command

    return command("run_search.py", "--resume", shlex.quote(name), "--time-budget MINUTES") + " (or --num-samples N)"


def extends(path: str, info: dict, args, given: set[str]) -> bool:
    """Whether this --resume extends the experiment at `path` (True) or continues it (False). A finished experiment
    is extended when a budget flag is given; an unfinished one only continues, with the budget it has left: a new
    budget for it is one line."""
    p = progress(path, info)
    if p is not None and not p.unfinished:
        return bool(given & BUDGET)
    budget = sorted(f"--{d.replace('_', '-')}" for d in given & BUDGET if getattr(args, d) != info["args"].get(d))
    if budget:
        name = path.rstrip("/").rsplit("/", 1)[-1]
        from analysis.shell import command

        state = f"trials {p.counts()}" if p else "no Tune state yet"
        again = command("run_search.py", "--resume", shlex.quote(name))
        raise ResumeError(
            f"{name} is not finished ({state}): `{again}` continues it with the budget it has left; "
            f"{' and '.join(budget)} can extend it once it has finished"
        )
    return False


def check_something_to_do(path: str, info: dict) -> None:
    """A finished experiment resumed without a new budget: one line saying so and how to extend it, unless it has
    errored trials (Tune's restore retries them)."""
    p = progress(path, info)
    if p is not None and not p.unfinished and not p.errored:
        name = path.rstrip("/").rsplit("/", 1)[-1]
        raise ResumeError(f"{name} is finished (trials {p.counts()}); to extend it: {extend_command(name)}")


def _info(storage_path: str, name: str) -> dict:
    return read_json(join(storage_path, name, EXPERIMENT_FILE))


def check_flags(saved: dict, args, given: set[str], changeable: set[str] = frozenset()) -> None:
    """Flags given on the command line that differ from the experiment's own (and may not: CHANGEABLE, and here
    `changeable`): one line naming them all."""
    fixed, budget = [], []
    for dest in sorted(given - CHANGEABLE - changeable):
        new, old = getattr(args, dest, None), saved.get(dest)
        if _same(dest, new, old):
            continue
        flag = "--" + dest.replace("_", "-")
        (budget if dest in NOT_RESUMABLE_WHY else fixed).append(f"{flag} {old} (given: {new})")
    if fixed or budget:
        why = "; ".join(f"{d.replace('_', '-')}: {w}" for d, w in NOT_RESUMABLE_WHY.items() if budget)
        raise ResumeError(
            f"cannot change on resume, the experiment was started with: {', '.join(fixed + budget)}"
            + (f" ({why})" if why else "")
            + "; drop them (the saved values are used), or start a new experiment with another --name"
        )


def _same(dest: str, new, old) -> bool:
    if dest in PATH_FLAGS and new is not None and old is not None:
        return Path(str(new)).expanduser().resolve() == Path(str(old)).expanduser().resolve()
    return new == old


def effective_max_failures(info: dict, args, given: set[str]) -> int:
    """This call's --max-failures if given, else the last one used on this experiment."""
    if "max_failures" in given:
        return args.max_failures
    resumes = info.get("resumes") or []
    return int(resumes[-1]["max_failures"] if resumes else info["args"].get("max_failures", 0))


def record(path: str, **fields) -> None:
    """Add fields to experiment.json (finished_at, also the latest extension's) or append to its `resumes` list
    (resume=dict) or its `extensions` list (extension=dict)."""
    info_path = join(path, EXPERIMENT_FILE)
    if not exists(info_path):
        return
    info = read_json(info_path)
    for key in ("resume", "extension"):
        entry = fields.pop(key, None)
        if entry is not None:
            info.setdefault(f"{key}s", []).append(entry)
            info.pop("finished_at", None)  # running again: finished only when this run ends
    if "finished_at" in fields and info.get("extensions"):
        info["extensions"][-1]["finished_at"] = fields["finished_at"]
    info.update(fields)
    write_json(info_path, info)


def max_failures_callback(experiment_path: str):
    """In every search's callbacks (build_tuner), so that tuner.pkl holds it: a --resume's --max-failures reaches the
    restored run through it (see MaxFailures)."""
    from ray import tune

    class MaxFailures(tune.Callback):
        """Tune keeps the failure limit each trial was created with, restores it from the snapshot and offers no way
        to change it on restore. When a run starts (setup), this takes the limit of a --resume recorded in
        experiment.json after the Tuner was created, and sets it on every trial at each step; a new search or an
        extension (a new Tuner) keeps its own FailureConfig."""

        def __init__(self):
            self.path, self.created_at, self.limit = experiment_path, time.time(), None

        def setup(self, **info):
            resumes = _read(self.path).get("resumes") or []
            later = [r for r in resumes if r.get("at", 0) > self.created_at]
            self.limit = int(later[-1]["max_failures"]) if later else None

        def on_step_begin(self, iteration, trials, **info):
            if self.limit is not None:
                for trial in trials:
                    trial.max_failures = self.limit

    return MaxFailures()


def _read(path: str) -> dict:
    info_path = join(path, EXPERIMENT_FILE)
    return read_json(info_path) if exists(info_path) else {}
