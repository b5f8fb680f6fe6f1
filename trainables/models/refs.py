"""The --model forms of a model from outside the registry (a builder in a file or a module, a timm name) and the
errors a bad model raises. Imported by the registry, user.py and timm_models.py alike; it imports none of them."""

from __future__ import annotations

import re

FILE_REF = re.compile(r"^(?P<path>.+\.py):(?P<function>[A-Za-z_]\w*)$")
MODULE_REF = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<function>[A-Za-z_]\w*)$")
TIMM_REF = re.compile(r"^timm:(?P<name>[^:\s]+?)(?P<pretrained>:pretrained)?$")


class UnknownModelError(ValueError):
    pass


class ModelError(UnknownModelError):
    """A user model that cannot be used: one line naming the file (or module, or timm name) and the cause."""


def kind(ref: str) -> str | None:
    """The form of `ref`: "timm", "file", "module", or None when it is none of the user forms."""
    if TIMM_REF.match(ref):
        return "timm"
    if FILE_REF.match(ref):
        return "file"
    if MODULE_REF.match(ref):
        return "module"
    return None
