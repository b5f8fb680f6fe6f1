"""The Ray Tune function trainable of every search: resources, resume, one checkpointed report per epoch.

Framework-neutral (no torch, no TensorFlow import): the model's `Framework` (trainables/framework.py) does the rest.
"""

from __future__ import annotations

import os
import tempfile

from . import metric_names as M
from .framework import Framework, framework_of


def trial_resources() -> tuple[float, float]:
    """(CPUs, GPU share) Ray assigned to this trial."""
    import ray

    resources = ray.get_runtime_context().get_assigned_resources()
    return resources.get("CPU", 1), resources.get("GPU", 0.0)


def train_trial(config: dict, data: dict) -> None:
    """Ray Tune trainable (`tune.with_parameters(train_trial, data=...)`): reads only `config`; `data` (train/val
    arrays) comes from the object store."""
    # Reused trial processes (reuse_actors): before the next trial Tune gives the last one's thread only 2 s to end,
    # then fails the new trial. Ending a Keras fit took up to 3.3 s on a busy machine; read at reset time.
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")
    fw = framework_of(config["model"])
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
        with ckpt.as_directory() as d:
            checkpoint = fw.load_checkpoint(d)

    def report(result: dict, state) -> None:
        with tempfile.TemporaryDirectory() as d:
            fw.save_checkpoint(state, d)
            tune.report({**result, **node}, checkpoint=tune.Checkpoint.from_directory(d))

    fw.fit(config, data, report, checkpoint=checkpoint)
