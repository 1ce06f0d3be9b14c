"""The one in-memory layout every reader returns (:class:`FieldData`), in a module of its own so that readers of
every source (own HDF5, PDEBench, The Well, ERA5 stores) share it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class FieldData:
    """Fields read from one file.

    Shapes:
        fields[name]: ``(N, *spatial)`` or ``(N, T, *spatial)``; coords[name]: ``(len,)`` for ``x``/``y``/``z``
        (position on the domain, dimensionless) and ``t`` (time, in the source's units).
    """

    fields: dict[str, Tensor]
    coords: dict[str, Tensor] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    path: str = ""

    @property
    def num_samples(self) -> int:
        return next(iter(self.fields.values())).shape[0]

    def stack(self, channels: tuple[str, ...] | list[str]) -> Tensor:
        """Stack named fields as channels: ``(N, C, *rest)``; the fields must have equal shapes."""
        missing = [c for c in channels if c not in self.fields]
        if missing:
            raise ValueError(f"{self.path}: missing field(s) {missing}; available: {sorted(self.fields)}")
        shapes = {c: tuple(self.fields[c].shape) for c in channels}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"{self.path}: cannot stack fields with different shapes {shapes}")
        return torch.stack([self.fields[c] for c in channels], dim=1)


__all__ = ["FieldData"]
