"""report.py's progress, readable in a terminal and in a log file alike (`python report.py ... 2>&1 | tee log`).

    step("drawing the plots")                 # "[   12.3 s] drawing the plots": when each step begins
    with bar(20, "retrain seed 0", "epoch") as b:
        b.update(1); b.set_postfix(val_loss="0.931")

On a terminal `bar` is a tqdm bar; in a file or pipe it prints one plain line per update instead of tqdm's
carriage-return redraws (which a log file keeps as one endless line). Everything goes to stderr, so stdout keeps
only the result line.
"""

from __future__ import annotations

import sys
import time

_T0 = time.time()


def _stream():
    return sys.stderr


def is_terminal() -> bool:
    return _stream().isatty()


def restart_clock() -> None:
    global _T0
    _T0 = time.time()


def step(text: str) -> None:
    """One line saying a step begins, with the seconds since the start of the report."""
    print(f"[{time.time() - _T0:7.1f} s] {text}", file=_stream(), flush=True)


class LineBar:
    """tqdm's update/set_postfix/close, printed as one line per update (for log files and pipes)."""

    def __init__(self, total: int, desc: str, unit: str):
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.postfix: dict = {}
        self._t0 = time.time()
        self._print()  # "0/N" as the bar starts: the first unit may take a while (imports, first epoch)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def update(self, n: int = 1) -> None:
        self.n += n
        self._print()

    def _print(self) -> None:
        post = "".join(f", {k}={v}" for k, v in self.postfix.items())
        elapsed = time.time() - self._t0
        print(
            f"[{time.time() - _T0:7.1f} s] {self.desc}: {self.n}/{self.total} {self.unit}{post} ({elapsed:.1f} s)",
            file=_stream(),
            flush=True,
        )

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def bar(total: int, desc: str, unit: str):
    """A progress bar over `total` units: tqdm on a terminal, LineBar otherwise. set_postfix is printed with the
    next update(), so call it before update()."""
    if is_terminal():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=_stream())
    return LineBar(total, desc, unit)
