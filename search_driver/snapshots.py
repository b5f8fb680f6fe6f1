"""Tune's experiment snapshots: the searcher's state lands whole, and the one upload race left is one line.

Why: Tune saves the experiment state (trial table, searcher, callbacks) into a driver staging folder and uploads that
folder to the storage path in a background thread (ray/tune/execution/experiment_state.py,
`sync_up_experiment_state`). The next save does not wait for the upload still running, and Ray's searchers write a
`.<uuid>-tmp-...` file in that same folder before renaming it (ray/tune/search/searcher.py `save_to_dir`,
ray/tune/utils/util.py `_atomic_save`). When the upload lists the folder during a save, it then fails to open a temp
file that has been renamed: `FileNotFoundError ... -tmp-searcher-state-...pkl`, logged by Ray as a six-line
traceback (seen in CI on a smoke search; with CheckpointConfig(num_to_keep=1) Tune snapshots after every epoch).
The failed upload is not lost: the forced snapshot that waited on it launches a new upload at once, and the last
snapshot of a run is saved and then waited on with no save beside it.

So: the searcher (the big pickle: search_driver/optuna_searcher.py pickles its whole study) writes in a scratch folder beside the
staging folder and moves finished files in; what is left (Tune's small wrapper state) is said in one line.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

from ray.tune.search import BasicVariantGenerator as _BasicVariantGenerator

RACE_LINE = "snapshot upload raced a save; the next upload copies it again"  # after Ray's 50-column prefix
# The loggers of the two places Ray reports a failed upload: the forced snapshot's wait, and the next upload's start.
RACE_LOGGERS = ("ray.tune.execution.experiment_state", "ray.train._internal.syncer")


class WholeFileSaves:
    """Mixin for a Ray Searcher or SearchAlgorithm: `save_to_dir` writes where the upload does not look.

    The base class's own save runs in a fresh scratch folder on the same filesystem; each file it leaves there is
    then moved in with os.replace, which is atomic, so the staging folder only ever holds complete files.
    """

    def save_to_dir(self, checkpoint_dir: str, *args, **kwargs):
        parent = os.path.dirname(os.path.abspath(checkpoint_dir))
        scratch = tempfile.mkdtemp(prefix=".searcher-scratch-", dir=parent)
        try:
            saved = super().save_to_dir(scratch, *args, **kwargs)
            for name in os.listdir(scratch):
                os.replace(os.path.join(scratch, name), os.path.join(checkpoint_dir, name))
            return saved
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


class BasicVariantGenerator(WholeFileSaves, _BasicVariantGenerator):
    """Ray's random / points-to-evaluate search (bench/search_efficiency.py's baseline), written whole."""


def is_upload_race(record: logging.LogRecord) -> bool:
    """A failed upload whose cause is a vanished temp file of a snapshot save (the race above)."""
    exc = record.exc_info[1] if record.exc_info else None
    text = str(exc) if exc is not None else record.getMessage()
    named = isinstance(exc, FileNotFoundError) or "FileNotFoundError" in text
    return named and "-tmp-" in text


def _one_line(record: logging.LogRecord) -> bool:
    if is_upload_race(record):
        record.msg, record.args, record.exc_info, record.exc_text = RACE_LINE, (), None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
    return True


def quiet_upload_race() -> None:
    """Call in the driver before Tuner.fit; idempotent."""
    for name in RACE_LOGGERS:
        logger = logging.getLogger(name)
        if _one_line not in logger.filters:
            logger.addFilter(_one_line)
