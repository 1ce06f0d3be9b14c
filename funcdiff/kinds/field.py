"""Field models (``forecast.kind: none``): one field (C, *S) per item, diffused whole, sampled by
:func:`funcdiff.sampling.sample` (``funcdiff sample``, ``funcdiff solve``)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from funcdiff.data import FieldDataset, make_synthetic_fields, train_test_split
from funcdiff.kinds.base import ModelKind, check_channel_count, encoded


class FieldKind(ModelKind):
    """A field model: C channels in and out, no conditioning; loads as ``(denoiser, meta)``."""

    name = "none"
    role = "field"
    refusals = {"forecaster": "checkpoint {checkpoint} is not a forecaster (it was trained without a `forecast:` "
                              "section); train one with a config from configs/forecast/"}

    def model_config(self, num_channels: int) -> dict:
        c = int(num_channels)
        return {**self.config.model, "in_channels": c, "out_channels": c}

    def datasets(self, fields: Optional[Tensor] = None) -> tuple[FieldDataset, FieldDataset]:
        """Synthetic fields, in-memory ``fields`` (N, C, *S) or ``data.path``, split with ``data.seed + 1``."""
        d = self.config.data
        if fields is None and d.source == "synthetic":
            gen = torch.Generator().manual_seed(d.seed)
            fields = make_synthetic_fields(d.num_samples or 256, d.resolution, gen, dim=d.dim, channels=len(d.channels))
        if fields is not None:
            if fields.ndim != 2 + d.dim:
                raise ValueError(f"fields must be (N, C, *S) with data.dim={d.dim} spatial dims, got "
                                 f"{tuple(fields.shape)}")
            check_channel_count(fields.shape[1], d.channels)
            dataset = FieldDataset(fields, d.channels)
        else:
            dataset = FieldDataset.from_file(d.path, channels=d.channels, max_samples=d.num_samples)
        return train_test_split(dataset, d.test_fraction, generator=torch.Generator().manual_seed(d.seed + 1))

    def items(self, dataset: FieldDataset, device: torch.device) -> Tensor:
        return encoded(dataset, device)

    @classmethod
    def load(cls, denoiser, meta, config, device="cpu"):
        """``(denoiser, meta)``: the sampler and the solvers take the denoiser as it is."""
        return denoiser, meta


__all__ = ["FieldKind"]
