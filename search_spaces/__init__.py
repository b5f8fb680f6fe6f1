"""One search-space module per model: `SPACE` (Tune domains, with the reasons for each range), `DEFAULTS` (the first
config tried) and `MAX_EPOCHS` (every trial's schedule horizon and ASHA's max_t unless --max-epochs says otherwise).
`get_space(model)` finds them through the model registry (trainables/models); `describe(space)` makes them JSON for experiment.json.

A user's builder file brings its own SPACE / DEFAULTS / MAX_EPOCHS, each optional, laid over the shared space
(trainables/models/user.own_space); `space_note(model)` is the one line that says what the shared space supplies."""

from __future__ import annotations

import importlib

from trainables.models import MODELS, UnknownModelError, get_spec


def _module(model: str):
    """The space module registered for `model` (trainables/models: ModelSpec.space)."""
    try:
        spec = get_spec(model)
    except UnknownModelError as e:
        if e.__class__ is not UnknownModelError:  # a user model's own error (no such file, ...): already one line
            raise
        raise KeyError(f"no search space for model {model!r}; known: {', '.join(MODELS)}") from e
    return importlib.import_module(f"{__name__}.{spec.space}")


def _own(model: str):
    """(space, defaults, max_epochs, note) of a user's builder file or module, None for the others."""
    if get_spec(model).kind not in ("file", "module"):
        return None
    from trainables.models.user import own_space

    return own_space(model)


def get_space(model: str) -> tuple[dict, dict]:
    """(space, defaults) for `model`."""
    if own := _own(model):
        return dict(own[0]), dict(own[1])
    module = _module(model)
    space, defaults = dict(module.SPACE), dict(module.DEFAULTS)
    if hasattr(module, "adapt"):  # a space shared by models that differ in one axis (timm_pretrained: resolution)
        module.adapt(space, defaults, model)
    return space, defaults


def get_max_epochs(model: str) -> int:
    """The model's default epochs per trial (its space module's MAX_EPOCHS)."""
    if own := _own(model):
        return own[2]
    return int(_module(model).MAX_EPOCHS)


def space_note(model: str) -> str | None:
    """One line when `model` searches the shared space because it brings no space of its own, else None."""
    if own := _own(model):
        return own[3]
    if get_spec(model).kind == "timm" and get_spec(model).space == "common":
        from .common import MAX_EPOCHS

        return (
            f"note: {model} from scratch searches the shared space (search_spaces/common.py), {MAX_EPOCHS} epochs "
            "per trial (docs/own-model.md)"
        )
    return None


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
