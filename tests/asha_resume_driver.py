"""A search driver with known learning curves, for tests/test_one_truth.py: run it, kill it, restore it.

    python tests/asha_resume_driver.py STORAGE NAME          # start
    python tests/asha_resume_driver.py STORAGE NAME restore  # Tuner.restore after the driver was killed

Three trials, one at a time, each reporting the val_loss its config lists: ASHA (grace 1, rf 2, max 3 epochs) lets
A and B run all epochs and stops C at epoch 1, the uninterrupted way. The scheduler and the stopper are the search's
own (search_driver/stopping.py). C waits before its first report so that a kill after B lands before it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CURVES = {"A": [1.0, 0.9, 0.8], "B": [0.5, 0.4, 0.3], "C": [2.0, 1.9, 1.8]}


def trainable(config):
    from ray import tune

    start = 0
    if (ckpt := tune.get_checkpoint()) is not None:
        with ckpt.as_directory() as d:
            start = int((Path(d) / "epoch").read_text())
    if config["name"] == "C":
        time.sleep(3)
    for epoch in range(start + 1, 4):
        time.sleep(0.3)
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "epoch").write_text(str(epoch))
            result = {"val_loss": CURVES[config["name"]][epoch - 1], "epoch": epoch}
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))


def main(storage: str, name: str, restore: bool) -> None:
    import ray
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from search_driver.stopping import PatienceStopper, ResumableASHA

    ray.init(address="local", num_cpus=1, include_dashboard=False)
    path = f"{storage}/{name}"
    if restore:
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"name": tune.choice(list(CURVES))},
            tune_config=tune.TuneConfig(
                metric="val_loss", mode="min", num_samples=3, max_concurrent_trials=1,
                search_alg=BasicVariantGenerator(points_to_evaluate=[{"name": n} for n in CURVES]),
                scheduler=ResumableASHA(storage_path=storage, time_attr="training_iteration", max_t=3,
                                        grace_period=1, reduction_factor=2),
                trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
            ),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0,
                                      stop=PatienceStopper("val_loss", "min", 1, experiment_path=path),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
        )  # fmt: skip
    tuner.fit()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], len(sys.argv) > 3 and sys.argv[3] == "restore")
