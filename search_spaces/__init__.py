"""One search-space module per model: `SPACE` (Tune domains, with the reasons for each range), `DEFAULTS` (the first
config tried) and `MAX_EPOCHS` (every trial's schedule horizon and ASHA's max_t unless --max-epochs says otherwise).
`get_space(model)` finds them through the model registry (trainables/models); `describe(space)` makes them JSON for experiment.json."""

from __future__ import annotations

import importlib

from trainables.models import MODELS, UnknownModelError, get_spec


def _module(model: str):
    """The space module registered for `model` (trainables/models: ModelSpec.space)."""
    try:
        spec = get_spec(model)
    except UnknownModelError as e:
        raise KeyError(f"no search space for model {model!r}; known: {', '.join(MODELS)}") from e
    return importlib.import_module(f"{__name__}.{spec.space}")


def get_space(model: str) -> tuple[dict, dict]:
    """(space, defaults) for `model`."""
    module = _module(model)
    return dict(module.SPACE), dict(module.DEFAULTS)


def get_max_epochs(model: str) -> int:
    """The model's default epochs per trial (its space module's MAX_EPOCHS)."""
    return int(_module(model).MAX_EPOCHS)


def first_config(model: str) -> dict:
    """The first trial's config of `model`'s space: its constants and its DEFAULTS (readable without Ray)."""
    from .ranges import Domain

    space, defaults = get_space(model)
    return {k: v for k, v in space.items() if not isinstance(v, Domain)} | defaults


def describe(space: dict) -> dict:
    """JSON-able description of Tune domains: {"lr": {"type": "float", "lower": ..., "upper": ..., "log": true}}."""
    from ray.tune.search import sample

    out = {}
    for key, dom in space.items():
        if isinstance(dom, sample.Categorical):
            out[key] = {"type": "choice", "values": list(dom.categories)}
        elif isinstance(dom, (sample.Float, sample.Integer)):
            log = isinstance(dom.get_sampler(), sample.LogUniform)
            kind = "float" if isinstance(dom, sample.Float) else "int"
            out[key] = {"type": kind, "lower": dom.lower, "upper": dom.upper, "log": log}
        else:
            out[key] = {"type": "constant", "value": dom}
    return out
