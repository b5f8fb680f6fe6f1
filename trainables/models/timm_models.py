"""Any timm architecture: `--model timm:NAME` from scratch, `timm:NAME:pretrained` with timm's pretrained weights.

From scratch, a timm model trains like the project's own nets: at the stored image size, normalised with the data
set's statistics (its `pretrained_cfg` describes weights it does not have, so it is dropped); an architecture with a
fixed input size (ViTs) is built for that size through timm's `img_size`.

Pretrained, the weights come through timm's own loading (`timm.create_model(NAME, pretrained=True)`): from the
Hugging Face cache, downloaded by timm when online, or from `--weights PATH` (timm's `pretrained_cfg_overlay` file: a
state dict or .safetensors of the architecture with its original head, read weights-only). timm replaces the head
by one for num_classes. Its `pretrained_cfg` (input size, mean/std, classifier) then drives the training loop as
resnet18_pretrained's does (trainables/torch_loop.input_config, split_head): batches resized to `resolution`
(searched, up to the weights' own input size), normalised with its mean/std, its classifier the head that
freeze_epochs / backbone_lr_mult treat apart. `check_weights` runs in the driver before Ray starts: offline without
weights it is one line, as for resnet18_pretrained (trainables/models/weights.py).

List the names with `python -c "import timm; print(timm.list_models())"` (`timm.list_models('*resnet*',
pretrained=True)` for those with weights).
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

from .refs import TIMM_REF, ModelError
from .weights import WeightsError, _reachable


def parse(ref: str) -> tuple[str, bool]:
    """(timm name, pretrained) of "timm:NAME" or "timm:NAME:pretrained"."""
    m = TIMM_REF.match(ref)
    return m["name"], bool(m["pretrained"])


def check_name(name: str) -> None:
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise ModelError(
            f"--model timm:{name}: timm {timm.__version__} has no model {name!r}"
            + (f" (close: {', '.join(close)})" if close else "")
            + "; list them: python -c \"import timm; print(timm.list_models('*resnet*'))\""
        )


def native_side(name: str) -> int:
    """The input side the architecture's pretrained weights were trained at (its pretrained_cfg)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    return int(cfg.input_size[-1]) if cfg is not None else 224


def build(
    name: str,
    pretrained: bool,
    num_classes: int,
    *,
    input_size: int | None = None,
    resolution: int | None = None,
    weights_path: str | None = None,
    load_weights: bool = True,
):
    """timm's `name` with a head for num_classes: from scratch, or with pretrained weights (`load_weights=False`:
    the architecture only, for loading a fine-tuned state dict: report.py, export)."""
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    fixed = bool(cfg is not None and cfg.fixed_input_size)
    if not pretrained:
        extra = {"img_size": int(input_size)} if fixed and input_size else {}
        model = timm.create_model(name, num_classes=num_classes, **extra)
        model.pretrained_cfg = None  # no weights: the loop feeds the stored size with the data's statistics
        return model
    side = int(resolution or native_side(name))
    extra = {"img_size": side} if fixed else {}  # timm resamples the position embeddings of the weights
    overlay = {"file": str(weights_path)} if weights_path and load_weights else None
    model = timm.create_model(
        name, pretrained=load_weights, pretrained_cfg_overlay=overlay, num_classes=num_classes, **extra
    )
    cfg = dict(model.pretrained_cfg)
    model.pretrained_cfg = {**cfg, "input_size": (int(cfg["input_size"][0]), side, side)}
    return model


def builder(ref: str):
    """The registry's builder for a timm reference: the config keys it takes are its parameters."""
    name, pretrained = parse(ref)

    def timm_model(
        num_classes: int = 1000,
        input_size: int | None = None,
        resolution: int | None = None,
        weights_path: str | None = None,
        load_weights: bool = True,
    ):
        return build(
            name,
            pretrained,
            num_classes,
            input_size=input_size,
            resolution=resolution,
            weights_path=weights_path,
            load_weights=load_weights,
        )

    return timm_model


# ---------------------------------------------------------------------------------------------------------------
# the driver's weights check (search_driver/cli.check_weights)


def _hf_files(cfg) -> list[str]:
    # timm's Hub loading reads the cfg's file name, else model.safetensors, else pytorch_model.bin
    return [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]


def cached_weights(name: str) -> str | None:
    """The weights file timm would read for `name` if it is already on this machine, else None."""
    import torch
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in _hf_files(cfg):
            found = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(found, str):
                return found
    if cfg.url:
        f = Path(torch.hub.get_dir()) / "checkpoints" / cfg.url.rsplit("/", 1)[-1]
        if f.is_file():
            return str(f)
    return None


def missing_message(name: str) -> str:
    from huggingface_hub.constants import HF_HUB_CACHE
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    where = f"{HF_HUB_CACHE}/models--{cfg.hf_hub_id.replace('/', '--')}" if cfg.hf_hub_id else "the torch hub cache"
    return (
        f"pretrained weights of timm's {name} are not in {where} and cannot be downloaded (offline?): on a connected "
        f"machine run python -c \"import timm; timm.create_model('{name}', pretrained=True)\" and copy that folder "
        "here (HF_HOME sets the cache), or pass --weights PATH (a state dict or .safetensors of the architecture)"
    )


def check_weights(name: str, path: str | None = None) -> Path | str:
    """Driver-side, before Ray starts: the weights the trials will load exist here (downloaded by timm if online)
    and fit the architecture; WeightsError (one line) otherwise. Returns the file."""
    import timm
    from timm.models import get_pretrained_cfg

    if path:
        p = Path(path).expanduser().resolve()
        if not p.is_file():
            raise WeightsError(f"--weights {path}: no such file (expected a state dict of timm's {name})")
        try:  # the original head, so a strict load checks every tensor of the file
            timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(p)})
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsError(f"{p} is not a state dict of timm's {name}: {first}") from None
        return p
    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise WeightsError(
            f"timm {timm.__version__} has no pretrained weights for {name}: use timm:{name} (from scratch), or "
            "--weights PATH"
        )
    if found := cached_weights(name):
        return found
    if cfg.hf_hub_id:
        from huggingface_hub import hf_hub_url

        url = hf_hub_url(cfg.hf_hub_id, _hf_files(cfg)[0])
    else:
        url = cfg.url
    if not _reachable(url):
        raise WeightsError(missing_message(name))
    print(f"downloading timm's {name} weights ({url})", file=sys.stderr, flush=True)
    try:
        timm.create_model(name, pretrained=True)
    except Exception as e:
        raise WeightsError(f"timm could not download the weights of {name}: {str(e).splitlines()[0]}") from None
    return cached_weights(name) or url
