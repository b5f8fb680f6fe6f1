"""search_driver/ray_compat.py against the installed Ray: every private name it uses is where it was, every log
message it filters still reads as it did, every environment variable it sets is still read by Ray. On a Ray where
one of them moved these fail loudly, naming it (production only loses the nicety: the fallbacks)."""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from sample_data import ROOT

from search_driver import ray_compat


def ray_source(module: str) -> str:
    return Path(importlib.import_module(module).__file__).read_text()


def test_the_ray_these_were_checked_on():
    assert ray.__version__ == ray_compat.CHECKED_ON, (
        f"Ray {ray.__version__}: re-check every name in search_driver/ray_compat.py (this file's tests say which "
        "moved), then set CHECKED_ON"
    )


def test_the_private_names_are_where_they_were():
    from ray._private import ray_constants
    from ray._private.state import state
    from ray._raylet import GcsClient, raise_sys_exit_with_custom_error_message
    from ray.experimental.internal_kv import _internal_kv_get

    assert callable(GcsClient) and callable(_internal_kv_get) and callable(state.get_cluster_config)
    assert isinstance(ray_constants.DEBUG_AUTOSCALING_STATUS, str)
    try:
        raise_sys_exit_with_custom_error_message("SIGTERM", exit_code=1)
    except SystemExit as e:
        assert ray_compat.is_ray_sigterm_exit(e), "Ray's SIGTERM exit no longer carries ray_terminate_msg"


def test_the_fallbacks_are_rays_own_answers():
    """Without a cluster (or with a moved name) each helper answers as if the nicety were not there."""
    assert ray_compat.autoscaler_status() == {}
    assert ray_compat.reported_node_groups() is None


@pytest.mark.parametrize(
    "module,text",
    [
        # NO_RESULTS is assembled there from EXPR_RESULT_FILE / EXPR_PROGRESS_FILE: its tail, and the warning's head
        ("ray.tune.analysis.experiment_analysis", "{EXPR_PROGRESS_FILE} were not found"),
        ("ray.tune.analysis.experiment_analysis", "Failed to fetch metrics"),
        *[("ray.tune.tune", noise) for noise in ray_compat.TUNE_STOP_NOISE],
        ("ray.tune.trainable.trainable", "Restored on"),
        ("ray.train._internal.storage", "Checkpoint successfully created"),
    ],
)
def test_the_filtered_messages_still_read_so(module, text):
    assert text in ray_source(module), f"{module} no longer says {text!r}: update ray_compat's filter"


@pytest.mark.parametrize(
    "logger",
    [*ray_compat.RACE_LOGGERS, ray_compat.TUNE_LOGGER, "ray.tune.analysis.experiment_analysis",
     "ray.tune.trainable.trainable", "ray.train._internal.storage"],
)  # fmt: skip
def test_the_filtered_loggers_are_rays_module_loggers(logger):
    assert "logger = logging.getLogger(__name__)" in ray_source(logger), f"{logger} logs under another name now"


@pytest.mark.parametrize(
    "variable,module",
    [
        ("RAY_AIR_NEW_OUTPUT", "ray.air.constants"),
        ("RAY_COLOR_PREFIX", "ray._private.worker"),
        ("TUNE_DISABLE_SIGINT_HANDLER", "ray.tune.tune"),
        ("TUNE_WARN_THRESHOLD_S", "ray.tune.utils.util"),
        ("TUNE_FUNCTION_THREAD_TIMEOUT_S", "ray.tune.trainable.function_trainable"),
        ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "ray.tune.execution.experiment_state"),
    ],
)
def test_the_environment_settings_are_still_read(variable, module):
    assert variable in ray_source(module), f"{module} no longer reads {variable}"


def test_the_assembled_no_results_text():
    from ray.tune.result import EXPR_PROGRESS_FILE, EXPR_RESULT_FILE

    assert ray_compat.NO_RESULTS == f"both {EXPR_RESULT_FILE} and {EXPR_PROGRESS_FILE} were not found"


def test_log_filters_are_installed_once():
    ray_compat.quiet_driver_logs()
    ray_compat.quiet_driver_logs()
    for name in ray_compat.RACE_LOGGERS:
        assert logging.getLogger(name).filters.count(ray_compat.upload_race_one_line) == 1
    logger = logging.getLogger("ray.tune.analysis.experiment_analysis")
    assert logger.filters.count(ray_compat.drop_unreported_warning) == 1


def test_no_private_ray_name_outside_this_module():
    """The one door: no other file of the project imports a private Ray module or name."""
    proc = subprocess.run(
        ["git", "grep", "-nE", r"ray\._private|ray\._raylet|_internal_kv|_local_tuner|_trial_writer|_trial_runs",
         "--", "*.py", ":!tests", ":!bench", ":!search_driver/ray_compat.py"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.stdout == "", proc.stdout
    assert sys.executable  # the grep ran in this checkout
