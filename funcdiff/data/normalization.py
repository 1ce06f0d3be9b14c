"""Per-channel normalisation ``x -> (x - mean) / std``, fitted once and stored as plain JSON-able numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from funcdiff.utils import device_constant


@dataclass(frozen=True)
class Normalizer:
    """Per-channel affine normalisation; ``mean`` and ``std`` are float64 tensors of shape ``(C,)``.

    A channel with (numerically) zero spread gets ``std = 1`` so encoding never divides by zero.
    """

    mean: Tensor
    std: Tensor
    channel_names: tuple[str, ...] | None = None
    _on_device: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape:
            raise ValueError(f"mean and std must both have shape (C,), got {tuple(self.mean.shape)} "
                             f"and {tuple(self.std.shape)}")
        if not bool(torch.isfinite(self.mean).all() and (self.std > 0).all()):
            raise ValueError(f"mean must be finite and std positive, got mean={self.mean.tolist()}, "
                             f"std={self.std.tolist()}")
        if self.channel_names is not None and len(self.channel_names) != self.mean.numel():
            raise ValueError(f"{len(self.channel_names)} channel names for {self.mean.numel()} channels")

    def __getstate__(self) -> dict:
        """Pickling leaves out the copies on devices (remade on first use)."""
        return {**self.__dict__, "_on_device": {}}

    @property
    def num_channels(self) -> int:
        return self.mean.numel()

    @classmethod
    def fit(cls, x: Tensor, channel_dim: int = 1, channel_names: Sequence[str] | None = None,
            eps: float = 1e-12) -> "Normalizer":
        """Mean and population std of each channel over all other axes (computed in float64).

        Shapes:
            x: ``(N, C, *rest)`` with the default ``channel_dim=1``.
        """
        x = torch.movedim(x.detach(), channel_dim, 0)
        means, stds = [], []
        for channel in x:
            values = channel.to(torch.float64)
            means.append(values.mean())
            stds.append(values.std(correction=0))
        std = torch.stack(stds)
        std = torch.where(std > eps, std, torch.ones_like(std))
        return cls(torch.stack(means), std, tuple(channel_names) if channel_names is not None else None)

    def _view(self, name: str, x: Tensor, channel_dim: int) -> Tensor:
        """The statistic ``name`` (``mean`` or ``std``) in x's dtype on x's device (moved there once, then kept:
        guidance decodes at every step), shaped to broadcast along ``channel_dim``."""
        dim = channel_dim % x.ndim
        if x.shape[dim] != self.num_channels:
            raise ValueError(f"expected {self.num_channels} channels on axis {dim}, got shape {tuple(x.shape)}")
        shape = [1] * x.ndim
        shape[dim] = self.num_channels
        return device_constant(self._on_device, name, x.device, lambda: getattr(self, name), x.dtype).view(shape)

    def encode(self, x: Tensor, channel_dim: int = 1) -> Tensor:
        """Physical -> normalised: ``(x - mean) / std``. Shapes: ``x`` ``(B, C, *S)`` (channel axis 1)."""
        return (x - self._view("mean", x, channel_dim)) / self._view("std", x, channel_dim)

    def decode(self, x: Tensor, channel_dim: int = 1) -> Tensor:
        """Normalised -> physical: ``x * std + mean``. Shapes: as :meth:`encode`."""
        return x * self._view("std", x, channel_dim) + self._view("mean", x, channel_dim)

    def select(self, channels: Sequence[int]) -> "Normalizer":
        """The normaliser of a subset of channels (indices, in the given order), e.g. the observed ones."""
        index = [int(c) for c in channels]
        names = tuple(self.channel_names[c] for c in index) if self.channel_names is not None else None
        return Normalizer(self.mean[index], self.std[index], names)

    def state_dict(self) -> dict[str, Any]:
        """Plain lists of floats (and names), safe for JSON, checkpoints and HDF5 attributes."""
        names = list(self.channel_names) if self.channel_names is not None else None
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "channel_names": names}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "Normalizer":
        """Inverse of :meth:`state_dict`."""
        missing = [k for k in ("mean", "std") if k not in state]
        if missing:
            raise ValueError(f"normaliser state is missing {missing}; has keys {sorted(state)}")
        names = state.get("channel_names")
        return cls(torch.tensor(state["mean"], dtype=torch.float64), torch.tensor(state["std"], dtype=torch.float64),
                   tuple(names) if names is not None else None)

    @classmethod
    def from_field_stats(cls, stats: dict[str, dict[str, float]], channel_names: Sequence[str]) -> "Normalizer":
        """Build from per-field statistics ``{name: {"mean": m, "std": s}}`` (as stored in our HDF5 files)."""
        missing = [c for c in channel_names if c not in stats]
        if missing:
            raise ValueError(f"no statistics for field(s) {missing}; available: {sorted(stats)}")
        state = {"mean": [stats[c]["mean"] for c in channel_names],
                 "std": [stats[c]["std"] if stats[c]["std"] > 0 else 1.0 for c in channel_names],
                 "channel_names": list(channel_names)}
        return cls.from_state_dict(state)
