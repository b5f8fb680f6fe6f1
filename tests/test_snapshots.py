"""Tune's experiment snapshots while an upload runs beside them (search_driver/snapshots.py): the staging folder holds
only whole files while the searcher saves, and the upload race Ray can still meet is one line, not a traceback."""

from __future__ import annotations

import logging
import os

import pyarrow.fs
import pytest
from ray.tune.search.optuna import OptunaSearch as RayOptunaSearch

from search_driver import ray_compat
from search_driver.optuna_searcher import OptunaSearcher


def spy(base):
    """`base` whose save() lists the staging folder while the state file is being written."""

    class Spy(base):
        seen: list[str] = []

        def save(self, checkpoint_path):
            super().save(checkpoint_path)
            Spy.seen = sorted(os.listdir(self.staging))

    return Spy


def make_searcher(cls):
    import optuna
    from ray import tune

    if cls is RayOptunaSearch or issubclass(cls, RayOptunaSearch):
        return cls(space={"lr": tune.loguniform(1e-4, 1e-1)}, metric="val_loss", mode="min")
    searcher = cls(optuna.samplers.TPESampler(seed=0), max_epochs=2)
    searcher.set_search_properties("val_loss", "min", {"lr": tune.loguniform(1e-4, 1e-1)})
    return searcher


def save_in(tmp_path, cls):
    staging = tmp_path / "driver_artifacts"
    staging.mkdir()
    searcher = make_searcher(cls)
    searcher.staging = str(staging)
    searcher.suggest("t1")
    searcher.save_to_dir(str(staging), session_str="s1")
    return searcher, staging


def test_the_staging_folder_never_holds_a_half_written_searcher_state(tmp_path):
    Ours = spy(OptunaSearcher)
    _, staging = save_in(tmp_path, Ours)
    seen = Ours.seen
    assert seen == [] and os.listdir(staging) == ["searcher-state-s1.pkl"]
    assert not [p for p in os.listdir(staging.parent) if p.startswith(".searcher-scratch")]  # scratch removed
    # the saved state restores into a new searcher: the upload's copy is a usable snapshot
    fresh = OptunaSearcher(None, max_epochs=2)
    fresh.restore_from_dir(str(staging))
    assert [t.number for t in fresh.study.trials] == [0]


def test_rays_own_searcher_shows_the_upload_a_temp_file(tmp_path):
    """The race the wrapper removes: Ray's OptunaSearch writes its temp file in the folder the upload copies."""
    Stock = spy(RayOptunaSearch)
    save_in(tmp_path, Stock)
    assert [n for n in Stock.seen if "-tmp-searcher-state-s1.pkl" in n]


def log_through(name: str, exc: BaseException) -> list[logging.LogRecord]:
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        try:
            raise exc
        except BaseException:
            logger.error("Saving experiment state to storage at '/x' failed with exception: ", exc_info=True)
    finally:
        logger.removeHandler(handler)
    return records


@pytest.fixture
def quiet():
    ray_compat.quiet_driver_logs()
    ray_compat.quiet_driver_logs()  # idempotent: one filter per logger
    yield
    for name in ray_compat.RACE_LOGGERS:
        logging.getLogger(name).removeFilter(ray_compat.upload_race_one_line)


def vanished_temp_file_error(tmp_path) -> FileNotFoundError:
    """The error pyarrow's copy raises when a listed temp file is gone (ray/train/_internal/storage.py:119)."""
    gone = tmp_path / ".0f-tmp-searcher-state-s1.pkl"
    try:
        pyarrow.fs.copy_files(str(gone), str(tmp_path / "out.pkl"))
    except FileNotFoundError as e:
        return e
    raise AssertionError("pyarrow copied a file that does not exist")


def test_the_upload_race_is_one_line(tmp_path, quiet):
    for name in ray_compat.RACE_LOGGERS:
        (record,) = log_through(name, vanished_temp_file_error(tmp_path))
        # what prints it on the console: Ray's stderr handler, in Ray's format
        (ray_handler,) = [h for h in logging.getLogger("ray").handlers if type(h).__name__ == "PlainRayHandler"]
        formatted = ray_handler.format(record)
        assert record.getMessage() == ray_compat.RACE_LINE and "\n" not in formatted and len(formatted) <= 120
        assert record.levelno == logging.INFO


def test_other_upload_failures_keep_their_traceback(tmp_path, quiet):
    (record,) = log_through("ray.tune.execution.experiment_state", PermissionError(13, "denied", "/bucket/x"))
    assert record.exc_info and record.levelno == logging.ERROR
    (record,) = log_through("ray.train._internal.syncer", FileNotFoundError(2, "no such bucket", "/bucket/x"))
    assert record.exc_info and record.levelno == logging.ERROR  # a missing file that is no snapshot temp file
