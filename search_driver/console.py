"""The search's console: short lines that fit 120 columns, instead of Ray's table with a column per config key.

    [00:12] start trial_3f2a9c1d  lr=0.0021 batch_size=64 optimizer=adamw dropout=0.435
    [00:15] trial_3f2a9c1d epoch  2/20  val_loss 0.9932  val_acc 0.6667  train_loss 1.0414  4066 img/s
    [00:30] trials 2 running, 5 done, 0 errors, 3 not started (of 10) | best val_loss 0.9932 (trial_3f2a9c1d,
            epoch 2) | 12.4 min left of 15
    [01:00] trial_3f2a9c1d in epoch  3/20: batch 120/351, 2.41 batches/s, epoch ETA 1:36

Ray's full per-trial table stays in the experiment's files (progress.csv, result.json); build_tuner (tuner.py) sets
Tune's own output to silent (RunConfig(verbose=0)) and passes this callback. A status line is printed every
`status_every_s` (also during long epochs), when a trial ends, and at the end. During an epoch that has lasted longer
than `progress_after_s`, each running trial's batches/s and the epoch's ETA are printed as often, from the progress
file the trial writes in its folder (trainables/epoch_progress.py): Tune hears from a trial only once per epoch.
"""

from __future__ import annotations

import sys
import textwrap
import time

from ray.tune import Callback

from search_driver.resume import trial_counts
from trainables import metric_names as M
from trainables.epoch_progress import eta_seconds, read_progress

WIDTH = 120


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"[{h}:{m:02d}:{s:02d}]" if h else f"[{m:02d}:{s:02d}]"


# What a restored console starts afresh (its trial sets too: __setstate__).
_RESTART = {"_best": None, "_last_status": 0.0, "_last_text": "", "_last_progress": 0.0}


class CompactConsole(Callback):
    """A Tune callback printing one line per trial start, epoch and end, and a status line now and then."""

    def __init__(
        self,
        metric: str,
        mode: str,
        searched: list[str],
        max_epochs: int,
        num_samples: int,
        time_budget_s: float | None = None,
        status_every_s: float = 30,
        width: int = WIDTH,
        progress_after_s: float = 30,
    ):
        self.metric, self.mode, self.searched = metric, mode, list(searched)
        self.max_epochs, self.num_samples = max_epochs, num_samples
        self.time_budget_s, self.status_every_s, self.width = time_budget_s, status_every_s, width
        self.progress_after_s = progress_after_s
        self._start = time.time()
        self._last_status = 0.0
        self._last_progress = 0.0
        self._started_at = {}  # trial id -> when it started here: older progress files are a previous run's
        self._best = None  # (value, trial id, epoch): the best metric at any epoch of any trial
        self._last_text = ""
        self._started, self._done = set(), set()  # trial ids started in this run, ended on their own
        self._before = None  # trial ids that had ended when this run began (a resume), known at its first step
        self._resumed = False

    def __getstate__(self):  # Tuner.restore unpickles the callbacks: the clock, the best and the counts restart
        state = self.__dict__.copy()
        state.update(_RESTART)
        return state

    def __setstate__(self, state):  # also fills in what a console pickled by older code did not have
        self.__dict__.update(
            {
                **state,
                **_RESTART,
                "_started": set(),
                "_started_at": {},
                "_done": set(),
                "_before": None,
                "_resumed": False,
            }
        )

    # ---- output

    def _print(self, text: str, indent: int = 8) -> None:
        lines = textwrap.wrap(text, self.width, subsequent_indent=" " * indent, break_on_hyphens=False)
        print("\n".join(lines), file=sys.stdout, flush=True)

    def _now(self) -> str:
        return _clock(time.time() - self._start)

    def status(self, trials, ended=None, as_status: str = "TERMINATED") -> str:
        """`ended`: a trial Tune reports as ending, whose status Tune sets only after the callbacks.

        Counted as the interrupt summary counts (`trial_counts`): done = ended on its own (all epochs, or stopped by
        ASHA or --patience: on_trial_complete), or before this run began (a resume); stopped mid-way = ended by the
        driver (an interrupt, the time budget) after it started; not started = pending, or ended before it started.
        Tune marks every trial it stops TERMINATED, so its status alone cannot tell these apart."""
        done = errors = running = stopped = pending = 0
        for t in trials:
            status = as_status if t is ended else t.status
            if t.trial_id in self._done or t.trial_id in (self._before or ()):
                done += 1
            elif status == "ERROR":
                errors += 1
            elif status == "TERMINATED" and t.trial_id in self._started:
                stopped += 1
            elif status in ("RUNNING", "PAUSED"):
                running += 1
            else:
                pending += 1
        capped = self.num_samples > 0  # -1: no cap (a time budget decides how many)
        if capped:
            pending += max(0, self.num_samples - len(trials))
        counts = trial_counts(done, errors, stopped, pending, self.num_samples if capped else None, running)
        parts = [f"{self._now()} trials {counts}"]
        if self._best is not None:
            value, tid, epoch = self._best
            parts.append(f"best {self.metric} {value:.4f} (trial_{tid}, epoch {epoch})")
        if self.time_budget_s and self._resumed:  # Tune goes on with what was left, which it keeps to itself
            parts.append(f"the rest of the {self.time_budget_s / 60:g}-min budget")
        elif self.time_budget_s:
            left = max(0.0, self.time_budget_s - (time.time() - self._start))
            parts.append(f"{left / 60:.1f} min left of {self.time_budget_s / 60:g}")
        return " | ".join(parts)

    def progress_lines(self, trials, now: float | None = None) -> list[str]:
        """One line per running trial whose current epoch has lasted progress_after_s or more: where it is in the
        epoch, its batches/s and the epoch's ETA (training batches; validation follows)."""
        now = time.time() if now is None else now
        lines = []
        for t in trials:
            started = self._started_at.get(t.trial_id)
            if t.status != "RUNNING" or started is None:
                continue
            state = read_progress(t.path)
            if not state or state["updated_at"] < started or state["batch"] >= state["batches"]:
                continue
            if now - state["epoch_started_at"] < self.progress_after_s:
                continue
            eta = eta_seconds(state, now)
            rate = state.get("batches_per_s")
            speed = f"{rate:.2f} batches/s, epoch ETA {_clock(eta)[1:-1]}" if eta is not None else "rate not known yet"
            lines.append(
                f"{_clock(now - self._start)} trial_{t.trial_id} in epoch {state['epoch']:>2}/"
                f"{self.max_epochs}: batch {state['batch']}/{state['batches']}, {speed}"
            )
        return lines

    def _maybe_progress(self, trials) -> None:
        if time.time() - self._last_progress >= self.status_every_s:
            self._last_progress = time.time()
            for line in self.progress_lines(trials):
                self._print(line)

    def _maybe_status(self, trials, force: bool = False, **ended) -> None:
        if force or time.time() - self._last_status >= self.status_every_s:
            self._last_status = time.time()
            self._last_text = self.status(trials, **ended)
            self._print(self._last_text)

    # ---- Tune's hooks

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        self._start = time.time()
        self._last_status = self._last_progress = self._start  # the first status line after status_every_s
        budget = f", time budget {self.time_budget_s / 60:g} min" if self.time_budget_s else ""
        self._print(
            f"search: {f'up to {self.num_samples}' if self.num_samples > 0 else 'as many'} trials of up to {self.max_epochs} epochs on {self.metric} "
            f"({self.mode}){budget}; searched: {', '.join(self.searched)}"
        )

    def on_trial_start(self, iteration, trials, trial, **info):
        self._started.add(trial.trial_id)
        self._started_at[trial.trial_id] = time.time()
        params = " ".join(f"{k}={_fmt(trial.config[k])}" for k in self.searched if k in trial.config)
        self._print(f"{self._now()} start trial_{trial.trial_id}  {params}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value, epoch = result.get(self.metric), result.get("epoch", result.get("training_iteration"))
        if isinstance(value, float) and M.better(value, self._best and self._best[0], self.mode):
            self._best = (value, trial.trial_id, epoch)
        shown = [f"{k} {result[k]:.4f}" for k in ("val_loss", "val_acc", "train_loss") if k in result]
        speed = f"  {result['images_per_s']:.0f} img/s" if "images_per_s" in result else ""
        diverged = "  DIVERGED" if result.get("diverged") else ""
        self._print(
            f"{self._now()} trial_{trial.trial_id} epoch {epoch:>2}/{self.max_epochs}  {'  '.join(shown)}"
            f"{speed}{diverged}"
        )
        self._maybe_status(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._done.add(trial.trial_id)
        last = trial.last_result or {}
        epochs = last.get("epoch", last.get("training_iteration", 0))
        why = "all epochs" if epochs >= self.max_epochs else "stopped early"
        value = last.get(self.metric)
        shown = f", last {self.metric} {value:.4f}" if isinstance(value, float) else ""
        self._print(f"{self._now()} trial_{trial.trial_id} done after {epochs} epochs ({why}){shown}")
        self._maybe_status(trials, force=True, ended=trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        epochs = (trial.last_result or {}).get("epoch", 0)
        self._print(
            f"{self._now()} trial_{trial.trial_id} FAILED after {epochs} epochs; its error: {trial.path}/error.txt"
        )
        self._maybe_status(trials, force=True, ended=trial, as_status="ERROR")

    def on_step_begin(self, iteration, trials, **info):
        if self._before is None:  # trials at the first step: a resume (its ended ones count as done)
            self._before = {t.trial_id for t in trials if t.status == "TERMINATED"}
            self._resumed = bool(trials)

    def on_step_end(self, iteration, trials, **info):
        self._maybe_status(trials)  # a heartbeat during long epochs
        self._maybe_progress(trials)

    def on_experiment_end(self, trials, **info):
        text = self.status(trials)
        if text.split(" ", 1)[1] != self._last_text.split(" ", 1)[-1]:  # not the last line again (clock aside)
            self._print(text)


def quiet_ray_output() -> None:
    """Call in the driver before ray.init and Tuner.fit (also on --resume): our console (this module's callback)
    instead of Tune's output, Ray's log filters (search_driver/ray_compat.py), and no Optuna "[I ...] A new study
    created in Journal with name: ..." INFO line (our watch line names the study's file)."""
    import optuna

    from search_driver import ray_compat

    ray_compat.driver_settings()
    ray_compat.quiet_driver_logs()
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def console_callback(args, param_space: dict) -> CompactConsole:
    from ray.tune.search.sample import Domain

    from trainables.metric_names import SEARCH_METRICS

    searched = [k for k, v in param_space.items() if isinstance(v, Domain)]
    budget = args.time_budget
    return CompactConsole(
        args.metric,
        SEARCH_METRICS[args.metric],
        searched,
        args.max_epochs,
        args.num_samples,
        time_budget_s=budget * 60 if budget else None,
    )
