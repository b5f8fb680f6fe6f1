"""MLflow for `--mlflow URI` (search_driver/tracking.py adds it): Ray's callback, one run per trial, plus each trial's
best checkpoint as an artifact. Its own module because importing Ray's MLflow integration imports mlflow (~1 s)."""

from __future__ import annotations

from pathlib import Path

from ray.air.integrations.mlflow import MLflowLoggerCallback

from trainables import metric_names as M


class BestCheckpointMLflow(MLflowLoggerCallback):
    """Ray's MLflow callback (one run per trial: its config as params, every epoch's metrics), plus the trial's
    best checkpoint: at each checkpoint that improves the trial's best `metric`, it is uploaded as the run's
    `best_checkpoint/` artifact, tagged with its epoch. (Ray's own save_artifact uploads the driver's trial
    folder, which holds no checkpoint: the trials write those straight to storage.)"""

    def __init__(self, uri: str, experiment: str, metric: str, mode: str):
        super().__init__(tracking_uri=uri, experiment_name=experiment, tags={"experiment": experiment})
        self.metric, self.mode = metric, mode

    def setup(self, *args, **kwargs):
        self._create_experiment()
        super().setup(*args, **kwargs)
        self._best, self._run_ids = {}, {}

    def _create_experiment(self) -> None:
        """A SQLite store keeps its artifacts in ./mlruns of the working directory unless the experiment names a
        place: put them next to the database (mlartifacts/, where `mlflow server` would keep them)."""
        if not self.tracking_uri.startswith("sqlite:///"):
            return
        import mlflow

        client = mlflow.MlflowClient(self.tracking_uri)
        if client.get_experiment_by_name(self.experiment_name) is None:
            db = Path(self.tracking_uri.removeprefix("sqlite:///")).resolve()
            client.create_experiment(self.experiment_name, artifact_location=(db.parent / "mlartifacts").as_uri())

    def run_id(self, client, trial) -> str | None:
        """The MLflow run Ray's callback opened for `trial`: found by the tag it sets (trial_name), once."""
        if trial.trial_id not in self._run_ids:
            exp = client.get_experiment_by_name(self.experiment_name)
            runs = client.search_runs([exp.experiment_id], f"tags.trial_name = '{trial}'") if exp else []
            if not runs:
                return None
            self._run_ids[trial.trial_id] = runs[0].info.run_id
        return self._run_ids[trial.trial_id]

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        import mlflow

        value = (trial.last_result or {}).get(self.metric)
        if value is None or not M.better(float(value), self._best.get(trial.trial_id), self.mode):
            return
        client = mlflow.MlflowClient(self.tracking_uri)
        run_id = self.run_id(client, trial)
        if run_id is None:
            return
        self._best[trial.trial_id] = value
        with checkpoint.as_directory() as d:
            client.log_artifacts(run_id, d, artifact_path="best_checkpoint")
        client.set_tag(run_id, "best_checkpoint_epoch", str(trial.last_result.get("epoch")))
        client.set_tag(run_id, f"best_{self.metric}", f"{value:.6g}")
