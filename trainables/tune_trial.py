"""The Ray Tune function trainable of every search: resources, resume, one checkpointed report per epoch.

Framework-neutral (no torch, no TensorFlow import): the model's `Framework` (trainables/framework.py) does the rest.
"""

from __future__ import annotations

import os
import sys
import tempfile

from . import epoch_progress
from . import metric_names as M
from .framework import Framework, framework_of


def trial_resources() -> tuple[float, float]:
    """(CPUs, GPU share) Ray assigned to this trial."""
    import ray

    resources = ray.get_runtime_context().get_assigned_resources()
    return resources.get("CPU", 1), resources.get("GPU", 0.0)


def quiet_sigterm_exit() -> None:
    """In a trial's worker process: Ray's SIGTERM exit is not printed as an "Exception ignored" traceback.

    When a search ends, Ray sends SIGTERM to the trial processes; its handler raises SystemExit
    (ray/_private/worker.py `main_loop.sigterm_handler` -> `raise_sys_exit_with_custom_error_message`, which tags the
    exception with `ray_terminate_msg`). If the signal lands while Python runs a weakref callback or a `__del__`,
    Python cannot raise there and prints "Exception ignored in ..." and an 8-line traceback through
    sys.unraisablehook, which Ray forwards to the driver's console. Python swallows that exception either way (Ray then
    ends the process as it does any that outlives its SIGTERM); only the printing is dropped, and every other
    unraisable exception is printed as before.
    """
    default = sys.unraisablehook
    if getattr(default, "quiet_sigterm_exit", False):
        return

    def hook(unraisable):
        if isinstance(unraisable.exc_value, SystemExit) and hasattr(unraisable.exc_value, "ray_terminate_msg"):
            return
        default(unraisable)

    hook.quiet_sigterm_exit = True
    sys.unraisablehook = hook


def train_trial(config: dict, data: dict, progress_dir: str | None = None) -> None:
    """Ray Tune trainable (`tune.with_parameters(train_trial, data=..., progress_dir=...)`): reads only `config`;
    `data` (train/val arrays) comes from the object store; `progress_dir`: the experiment's local folder, where the
    trial writes its in-epoch progress (trainables/epoch_progress.py; None: nowhere, e.g. s3:// storage)."""
    # Reused trial processes (reuse_actors): before the next trial Tune gives the last one's thread only 2 s to end,
    # then fails the new trial. Ending a Keras fit took up to 3.3 s on a busy machine; read at reset time.
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")
    quiet_sigterm_exit()
    fw = framework_of(config["model"])
    # resources first: it also gives a reused process time to end the last trial's Keras fit (0-3.3 s here)
    fw.setup_trial(*trial_resources(), config.get("device"))
    run_trial(fw, config, data, progress_dir)


def run_trial(fw: Framework, config: dict, data: dict, progress_dir: str | None = None) -> None:
    """Resume from Tune's checkpoint if there is one, then `fw.fit`, reporting each epoch with a checkpoint and
    writing the progress inside each epoch to the trial's folder under `progress_dir`."""
    import logging

    import ray
    from ray import tune

    # Ray logs "Checkpoint successfully created at: ..." at INFO for every epoch of every trial: noise in the
    # search's output (the trial folders show the checkpoints).
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    # Which Ray node trained the trial: Ray's own result keys name only host and IP, which nodes can share.
    node = {M.NODE_ID: ray.get_runtime_context().get_node_id()}
    checkpoint = None
    if (ckpt := tune.get_checkpoint()) is not None:
        with ckpt.as_directory() as d:
            checkpoint = fw.load_checkpoint(d)

    def report(result: dict, state) -> None:
        with tempfile.TemporaryDirectory() as d:
            fw.save_checkpoint(state, d)
            tune.report({**result, **node}, checkpoint=tune.Checkpoint.from_directory(d))

    progress = None
    if progress_dir:
        trial = epoch_progress.trial_dirname(tune.get_context().get_trial_id())
        progress = epoch_progress.EpochProgress(os.path.join(progress_dir, trial, epoch_progress.PROGRESS_FILE))
    fw.fit(config, data, report, checkpoint=checkpoint, progress=progress)
