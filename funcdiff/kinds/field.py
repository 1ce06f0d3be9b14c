"""Field models (``forecast.kind: none``): one field (C, *S) per item, diffused whole, sampled by
:func:`funcdiff.sampling.sample` (``funcdiff sample``, ``funcdiff solve``)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from funcdiff.data import FieldDataset, make_synthetic_fields, train_test_split
from funcdiff.data.datasets import _split_indices, split_record, test_count
from funcdiff.data.stores import ArrayStore
from funcdiff.data.streaming import StreamedDataset, field_index, window_index
from funcdiff.kinds.base import ModelKind, check_channel_count, encoded, streamed_sets


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

    streams = True

    def stream_datasets(self, store: ArrayStore) -> tuple[StreamedDataset, StreamedDataset]:
        """The samples of ``data.path`` (at most ``data.num_samples``; in a store with a time axis, every frame of
        every trajectory, as :meth:`FieldDataset.from_file` flattens an ERA5 store), split by sample with
        ``data.seed + 1``."""
        d = self.config.data
        count = len(store) if d.num_samples is None else min(len(store), d.num_samples)
        if len(store.shape) == 3 + d.dim:  # a time axis: every frame of every trajectory is a sample
            index = window_index(store, range(count), 1, squeeze=True)
        else:
            index = field_index(range(count))
        train, held_out = _split_indices(len(index), test_count(len(index), d.test_fraction),
                                         torch.Generator().manual_seed(d.seed + 1))
        split = {"split": split_record(held_out, len(index), "sample")}
        return streamed_sets(self.config, store, index.subset(train), index.subset(held_out), split)

    @classmethod
    def load(cls, denoiser, meta, config, device="cpu"):
        """``(denoiser, meta)``: the sampler and the solvers take the denoiser as it is."""
        return denoiser, meta


__all__ = ["FieldKind"]
