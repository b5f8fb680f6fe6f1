"""The Ray Tune function trainable of every search: resources, resume, one checkpointed report per epoch.

Framework-neutral (no torch, no TensorFlow import): the model's `Framework` (trainables/framework.py) does the rest.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from . import epoch_progress
from . import metric_names as M
from .framework import Framework, framework_of


def trial_resources() -> tuple[float, float]:
    """(CPUs, GPU share) Ray assigned to this trial."""
    import ray

    resources = ray.get_runtime_context().get_assigned_resources()
    return resources.get("CPU", 1), resources.get("GPU", 0.0)


def train_trial(config: dict, data: dict, progress_dir: str | None = None) -> None:
    """Ray Tune trainable (`tune.with_parameters(train_trial, data=..., progress_dir=...)`): reads only `config`;
    `data` (train/val arrays) comes from the object store; `progress_dir`: the experiment's local folder, where the
    trial writes its in-epoch progress (trainables/epoch_progress.py; None: nowhere, e.g. s3:// storage)."""
    # Ray's settings and log filters of a trial process: search_driver/ray_compat.trial_process_setup (Ray runs it
    # in every worker of the search as runtime_env's worker_process_setup_hook).
    fw = framework_of(config["model"], config.get("framework"))  # a user's builder: the driver found its framework
    # resources first: it also gives a reused process time to end the last trial's Keras fit (0-3.3 s here)
    fw.setup_trial(*trial_resources(), config.get("device"))
    run_trial(fw, config, data, progress_dir)


def run_trial(fw: Framework, config: dict, data: dict, progress_dir: str | None = None) -> None:
    """Resume from Tune's checkpoint if there is one, then `fw.fit`, reporting each epoch with a checkpoint and
    writing the progress inside each epoch to the trial's folder under `progress_dir`."""
    import ray
    from ray import tune

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

    progress = None
    if progress_dir:
        trial = epoch_progress.trial_dirname(tune.get_context().get_trial_id())
        progress = epoch_progress.EpochProgress(os.path.join(progress_dir, trial, epoch_progress.PROGRESS_FILE))
    fw.fit(config, data, report, checkpoint=checkpoint, progress=progress)


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
