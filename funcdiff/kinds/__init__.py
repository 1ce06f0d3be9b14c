"""Model kinds: one class per kind of model, looked up by the config's ``forecast.kind`` (``"none"`` is a field model).

This module is the registry and nothing else: it maps each name to the class's module path and imports a kind only
when it is looked up, so :mod:`funcdiff.config` validates names without importing torch. The contract every kind
implements, and how to add one, is in :mod:`funcdiff.kinds.base`.

``KINDS[name]`` -> the class; :func:`model_kind` -> the class of a name or the instance of a run config.
"""

from __future__ import annotations

from importlib import import_module
from typing import Iterator, Mapping

_PATHS = {
    "none": "funcdiff.kinds.field:FieldKind",
    "autoregressive": "funcdiff.kinds.autoregressive:AutoregressiveKind",
    "rolling": "funcdiff.kinds.rolling:RollingKind",
    "deterministic": "funcdiff.kinds.deterministic:DeterministicKind",
    "trajectory": "funcdiff.kinds.trajectory:TrajectoryKind",
    "super_resolution": "funcdiff.kinds.super_resolution:SuperResolutionKind",
}

KIND_NAMES: tuple[str, ...] = tuple(_PATHS)


class _Registry(Mapping):
    """name -> kind class, each imported on first lookup."""

    def __getitem__(self, name: str):
        if name not in _PATHS:
            raise KeyError(f"unknown model kind {name!r}; valid: {list(_PATHS)}")
        module, cls = _PATHS[name].split(":")
        return getattr(import_module(module), cls)

    def __iter__(self) -> Iterator[str]:
        return iter(_PATHS)

    def __len__(self) -> int:
        return len(_PATHS)


KINDS: Mapping = _Registry()


def model_kind(name_or_config):
    """The kind class of a name (``"rolling"``), or the kind instance of a :class:`~funcdiff.config.RunConfig`."""
    if isinstance(name_or_config, str):
        return KINDS[name_or_config]
    return KINDS[name_or_config.forecast.kind](name_or_config)


__all__ = ["KINDS", "KIND_NAMES", "model_kind"]
