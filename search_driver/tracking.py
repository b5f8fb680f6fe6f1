"""Live views of a running search: the Optuna study in a journal file (optuna-dashboard), TensorBoard hparams,
and MLflow runs (opt-in). search_driver/tuner.py's build_tuner takes these with one call each.

    optuna-dashboard experiments/NAME/optuna_study.log
    tensorboard --logdir experiments/NAME
    python run_search.py ... --mlflow sqlite:///mlflow.db   # then: mlflow ui --backend-store-uri sqlite:///mlflow.db
"""

from __future__ import annotations

import os
import time

from ray.tune.logger import LoggerCallback

STUDY_FILE = "optuna_study.log"  # Optuna journal, in the experiment folder


def optuna_study(storage_path: str, name: str) -> dict:
    """OptunaSearch(storage=..., study_name=...) keywords: the study lives in a journal file in the experiment
    folder, so optuna-dashboard can read it while the search writes it.

    A journal file, not SQLite: SQLite locks under parallel writers (optuna #820). Only the driver writes here,
    readers (the dashboard) take no lock. The storage pickles as its file path (Tuner.restore reopens the same file
    and replays it), so --resume continues the same study. Remote storage (s3://, gs://): {} (the study stays in
    memory, as before), since the journal needs a local file.
    """
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from analysis.experiment import is_uri

    if is_uri(storage_path):
        return {}
    folder = os.path.join(storage_path, name)
    os.makedirs(folder, exist_ok=True)
    return {"storage": JournalStorage(JournalFileBackend(os.path.join(folder, STUDY_FILE))), "study_name": name}


# ---------------------------------------------------------------------------------------------------------------
# TensorBoard


_HPARAMS_TAGS = ("_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info")


def _hparams_summary(tag: str, **plugin_data):
    """A Summary holding one HParams plugin record (the protos TensorBoard's hparams plugin reads)."""
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

    content = HParamsPluginData(version=0, **plugin_data).SerializeToString()
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="hparams", content=content))
    return Summary(value=[Summary.Value(tag=tag, metadata=meta)])


def hparams_experiment(searched: dict, metrics) -> object:
    """The experiment record: each searched key with its domain (choices, or the range), the metric tags."""
    from google.protobuf.struct_pb2 import ListValue
    from tensorboardX.proto.api_pb2 import DataType, Experiment, HParamInfo, Interval, MetricInfo, MetricName

    infos = []
    for key, spec in searched.items():
        if spec["type"] == "choice":
            values = list(spec["values"])
            kind = {bool: "DATA_TYPE_BOOL", str: "DATA_TYPE_STRING"}.get(type(values[0]), "DATA_TYPE_FLOAT64")
            domain = ListValue()
            domain.extend([v if isinstance(v, bool | str) else float(v) for v in values])
            infos.append(HParamInfo(name=key, type=DataType.Value(kind), domain_discrete=domain))
        else:
            interval = Interval(min_value=float(spec["lower"]), max_value=float(spec["upper"]))
            infos.append(HParamInfo(name=key, type=DataType.Value("DATA_TYPE_FLOAT64"), domain_interval=interval))
    exp = Experiment(hparam_infos=infos, metric_infos=[MetricInfo(name=MetricName(tag=m)) for m in metrics])
    return _hparams_summary(_HPARAMS_TAGS[0], experiment=exp)


def hparams_session_start(config: dict, searched: dict, group: str):
    from tensorboardX.proto.plugin_hparams_pb2 import SessionStartInfo

    ssi = SessionStartInfo(group_name=group, start_time_secs=time.time())
    for key in searched:
        v = config.get(key)
        if isinstance(v, bool):
            ssi.hparams[key].bool_value = v
        elif isinstance(v, int | float):
            ssi.hparams[key].number_value = float(v)
        elif v is not None:
            ssi.hparams[key].string_value = str(v)
    return _hparams_summary(_HPARAMS_TAGS[1], session_start_info=ssi)


def hparams_session_end(failed: bool):
    from tensorboardX.proto.api_pb2 import Status
    from tensorboardX.proto.plugin_hparams_pb2 import SessionEndInfo

    status = Status.Value("STATUS_FAILURE" if failed else "STATUS_SUCCESS")
    return _hparams_summary(_HPARAMS_TAGS[2], session_end_info=SessionEndInfo(status=status, end_time_secs=time.time()))


class HParamsCallback(LoggerCallback):
    """TensorBoard HParams written when a trial STARTS, so TensorBoard's HPARAMS tab (table, parallel coordinates,
    scatter) lists running trials too; their metric values are the per-epoch scalars Tune's own TensorBoard logger
    writes in the same trial folder (ray/tune/val_loss, ...). One more event file per trial (`*.hparams`), written
    with tensorboardX's public FileWriter; Tune's own end-of-trial hparams named every config key and wrote nothing
    in our searches."""

    METRICS = tuple(f"ray/tune/{m}" for m in ("val_loss", "val_acc", "train_loss", "train_acc", "epoch"))

    def __init__(self, searched: dict):
        self._searched = {k: v for k, v in searched.items() if v.get("type") != "constant"}
        self._writers = {}

    def log_trial_start(self, trial):
        from tensorboardX import FileWriter

        if trial in self._writers:  # a retried or resumed trial: its session started already
            return
        writer = FileWriter(trial.local_path, filename_suffix=".hparams")
        writer.add_summary(hparams_experiment(self._searched, self.METRICS))
        writer.add_summary(hparams_session_start(trial.config, self._searched, trial.trial_id))
        writer.flush()
        self._writers[trial] = writer

    def log_trial_end(self, trial, failed: bool = False):
        writer = self._writers.pop(trial, None)
        if writer is not None:
            writer.add_summary(hparams_session_end(failed))
            writer.close()

    def __getstate__(self):  # the experiment snapshot pickles callbacks: open files stay behind
        return {**self.__dict__, "_writers": {}}


def __getattr__(name: str):
    """BestCheckpointMLflow lives in mlflow_callback.py (mlflow costs ~1 s to import; only --mlflow needs it); this
    name stays for snapshots of experiments pickled when the class was here."""
    if name == "BestCheckpointMLflow":
        from search_driver.mlflow_callback import BestCheckpointMLflow

        return BestCheckpointMLflow
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def searched_keys(param_space: dict) -> dict:
    """describe() of the keys Tune samples (its Domains), not the constants."""
    from ray.tune.search.sample import Domain

    from search_spaces import describe

    return describe({k: v for k, v in param_space.items() if isinstance(v, Domain)})


def tracking_callbacks(args, param_space: dict) -> list:
    """The callbacks build_tuner passes to RunConfig: TensorBoard with hparams, MLflow if --mlflow URI."""
    from trainables.metric_names import SEARCH_METRICS

    callbacks = [HParamsCallback(searched_keys(param_space))]
    if args.mlflow:
        from search_driver.mlflow_callback import BestCheckpointMLflow

        callbacks.append(BestCheckpointMLflow(args.mlflow, args.name, args.metric, SEARCH_METRICS[args.metric]))
    return callbacks


def watch_hint(args, path: str) -> str:
    """The commands that show this search live, printed when it starts: the tools of the running environment
    (analysis/shell.py), so they work when pasted into a shell where the venv is not active."""
    import shlex

    from analysis.experiment import is_uri
    from analysis.shell import command_lines, path_arg, tool

    lines = []
    if args.searcher == "optuna" and not is_uri(path):
        lines.append(f"{tool('optuna-dashboard')} {path_arg(os.path.join(path, STUDY_FILE))}")
    lines.append(f"{tool('tensorboard')} --logdir {path_arg(path)}")
    if args.mlflow:  # the UI needs the full mlflow package (requirements.txt has mlflow-skinny)
        lines.append(f"{tool('mlflow')} ui --backend-store-uri {shlex.quote(args.mlflow)}")
    return "\n".join(command_lines("watch: ", line) for line in lines)
