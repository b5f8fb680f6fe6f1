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

So: the searcher (the big pickle: search_driver/optuna_searcher.py pickles its whole study) writes in a scratch
folder beside the staging folder and moves finished files in; what is left (Tune's small wrapper state) is said in
one line (search_driver/ray_compat.py: upload_race_one_line).
"""

from __future__ import annotations

import os
import shutil
import tempfile

from ray.tune.search import BasicVariantGenerator as _BasicVariantGenerator


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
