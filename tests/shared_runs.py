"""Searches the tests read but never change, run once for the whole test run, also when pytest-xdist runs it in
several worker processes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def built_once(tmp_path_factory, name: str, build) -> Path:
    """`build(folder)` run once for the whole test run, also under pytest-xdist: its workers share the run's base
    temp folder, the first to ask builds under a file lock, the others wait and reuse the folder (xdist's documented
    recipe for session fixtures that must run once). A build that fails is not reused: the next asker builds again."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder, done = root / f"once-{name}", root / f"once-{name}.done"
    with FileLock(f"{folder}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def finished_search(tmp_path_factory, name: str, image_folder, torch_home, *flags):
    """run_search.py --smoke-test on the tiny image folder into <folder>/<name>, once per test run (`built_once`):
    with its own data cache and the seeded TORCH_HOME (the function-scoped fixtures that set them are not active
    yet); `{folder}` in a flag is the run's own folder. `.exp` the experiment's folder, `.storage` its
    --storage-path, `.proc` the process's returncode, stdout and stderr (kept in files: a worker that did not run it
    reads the same)."""
    from types import SimpleNamespace

    from cli_run import run_cli

    def build(folder: Path) -> None:
        flags_here = [str(f).format(folder=folder) for f in flags]
        proc = run_cli("--data-dir", image_folder, "--smoke-test", "--storage-path", folder / "storage", "--num-cpus", 2,
                       "--name", name, *flags_here, timeout=300,
                       env={"CIFAR_TUNE_CACHE": str(folder / "cache"), "TORCH_HOME": str(torch_home)})  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        (folder / "stdout.txt").write_text(proc.stdout)
        (folder / "stderr.txt").write_text(proc.stderr)

    folder = built_once(tmp_path_factory, name, build)
    proc = SimpleNamespace(returncode=0, stdout=(folder / "stdout.txt").read_text(),
                           stderr=(folder / "stderr.txt").read_text())  # fmt: skip
    storage = folder / "storage"
    return SimpleNamespace(exp=storage / name, storage=storage, proc=proc)
