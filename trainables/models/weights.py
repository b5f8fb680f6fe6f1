"""Pretrained weights, offline-safe: torchvision's weights API and torch's hub cache, one download per node.

Where a pretrained model's weights come from, in this order:
1. `--weights PATH` (trial config key `weights_path`): a state dict of the torchvision architecture.
2. torch's hub cache, `$TORCH_HOME/hub/checkpoints/<file name of the weights' URL>` (default TORCH_HOME:
   ~/.cache/torch): the file torchvision itself would use; one copied there by hand works offline.
3. Online: downloaded into that cache by torchvision's `Weights.get_state_dict` (hash checked) under a file lock,
   so the trials starting together on one node wait for one download instead of each fetching the file.

`ensure_available` runs in the driver before Ray starts: offline with none of these, the search never starts and
the user gets one line (`WeightsError`) naming the missing file, where to put it and the URL to fetch it from.
Every load uses `torch.load(..., weights_only=True)`: a weights file cannot run code.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock
from torch import nn

PROBE_TIMEOUT = 10  # seconds: a firewall that drops packets must not make the driver hang before saying "offline"


class WeightsError(Exception):
    """Missing or unusable weights: the message is one line saying what is wrong and what to do."""


def cache_file(weights) -> Path:
    """Where torch's hub keeps `weights` (a torchvision WeightsEnum member): $TORCH_HOME/hub/checkpoints/<file>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]


def missing_message(weights) -> str:
    f = cache_file(weights)
    return (
        f"pretrained weights {f} are missing and cannot be downloaded (offline?): on a connected machine fetch "
        f"{weights.url} and copy it to {f.parent}/ (set TORCH_HOME to use another cache), or pass --weights PATH"
    )


def _read(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types; all mean "not a plain state dict"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"cannot load {path} as a state dict with weights_only=True: {first}") from None


def load_state_dict(weights, path: str | None = None, progress: bool = False) -> dict:
    """The state dict of `weights` (a torchvision WeightsEnum member) or of the file `path`; called by each trial."""
    if path:
        return _read(Path(path))
    f = cache_file(weights)
    if f.is_file():  # torch.hub moves a finished download into place: a file that exists is complete
        return _read(f)
    f.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{f}.lock"):  # the first trial on this node downloads; the others wait, then read the file
        try:
            # torchvision's own resnet18(weights=...) loads with weights_only=False; we ask for True.
            return weights.get_state_dict(progress=progress, check_hash=True, weights_only=True)
        except (urllib.error.URLError, OSError) as e:
            raise WeightsError(missing_message(weights)) from e
        except RuntimeError as e:  # the download's sha256 does not match the file name's prefix
            raise WeightsError(f"download of {weights.url} failed: {str(e).splitlines()[0]}") from e


def _reachable(url: str) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT).close()
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def check_architecture(state: dict, architecture: Callable[[], nn.Module], name: str, source) -> None:
    """One line if `state` does not fit `architecture()` exactly (strict keys and shapes)."""
    expected = architecture().state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise WeightsError(
            f"{source} is not a state dict of {name}: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} wrongly shaped keys (e.g. {(missing or unexpected or wrong)[0]})"
        )


def ensure_available(weights, architecture: Callable[[], nn.Module], name: str, path: str | None = None) -> Path:
    """Driver-side, before Ray starts: the weights the trials will read exist on this node and fit the architecture.

    Downloads into the hub cache when online (with a progress bar); raises `WeightsError` (one line) otherwise. The
    reachability probe has a timeout: torch.hub's own download has none and could hang on a silent firewall.
    """
    if path:
        p = Path(path).expanduser().resolve()
        if not p.is_file():
            raise WeightsError(f"--weights {path}: no such file (expected a state dict of {name})")
        check_architecture(_read(p), architecture, name, p)
        return p
    f = cache_file(weights)
    if not f.is_file():
        if not _reachable(weights.url):
            raise WeightsError(missing_message(weights))
        print(f"downloading {weights.url} to {f}", file=sys.stderr, flush=True)
    check_architecture(load_state_dict(weights, progress=True), architecture, name, f)
    return f
