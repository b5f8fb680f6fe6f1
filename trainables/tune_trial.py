"""The Ray Tune function trainable of every search: resources, resume, one checkpointed report per epoch.

Framework-neutral (no torch, no TensorFlow import): the model's `Framework` (trainables/framework.py) does the rest.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

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


def train_trial(config: dict, data: dict) -> None:
    """Ray Tune trainable (`tune.with_parameters(train_trial, data=...)`): reads only `config`; `data` (train/val
    arrays) comes from the object store."""
    # Reused trial processes (reuse_actors): before the next trial Tune gives the last one's thread only 2 s to end,
    # then fails the new trial. Ending a Keras fit took up to 3.3 s on a busy machine; read at reset time.
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")
    quiet_sigterm_exit()
    fw = framework_of(config["model"], config.get("framework"))  # a user's builder: the driver found its framework
    # resources first: it also gives a reused process time to end the last trial's Keras fit (0-3.3 s here)
    fw.setup_trial(*trial_resources(), config.get("device"))
    run_trial(fw, config, data)


def run_trial(fw: Framework, config: dict, data: dict) -> None:
    """Resume from Tune's checkpoint if there is one, then `fw.fit`, reporting each epoch with a checkpoint."""
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
        try:
            with ckpt.as_directory() as d:
                checkpoint = fw.load_checkpoint(d)
        except OSError:  # deleted by Tune before the snapshot naming it was uploaded: see newest_checkpoint
            checkpoint = newest_checkpoint(fw, tune.get_context().get_trial_dir())

    def report(result: dict, state) -> None:
        with tempfile.TemporaryDirectory() as d:
            fw.save_checkpoint(state, d)
            tune.report({**result, **node}, checkpoint=tune.Checkpoint.from_directory(d))

    fw.fit(config, data, report, checkpoint=checkpoint)


def newest_checkpoint(fw: Framework, trial_dir: str) -> dict | None:
    """The newest checkpoint in the trial's folder that loads, or None (the trial starts over).

    Tune keeps `num_to_keep=1` checkpoint per trial and deletes the previous one as soon as a new one registers
    (ray/train/_internal/checkpoint_manager.py `register_checkpoint`), before the experiment snapshot that names the
    new one is uploaded (tune_controller.py `_process_trial_save`, then the next `checkpoint()`). A driver killed in
    that window leaves a snapshot naming a deleted checkpoint; the trial's newer one is still in its folder."""
    folders = sorted(Path(trial_dir).glob("checkpoint_*"), reverse=True) if os.path.isdir(trial_dir) else []
    for folder in folders:
        try:
            state = fw.load_checkpoint(str(folder))
        except (OSError, ValueError, RuntimeError):  # half written when the driver died: try the one before
            continue
        print(f"resuming from {folder.name} (the checkpoint the snapshot named was deleted)", file=sys.stderr)
        return state
    print("no checkpoint of this trial is left; it starts over", file=sys.stderr)
    return None
