"""``torch`` Dataset objects over in-memory fields and trajectories, with normalisation fitted once."""

from __future__ import annotations

import os
from typing import Sequence, TypeVar

import torch
from torch import Tensor
from torch.utils.data import Dataset

from funcdiff.data.normalization import Normalizer
from funcdiff.data.readers import FieldData, load_fields


def check_finite(x: Tensor, channel_names: Sequence[str], channel_dim: int = 1) -> None:
    """ValueError listing, per channel, how many NaN and Inf values ``x`` holds (if any)."""
    if bool(torch.isfinite(x).all()):
        return
    per_channel = torch.movedim(x, channel_dim, 0)
    problems = []
    for name, values in zip(channel_names, per_channel):
        n_nan, n_inf = int(torch.isnan(values).sum()), int(torch.isinf(values).sum())
        if n_nan or n_inf:
            problems.append(f"channel {name!r}: {n_nan} NaN, {n_inf} Inf")
    raise ValueError("non-finite values in data: " + "; ".join(problems))


def _check_channels(x: Tensor, channel_names: Sequence[str] | None, min_ndim: int, what: str) -> tuple[str, ...]:
    if x.ndim < min_ndim:
        raise ValueError(f"{what} must have at least {min_ndim} dims, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{what} must be floating point, got {x.dtype}")
    names = tuple(channel_names) if channel_names is not None else tuple(f"c{i}" for i in range(x.shape[1]))
    if len(names) != x.shape[1]:
        raise ValueError(f"{len(names)} channel names {list(names)} for {x.shape[1]} channels "
                         f"(shape {tuple(x.shape)})")
    check_finite(x, names)
    return names


def _split_indices(n: int, n_test: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    if not 0 < n_test < n:
        raise ValueError(f"n_test must be in [1, {n - 1}] for {n} samples, got {n_test}")
    perm = torch.randperm(n, generator=generator)
    return perm[n_test:].sort().values, perm[:n_test].sort().values


SOURCE_ATTRS = ("pde", "params", "grid", "era5")  # file attributes a FieldDataset keeps as its ``source``


class FieldDataset(Dataset):
    """Fields ``(N, C, *S)`` yielding normalised ``(C, *S)`` samples.

    Without a ``normalizer`` one is fitted on ``fields`` (per channel). Channels are named, e.g. Darcy
    coefficient and solution stacked as ``("a", "u")`` so a model learns them jointly.

    ``source`` describes where the fields came from (e.g. ``{"pde": "darcy", "params": {...}}`` for a file
    made by ``funcdiff data generate``); checkpoints record it so a task can check what a model learned.

    Shapes:
        fields: ``(N, C, *S)``; item: ``(C, *S)`` normalised (dimensionless).
    """

    def __init__(self, fields: Tensor, channel_names: Sequence[str], normalizer: Normalizer | None = None,
                 source: dict | None = None):
        self.channel_names = _check_channels(fields, channel_names, 3, "fields (N, C, *S)")
        self.fields = fields
        self.source = dict(source or {})
        self._normalizer_given = normalizer is not None
        self.normalizer = normalizer or Normalizer.fit(fields, 1, self.channel_names)
        if self.normalizer.num_channels != fields.shape[1]:
            raise ValueError(f"normaliser has {self.normalizer.num_channels} channels, data {fields.shape[1]}")

    def __len__(self) -> int:
        return self.fields.shape[0]

    @property
    def num_channels(self) -> int:
        """C, the channels of every sample."""
        return self.fields.shape[1]

    def __getitem__(self, index: int) -> Tensor:
        return self.normalizer.encode(self.fields[index], channel_dim=0)

    @classmethod
    def from_file(cls, path: str | os.PathLike, channels: Sequence[str] = ("a", "u"),
                  normalizer: Normalizer | None = None, **load_kwargs) -> "FieldDataset":
        """Stack the named fields of a data file as channels (any format ``load_fields`` reads).

        Uses the normalisation statistics stored in the file when there are any and no ``normalizer`` is
        given, otherwise fits one on the data; either way :meth:`split` refits on the training samples
        (only an explicitly given ``normalizer`` is kept by splits).
        """
        data = load_fields(path, fields=list(channels), **load_kwargs)
        source = {key: data.attrs[key] for key in SOURCE_ATTRS if key in data.attrs}
        fields = data.stack(channels)
        if data.source in ("era5_zarr", "anemoi_zarr"):  # one time axis: every frame is a sample (N·T, C, *S)
            fields = fields.movedim(2, 1).flatten(0, 1)
        dataset = cls(fields, channels, normalizer or _stored_normalizer(data, channels), source)
        dataset._normalizer_given = normalizer is not None
        return dataset

    def split(self, n_test: int, generator: torch.Generator | None = None) -> tuple["FieldDataset", "FieldDataset"]:
        """Random train/test split by sample. The test set uses the train set's normaliser; it is refitted
        on the train samples unless this dataset was given its normaliser."""
        train_idx, test_idx = _split_indices(len(self), n_test, generator)
        source = {**self.source, "split": split_record(test_idx, len(self), "sample")}
        train = FieldDataset(self.fields[train_idx], self.channel_names,
                             self.normalizer if self._normalizer_given else None, source)
        return train, FieldDataset(self.fields[test_idx], self.channel_names, train.normalizer, source)


def split_record(held_out: Tensor, count: int, unit: str) -> dict:
    """What a checkpoint records of its train/validation split: the held-out indices (samples or trajectories)
    of the ``count`` in the data; ``path`` is added by the trainer for file data."""
    return {"held_out": [int(i) for i in held_out], "count": int(count), "unit": unit}


def _stored_normalizer(data: FieldData, channels: Sequence[str]) -> Normalizer | None:
    stats = data.attrs.get("normalization")
    if isinstance(stats, dict) and all(c in stats for c in channels):
        return Normalizer.from_field_stats(stats, channels)
    return None


class TrajectoryWindowDataset(Dataset):
    """Windows of ``history + horizon`` consecutive frames from trajectories ``(N, C, T, *S)``.

    Window ``i`` is trajectory ``i // windows_per_trajectory`` starting at frame
    ``(i % windows_per_trajectory) * stride``. Items are ``(history, horizon)`` pairs ``(C, history, *S)``,
    ``(C, horizon, *S)``, or, with ``split_window=False``, one ``(C, history + horizon, *S)`` window.
    The per-channel normaliser is fitted once over all trajectories and frames unless given.
    """

    def __init__(self, traj: Tensor, history: int, horizon: int, stride: int = 1,
                 normalizer: Normalizer | None = None, channel_names: Sequence[str] | None = None,
                 split_window: bool = True):
        self.channel_names = _check_channels(traj, channel_names, 4, "trajectories (N, C, T, *S)")
        length, steps = history + horizon, traj.shape[2]
        if history < 1 or horizon < 0 or stride < 1:
            raise ValueError(f"need history >= 1, horizon >= 0, stride >= 1; got {history}, {horizon}, {stride}")
        if length > steps:
            raise ValueError(f"window history + horizon = {length} is longer than the {steps} frames")
        self.traj, self.history, self.horizon, self.stride = traj, history, horizon, stride
        self.split_window = split_window and horizon > 0
        self.windows_per_trajectory = (steps - length) // stride + 1
        self._normalizer_given = normalizer is not None
        self.normalizer = normalizer or Normalizer.fit(traj, 1, self.channel_names)

    def __len__(self) -> int:
        return self.traj.shape[0] * self.windows_per_trajectory

    def window_index(self, index: int) -> tuple[int, int]:
        """``(trajectory, first frame)`` of window ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        index %= len(self)
        return index // self.windows_per_trajectory, (index % self.windows_per_trajectory) * self.stride

    def __getitem__(self, index: int) -> Tensor | tuple[Tensor, Tensor]:
        n, start = self.window_index(index)
        window = self.traj[n, :, start:start + self.history + self.horizon]
        window = self.normalizer.encode(window, channel_dim=0)
        if not self.split_window:
            return window
        return window[:, :self.history], window[:, self.history:]

    @classmethod
    def from_file(cls, path: str | os.PathLike, history: int, horizon: int, stride: int = 1,
                  channels: Sequence[str] = ("u",), **kwargs) -> "TrajectoryWindowDataset":
        """Windows over the trajectory fields ``(N, T, *S)`` of a data file, stacked as channels."""
        data = load_fields(path, fields=list(channels))
        return cls(data.stack(channels), history, horizon, stride, channel_names=channels, **kwargs)

    def split(self, n_test: int, generator: torch.Generator | None = None
              ) -> tuple["TrajectoryWindowDataset", "TrajectoryWindowDataset"]:
        """Random split by *trajectory* (windows of one trajectory never straddle train and test)."""
        train_idx, test_idx = _split_indices(self.traj.shape[0], n_test, generator)
        kwargs = {"history": self.history, "horizon": self.horizon, "stride": self.stride,
                  "channel_names": self.channel_names, "split_window": self.split_window}
        train = TrajectoryWindowDataset(self.traj[train_idx], normalizer=self.normalizer
                                        if self._normalizer_given else None, **kwargs)
        return train, TrajectoryWindowDataset(self.traj[test_idx], normalizer=train.normalizer, **kwargs)


SplittableDataset = TypeVar("SplittableDataset", FieldDataset, TrajectoryWindowDataset)


def train_test_split(dataset: SplittableDataset, test_fraction: float,
                     generator: torch.Generator | None = None) -> tuple[SplittableDataset, SplittableDataset]:
    """Split by sample (fields) or trajectory (windows); ``round(test_fraction * N)`` go to the test set,
    at least one and at most ``N - 1``."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n = dataset.fields.shape[0] if isinstance(dataset, FieldDataset) else dataset.traj.shape[0]
    return dataset.split(test_count(n, test_fraction), generator)


def test_count(n: int, test_fraction: float) -> int:
    """Samples held out of ``n``: ``round(test_fraction * n)``, at least one and at most ``n - 1``."""
    return min(max(1, round(test_fraction * n)), n - 1)
