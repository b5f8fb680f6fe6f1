"""The search's Optuna searcher: TPE told the truth about every trial, in the study optuna-dashboard shows.

Ray's OptunaSearch tells the study each trial's LAST value as COMPLETE, also for trials ASHA or --patience stopped
(ray/tune/search/optuna/optuna_search.py `on_trial_complete`), never reports the epoch a trial stopped at (Tune
passes that result to `on_trial_complete` only), and is never told of trials a --time-budget ends (Tune's
`_schedule_trial_stop` sets them TERMINATED without telling the searcher). This searcher, a public `Searcher`
around Optuna's ask/tell, follows the project's one rule for "best" (analysis/trials.py) instead:

- after each epoch the trial's intermediate value at step `epoch` is its best metric up to that epoch, the number
  analysis/trials.Experiment.results_at compares trials by;
- a trial that ran all `max_epochs` (or ended on its own: diverged) is COMPLETE with its best epoch's value;
- a trial stopped early (ASHA, --patience, the time budget) is PRUNED; Optuna then takes its last intermediate
  value, which is its best, and TPE ranks pruned trials by the epoch they reached, then by that value;
- a trial that failed, or ended before its first epoch, is FAIL: no evidence either way.

So each trial's value in the journal is the value report.py uses for it. `EndedTrials` (a Tune callback) tells the
searcher about the trials the time budget ended.

A search that continues an earlier study (an extension: search_driver/extend.py) never reuses one of its Tune trial
ids: `suggest` declines an id the study already holds, and Tune asks again with a new one. A warm start
(search_driver/warm_start.py) hands a new study `evidence`, an old study's trials, before its first points.
"""

from __future__ import annotations

import pickle

from ray.tune import Callback
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from trainables import metric_names as M

from .snapshots import WholeFileSaves

TUNE_TRIAL_ID = "tune_trial_id"  # Optuna user attribute: the Tune trial (folder trial_<id>) behind each study trial


class OptunaSearcher(WholeFileSaves, Searcher):
    """Optuna TPE (or any Optuna sampler) behind Tune's Searcher API; see the module docstring for what it tells."""

    _taken: frozenset = frozenset()  # Tune trial ids of earlier runs of the study (a class default: older pickles)

    def __init__(
        self,
        sampler,
        max_epochs: int,
        points_to_evaluate: list[dict] | None = None,
        storage=None,
        study_name: str | None = None,
        metric: str | None = None,
        mode: str | None = None,
        evidence: list | None = None,
    ):
        super().__init__(metric=metric, mode=mode)
        self._sampler, self._max_epochs = sampler, int(max_epochs)
        self._points, self._storage, self._study_name = list(points_to_evaluate or []), storage, study_name
        self._evidence = list(evidence or [])  # optuna FrozenTrials for a new study (a warm start)
        self._space: dict = {}
        self._study = None
        self._trials: dict = {}  # Tune trial id -> optuna.trial.Trial
        self._best: dict[str, float] = {}  # Tune trial id -> best metric so far
        self._steps: dict[str, set[int]] = {}  # Tune trial id -> epochs reported to the study
        self._told: set[str] = set()

    @property
    def study(self):
        return self._study

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        import optuna

        if self._space:
            return False
        self._space = OptunaSearch.convert_search_space(config)  # Tune domains -> Optuna distributions (public)
        self._metric, self._mode = metric or self._metric, mode or self._mode
        self._study = optuna.create_study(
            storage=self._storage,
            sampler=self._sampler,
            pruner=optuna.pruners.NopPruner(),
            study_name=self._study_name,
            load_if_exists=True,
            direction="minimize" if self._mode == "min" else "maximize",
        )
        if not self._study.trials:  # a new study: the evidence, then the given points (DEFAULTS, or a warm start's)
            self._study.add_trials(self._evidence)
            for point in self._points:
                self._study.enqueue_trial(point)
        self._taken = frozenset(t.user_attrs.get(TUNE_TRIAL_ID) for t in self._study.get_trials(deepcopy=False))
        return True

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id in self._taken and trial_id not in self._trials:
            return None  # an earlier run's trial has this id (and folder): Tune tries again with a new one
        if trial_id not in self._trials:
            trial = self._study.ask(fixed_distributions=self._space)
            trial.set_user_attr(TUNE_TRIAL_ID, trial_id)
            self._trials[trial_id] = trial
        return dict(self._trials[trial_id].params)  # the spaces are flat: no nested keys to rebuild

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._told or trial_id not in self._trials or self._metric not in result:
            return
        value = float(result[self._metric])
        if M.better(value, self._best.get(trial_id), self._mode):
            self._best[trial_id] = value
        step = int(result.get(M.EPOCH, result.get("training_iteration", 0)))
        steps = self._steps.setdefault(trial_id, set())
        if trial_id in self._best and step not in steps:
            self._trials[trial_id].report(self._best[trial_id], step)
            steps.add(step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        import optuna

        if trial_id in self._told or trial_id not in self._trials:
            return
        if result:
            self.on_trial_result(trial_id, result)  # Tune passes a stopped trial's last epoch only here
        best = self._best.get(trial_id)
        State = optuna.trial.TrialState
        if error or best is None:
            state, value = State.FAIL, None
        elif int((result or {}).get(M.EPOCH, 0)) >= self._max_epochs or (result or {}).get(M.DIVERGED):
            state, value = State.COMPLETE, best
        else:
            state, value = State.PRUNED, None  # Optuna takes the last intermediate value: the best
        running = {t.number for t in self._study.get_trials(deepcopy=False, states=(State.RUNNING,))}
        if self._trials[trial_id].number in running:  # the journal may be ahead of a restored snapshot of this
            self._study.tell(self._trials[trial_id], value, state=state)
        self._told.add(trial_id)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__.copy(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class EndedTrials(Callback):
    """At the end of a search, tell the searcher (and say on the console) which trials the time budget ended:
    Tune marks them TERMINATED without telling anyone. Interrupted trials are left alone: Tune's clean-up after a
    stop signal (search_driver/interrupts.py) marks them TERMINATED too, but after its last snapshot, which keeps
    them running for --resume. Built with the searcher; tuner.pkl pickles both, so a restored search keeps the
    link."""

    def __init__(self, searcher: OptunaSearcher):
        self.searcher = searcher

    def on_experiment_end(self, trials, **info):
        from search_driver.interrupts import stopping

        if stopping():  # an interrupt: Tune's clean-up set the running trials TERMINATED, its snapshot did not
            return
        for trial in trials:
            if trial.status == "TERMINATED":
                self.searcher.on_trial_complete(trial.trial_id, result=dict(trial.last_result or {}))
