"""A command's settled settings: read by attribute like argparse's namespace, never written; `changed()` returns a new
one. run_search.py's are built by search_driver/cli.settle, report.py's by its parse_args."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class Settings(Mapping):
    """Read-only flags and the values derived from them. A later stage that decides one (the image size the data
    was stored at, the GPU share, the plan's horizon) hands back what it decided and the caller makes a new Settings
    with `changed(...)`, so no step can alter what an earlier one read."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any] | None = None, **more: Any):
        object.__setattr__(self, "_values", {**(values or {}), **more})

    @classmethod
    def of(cls, namespace) -> Settings:
        """From argparse's Namespace (or a Settings)."""
        return cls(namespace if isinstance(namespace, Mapping) else vars(namespace))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"settings are read-only: use settings.changed({name}=...) for a new one")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("settings are read-only")

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __reduce__(self):  # pickled to Ray's workers with the trainable
        return (Settings, (dict(self._values),))

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    def changed(self, **values: Any) -> Settings:
        """A copy with `values` replacing (or adding) these keys."""
        return Settings(self._values, **values)

    def as_dict(self) -> dict[str, Any]:
        """What experiment.json saves as "args" (and --resume reads back)."""
        return dict(self._values)
