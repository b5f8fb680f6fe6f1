"""experiment.json: what a search was (model, data, split, CLI arguments, space, versions), next to Ray's files.

Paths go through pyarrow's filesystem layer, so the same code reads and writes local folders and s3:// or gs://
storage (Ray's storage_path uses the same layer).
"""

from __future__ import annotations

import json
import subprocess
from importlib import metadata
from pathlib import Path

import pyarrow.fs as pafs

EXPERIMENT_FILE = "experiment.json"
PACKAGES = ("torch", "torchvision", "ray", "optuna", "numpy", "tensorflow-cpu", "tensorflow", "keras", "scikit-learn")


def is_uri(path: str) -> bool:
    return "://" in str(path)


def normalize_storage_path(path: str) -> str:
    """Ray wants absolute local paths; URIs pass through."""
    return str(path) if is_uri(path) else str(Path(path).expanduser().resolve())


def join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *parts])


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(path) if is_uri(path) else (pafs.LocalFileSystem(), str(path))


def write_json(path: str, obj: dict) -> None:
    fs, p = filesystem(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(p) as f:
        f.write(json.dumps(obj, indent=2, default=str).encode())


def read_json(path: str) -> dict:
    fs, p = filesystem(path)
    with fs.open_input_stream(p) as f:
        return json.loads(f.read().decode())


def exists(path: str) -> bool:
    fs, p = filesystem(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def git_sha(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else None  # not a git checkout, or no commit yet
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions(names=PACKAGES) -> dict:
    """Installed versions of those of `names` that are installed (the experiment record's, or the model card's)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out
