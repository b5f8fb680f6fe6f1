"""Text for the user's shell: the commands the tools print (resume, report, predict, watch), naming the interpreter
and the tools that are running, so they work when pasted; and `error:` lines that fit 120 columns.

The README installs into `.venv` without activating it, so `python` or `optuna-dashboard` in a new shell would be the
system's (or nothing). Every printed command therefore starts with the running interpreter (`sys.executable`, e.g.
`.venv/bin/python`, relative when it lies under the current directory) or a tool from the same bin folder
(`.venv/bin/optuna-dashboard`).
"""

from __future__ import annotations

import os
import shlex
import sys
import textwrap
from pathlib import Path

WIDTH = 120
ROOT = Path(__file__).resolve().parent.parent  # the repository: run_search.py, report.py, predict.py


def shell_path(path: str | os.PathLike, executable: bool = False) -> str:
    """A local path as a shell word: relative to the current directory when it lies under it, else absolute.
    `executable`: a program to run, which needs a slash (`./name`) not to be looked up on PATH instead."""
    p = os.path.abspath(os.fspath(path))
    cwd = os.getcwd()
    if p == cwd:
        return "."
    if p.startswith(cwd.rstrip(os.sep) + os.sep):
        p = os.path.relpath(p, cwd)
        if executable and os.sep not in p:
            p = f".{os.sep}{p}"
    return shlex.quote(p)


def python() -> str:
    """The running interpreter, e.g. `.venv/bin/python` (not resolved: a venv's python is a symlink to the system's,
    and only the link's path selects the venv)."""
    return shell_path(sys.executable, executable=True) if sys.executable else "python3"


def tool(name: str) -> str:
    """A console script of the running environment (optuna-dashboard, tensorboard, mlflow): the one next to the
    interpreter when it is there, else the bare name (found on PATH, or installed by the user)."""
    beside = Path(sys.executable).parent / name if sys.executable else None
    return shell_path(beside, executable=True) if beside is not None and beside.is_file() else name


def command(script: str, *words: str) -> str:
    """`python script words...`: the running interpreter and the repository's script. `words` are shell words
    already (quote values with `shlex.quote`, paths with `path_arg`)."""
    return " ".join([python(), shell_path(ROOT / script), *words])


def path_arg(path: str | os.PathLike) -> str:
    """An experiment or report path as a shell word: a URI (s3://, gs://) as it is, a local path shortened."""
    return shlex.quote(str(path)) if "://" in str(path) else shell_path(path)


def command_lines(lead: str, cmd: str, width: int = WIDTH) -> str:
    """`lead` and a command in lines of at most `width` columns: past it, the command goes on after ` \\` on lines
    indented by 4, which a shell joins again when the lines are pasted (only a word longer than a line is longer)."""
    words = [shlex.quote(w) for w in shlex.split(cmd)]
    lines, line = [], lead + words[0]
    for w in words[1:]:
        if len(line) + len(w) + 3 > width:  # " w \"
            lines.append(line + " \\")
            line = "    " + w
        else:
            line += " " + w
    return "\n".join([*lines, line])


def error_lines(message: str, width: int = WIDTH) -> str:
    """`error: MESSAGE` in lines of at most `width` columns: one message, continued on lines indented by two spaces,
    broken only at spaces (a path or URL longer than the line stays whole on its own line). A message whose later
    lines are commands (`...; export it with:\\nCMD`) gets each on its own indented line, whole, to paste."""
    text, *commands = message.split("\n")
    lines = [
        textwrap.fill(f"error: {text}", width, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)
    ]
    return "\n".join(lines + [command_lines("  ", c, width) for c in commands])
