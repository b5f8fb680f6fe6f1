"""Running this project's CLIs as a user does (a subprocess in the repo) and reading what a search wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sample_data import ROOT


def run_cli(*args, timeout=240, env=None, cwd=ROOT):
    t = time.time()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run_search.py"), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})},
    )  # fmt: skip
    proc.seconds = time.time() - t
    return proc


def trial_results(exp: Path) -> dict[str, list[dict]]:
    return {
        d.name: [json.loads(line) for line in (d / "result.json").read_text().splitlines() if line.strip()]
        for d in exp.iterdir()
        if (d / "result.json").exists()
    }


def printed(path) -> str:
    """A path as analysis/shell.py prints it from a process whose working directory is ROOT (the CLIs' in these
    tests): relative when it lies under ROOT (.venv/bin/python after the README's install), else absolute."""
    p = os.path.abspath(path)
    return os.path.relpath(p, ROOT) if p.startswith(f"{ROOT}{os.sep}") else p


def one_line_error(proc, *, within: float = 30) -> str:
    """The one `error:` message, joined again when it was continued past 120 columns on lines indented by two."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.seconds < within
    lines = proc.stderr.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("error:")]
    assert len(starts) == 1, proc.stderr
    message = [lines[starts[0]]]
    for ln in lines[starts[0] + 1 :]:
        if not ln.startswith("  "):
            break
        message.append(ln.strip())
    assert all(len(ln) <= 120 or " " not in ln.strip() for ln in lines[starts[0] :][: len(message)]), proc.stderr
    return " ".join(message)


def rows(exp: Path) -> dict[str, list[dict]]:
    """trial folder -> its result.json rows; tolerates a line being written right now."""
    out = {}
    for d in exp.glob("trial_*"):
        lines = (d / "result.json").read_text().splitlines() if (d / "result.json").exists() else []
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:
                break
        out[d.name] = parsed
    return out


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -c code` in a fresh interpreter in the repo: what a process that has imported nothing yet does."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=timeout)
