"""Ctrl-C and SIGTERM during a search: stop cleanly, keep what finished, exit nonzero, say how to resume.

Ray Tune catches SIGINT itself inside `tuner.fit()`: it stops the trials, writes a last experiment snapshot and
returns normally, so run_search.py used to exit 0 and print its usual results table. Here the driver owns SIGINT and
SIGTERM instead (TUNE_DISABLE_SIGINT_HANDLER=1): the first one is recorded and handed to the graceful stop Tune
installs for SIGUSR1 (the same code path as its own SIGINT handling); `received` then tells run_search.py to say
so and exit 130 / 143. A second signal ends the process at once, without the last snapshot. Outside fit (data
loading, tuner setup) the first signal raises KeyboardInterrupt, as Python's default handler would.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from search_driver import ray_compat

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal number, as shells report them

_RECEIVED: list[int] = []  # the stop signals this process received (one search per driver process)


def stopping() -> bool:
    """Whether this process is stopping on a signal. Tune's clean-up then marks the running trials TERMINATED, as
    the time budget does, though its last snapshot keeps them running for --resume (optuna_searcher.EndedTrials)."""
    return bool(_RECEIVED)


class StopSignals:
    """`with StopSignals() as stop: tuner.fit()`; afterwards `stop.received` is the signal number or None."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        ray_compat.own_the_stop_signals()
        for sig in EXIT_CODES:
            self._previous[sig] = signal.signal(sig, self._handle)
        logging.getLogger(ray_compat.TUNE_LOGGER).addFilter(self._drop_tune_noise)
        return self

    def __exit__(self, *exc) -> None:
        if self.received is not None:
            return  # stopping: a second signal during the summary or Ray's shutdown still ends the process at once
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        logging.getLogger(ray_compat.TUNE_LOGGER).removeFilter(self._drop_tune_noise)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.received, 130)

    def _drop_tune_noise(self, record: logging.LogRecord) -> bool:
        return not (self.received and record.getMessage().startswith(ray_compat.TUNE_STOP_NOISE))

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            print(f"\n{name} again: stopping now, without a last snapshot", file=sys.stderr, flush=True)
            os._exit(EXIT_CODES[signum])
        self.received = signum
        _RECEIVED.append(signum)
        tune_stop = signal.getsignal(signal.SIGUSR1)  # Tune's graceful stop, installed while fit() runs
        if not callable(tune_stop):
            raise KeyboardInterrupt
        print(
            f"\n{name}: stopping the search and saving its state (press Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
        tune_stop(signum, frame)
