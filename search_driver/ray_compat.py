"""Ray's internals behind one door: every use of a private Ray name, every Ray setting made through the environment,
and every filter on Ray's log messages, each with its reason and a fallback that degrades to Ray's own behaviour.

Checked on Ray 2.60.0 (CHECKED_ON). tests/test_ray_compat.py fails loudly on a Ray where a private name moved or a
filtered message changed its wording; in production a moved name only loses the nicety (a slower or longer message),
never the search.
"""

from __future__ import annotations

import json
import logging
import os
import sys

CHECKED_ON = "2.60.0"

# ---------------------------------------------------------------------------------------------------------------
# Private names (each returns Ray's default answer when the name has moved)


def gcs_refuses_token(address: str) -> bool:
    """Whether the cluster's GCS at `address` refuses this client's auth token. ray.init retries a refusing GCS for
    minutes; constructing a GcsClient (ray._raylet) answers at once. Fallback: False (ray.init then reports it)."""
    try:
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:
        return False
    try:
        GcsClient(address=address)
    except AuthenticationError:
        return True
    except Exception:  # anything else: ray.init retries and reports it
        return False
    return False


def reported_node_groups() -> dict[str, dict] | None:
    """Worker node groups of the cluster config reported to the GCS (KubeRay, autoscaler v2): name -> resources.
    Ray has no public read of it (ray._private.state). Fallback: None (the caller tries the other sources)."""
    try:
        from ray._private.state import state

        reported = state.get_cluster_config()
    except Exception:  # moved, an older GCS without the key, or Ray Client mode
        return None
    if reported is None or not reported.node_group_configs:
        return None
    return {g.name: dict(g.resources) for g in reported.node_group_configs if g.max_count != 0}


def autoscaler_status() -> dict:
    """The autoscaler's status record in the GCS key-value store (what `ray status` prints), read with Ray's
    internal_kv. Fallback: {} (no autoscaler seen)."""
    try:
        from ray._private import ray_constants
        from ray.experimental.internal_kv import _internal_kv_get

        return json.loads(_internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS) or "{}")
    except Exception:
        return {}


def is_ray_sigterm_exit(exc: BaseException) -> bool:
    """A SystemExit raised by Ray's SIGTERM handler in a worker (ray/_private/worker.py tags it `ray_terminate_msg`)."""
    return isinstance(exc, SystemExit) and hasattr(exc, "ray_terminate_msg")


# ---------------------------------------------------------------------------------------------------------------
# Ray settings made through the environment (documented Ray / Tune environment variables)


def driver_settings() -> None:
    """Call in the driver before ray.init and Tuner.fit.

    - RAY_AIR_NEW_OUTPUT=0: Tune's new output engine prints its experiment box and a TensorBoard hint even at
      verbose=0; the legacy reporter at verbose=0 prints nothing (our console: search_driver/console.py).
    - RAY_COLOR_PREFIX=0 when not on a terminal: lines Ray forwards from trial processes carry no colour codes.
    - TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S=0: the forced snapshot after every checkpoint
      (search_driver/tuner.py) is by design, not a warning.
    """
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        os.environ["RAY_COLOR_PREFIX"] = "0"
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def before_importing_tune() -> None:
    """TUNE_WARN_THRESHOLD_S=5, read when ray.tune is first imported: Tune warns when a step of its loop (our
    callbacks included) takes over 0.5 s, routine on 2 busy cores, in a 140-column line."""
    os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "5")


def own_the_stop_signals() -> None:
    """TUNE_DISABLE_SIGINT_HANDLER=1, read when fit() starts: SIGINT is ours (search_driver/interrupts.py), which hands
    it to Tune's graceful stop (its SIGUSR1 handler)."""
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"


def trial_process_setup() -> None:
    """Ray's runtime_env `worker_process_setup_hook`: runs in every worker process of the search.

    - TUNE_FUNCTION_THREAD_TIMEOUT_S=60: a reused trial process (reuse_actors) gives the last trial's thread only 2 s to
      end before it fails the next trial; ending a Keras fit took up to 3.3 s on a busy machine.
    - Tune's Trainable.restore logs "Restored on <ip> from checkpoint: Checkpoint(...)" (a 170-column line) for each
      trial a --resume continues, and Ray's storage layer "Checkpoint successfully created" for every epoch: the
      console's own lines say both.
    - Ray's SIGTERM exit that lands in a weakref callback or `__del__` is printed by Python as "Exception ignored" and
      an 8-line traceback; Python swallows the exception either way, only the printing is dropped.
    """
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")
    logging.getLogger("ray.tune.trainable.trainable").setLevel(logging.WARNING)
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    default = sys.unraisablehook
    if getattr(default, "quiet_ray_sigterm", False):
        return

    def hook(unraisable):
        if not is_ray_sigterm_exit(unraisable.exc_value):
            default(unraisable)

    hook.quiet_ray_sigterm = True
    sys.unraisablehook = hook


# ---------------------------------------------------------------------------------------------------------------
# Filters on Ray's log messages: (logger, what the message says) pairs, each matched on its text


def _add_filter(name: str, fn) -> None:
    logger = logging.getLogger(name)
    if fn not in logger.filters:
        logger.addFilter(fn)


# ray/tune/analysis/experiment_analysis.py `_fetch_trial_dataframe`: a trial folder without results
NO_RESULTS = "both result.json and progress.csv were not found"


def drop_unreported_warning(record: logging.LogRecord) -> bool:
    """Under --time-budget a trial the searcher starts in the last seconds has no epoch when Tune stops it; Ray's
    ResultGrid then warns "Failed to fetch metrics for 1 trial(s):" with a 250-column line per trial. Nothing is lost
    and the summary says it in one line; any other failure to read results is kept."""
    lines = record.getMessage().splitlines() or [""]
    return not (
        lines[0].startswith("Failed to fetch metrics") and lines[1:] and all(NO_RESULTS in x for x in lines[1:])
    )


# The snapshot-upload race (search_driver/snapshots.py): the loggers of the forced snapshot's wait and the next
# upload's start (ray/tune/execution/experiment_state.py, ray/train/_internal/syncer.py).
RACE_LOGGERS = ("ray.tune.execution.experiment_state", "ray.train._internal.syncer")
RACE_LINE = "snapshot upload raced a save; the next upload copies it again"


def is_upload_race(record: logging.LogRecord) -> bool:
    """A failed upload whose cause is a vanished temp file of a snapshot save (`.<uuid>-tmp-...`)."""
    exc = record.exc_info[1] if record.exc_info else None
    text = str(exc) if exc is not None else record.getMessage()
    named = isinstance(exc, FileNotFoundError) or "FileNotFoundError" in text
    return named and "-tmp-" in text


def upload_race_one_line(record: logging.LogRecord) -> bool:
    if is_upload_race(record):
        record.msg, record.args, record.exc_info, record.exc_text = RACE_LINE, (), None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
    return True


def quiet_driver_logs() -> None:
    """Call in the driver before ray.init and Tuner.fit (also on --resume); idempotent. Ray's notice that a fresh
    local instance uses token authentication is a 200-column line of no use to a search on this machine."""
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    _add_filter("ray.tune.analysis.experiment_analysis", drop_unreported_warning)
    for name in RACE_LOGGERS:
        _add_filter(name, upload_race_one_line)


# Tune's own messages on an interrupt (ray/tune/tune.py): its resume hint is Python (Tuner.restore), ours the command.
TUNE_STOP_NOISE = ("Stop signal received", "Experiment has been interrupted", "Trials did not complete")
TUNE_LOGGER = "ray.tune.tune"


def quiet_analysis_logs() -> None:
    """ExperimentAnalysis warns "no result for trial X" for every trial still pending: not for report.py's reader."""
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
