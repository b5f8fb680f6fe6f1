"""`tune` for the space modules: Ray Tune's sampling functions, or, where Ray is not installed, stand-ins that keep a
space module importable for its constants and DEFAULTS.

A search needs Ray, and a space's ranges are Tune domains (`tune.choice`, `tune.loguniform`, ...). The first trial's
config (constants and DEFAULTS, `search_spaces.first_config`) needs no Ray: bench/gpu_check.py measures it on a GPU
machine that may have only torch. There, `tune.<anything>(...)` returns a `Domain` that records the call (it samples
nothing), so `isinstance(value, Domain)` still tells a range from a constant.
"""

from __future__ import annotations

try:
    from ray import tune
    from ray.tune.search.sample import Domain
except ModuleNotFoundError as e:  # no Ray on this machine: the search cannot run, its first config can be read
    if e.name not in ("ray", "ray.tune"):
        raise

    class Domain:
        """A range of a space module, as written (`tune.loguniform(3e-4, 1e-2)` -> Domain("loguniform", ...))."""

        def __init__(self, kind: str, *args, **kwargs):
            self.kind, self.args, self.kwargs = kind, args, kwargs

        def __repr__(self) -> str:
            return f"tune.{self.kind}{self.args}"

    class _Tune:
        def __getattr__(self, kind: str):
            return lambda *args, **kwargs: Domain(kind, *args, **kwargs)

    tune = _Tune()

__all__ = ["Domain", "tune"]
