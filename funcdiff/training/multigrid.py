"""Training on several grids at once (``data.resolutions: [32, 64]``, or in-memory fields given one tensor per grid).

A discretisation-agnostic denoiser defines one operator on functions, but a model trained on one grid only ever
sees that grid's aliasing and that grid's share of its noise's small scales. FunDPS (Yao et al., NeurIPS 2025)
trains on several resolutions so that the prior transfers across grids; here every batch holds one grid and the
grids alternate deterministically by step: step k takes grid ``k mod G`` and, of that grid, batch ``k // G`` of its
own (seed, epoch) order (:class:`~funcdiff.training.batches.BatchSource`). So a run is reproducible, resumes at any
step with the batches of the uninterrupted run, and shards over ranks like a one-grid run.

The same functions are drawn on every grid (synthetic data: the same seed at each resolution), split the same
way, and normalised by the first grid's statistics (one normaliser for the model). The checkpoint records the
grids (``resolutions`` in its data source); ``resolution`` stays the first grid's.

Shapes: grid g holds items ``(N_g, *item_shape_g)``, e.g. fields ``(N, C, n_g, n_g)``; a batch is
``(B / world_size, *item_shape_g)`` of the grid of its step.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import Tensor

from funcdiff.errors import UserError
from funcdiff.training.batches import BatchSource, InMemorySource
from funcdiff.training.distributed import DistInfo

class MultiGridDataset:
    """The datasets of one split on several grids, the first grid's normaliser shared by all.

    Exposes what the trainer reads of a dataset (``channel_names``, ``num_channels``, ``normalizer``, ``source``
    with ``resolutions`` added, ``len``: all items of all grids) and the per-grid ``sets``."""

    def __init__(self, sets: Sequence, resolutions: Sequence[tuple[int, ...]]) -> None:
        if not sets:
            raise ValueError("a multi-grid dataset needs at least one grid")
        self.sets, self.resolutions = list(sets), [tuple(int(n) for n in r) for r in resolutions]
        first = self.sets[0]
        for ds in self.sets[1:]:
            ds.normalizer = first.normalizer
        self.channel_names, self.normalizer = tuple(first.channel_names), first.normalizer
        self.num_channels = first.num_channels
        self.source = {**dict(first.source), "resolutions": [list(r) for r in self.resolutions]}

    def __len__(self) -> int:
        return sum(len(ds) for ds in self.sets)

    @property
    def min_len(self) -> int:
        return min(len(ds) for ds in self.sets)


def multigrid_datasets(config, fields: Sequence[Tensor] | None = None
                       ) -> tuple[MultiGridDataset, MultiGridDataset | None]:
    """Train and validation sets of ``config`` on each grid of ``data.resolutions`` (synthetic data), or of each
    tensor of ``fields`` (one per grid, e.g. ``[(N, C, 32, 32), (N, C, 64, 64)]``), cut by the config's kind.

    Raises UserError for file data (give the fields of each grid in memory instead) or a kind other than
    field/autoregressive/rolling/deterministic."""
    from funcdiff.kinds import KINDS, model_kind

    d = config.data
    if not model_kind(config).several_grids:
        able = [name for name, kind in KINDS.items() if kind.several_grids]
        raise UserError(f"several grids (data.resolutions) train the kinds {able}, not "
                        f"forecast.kind={config.forecast.kind}")
    if fields is None:
        if d.source != "synthetic":
            raise UserError("data.resolutions draws synthetic data at each grid (data.source: synthetic); for "
                            "file data pass the fields of each grid in memory (Trainer.from_config(config, "
                            "fields=[...]))")
        pairs = [model_kind(config.replace([f"data.resolution={r}"])).datasets(None) for r in d.resolutions]
    else:
        pairs = [model_kind(config).datasets(f) for f in fields]
    grids = [tuple(pair[0][0].shape[-d.dim:]) for pair in pairs]  # an item (C, *rest)'s spatial grid
    train = MultiGridDataset([p[0] for p in pairs], grids)
    val_sets = [p[1] for p in pairs if p[1] is not None and len(p[1])]
    val = MultiGridDataset(val_sets, grids[:len(val_sets)]) if len(val_sets) == len(pairs) else None
    if val is not None:
        for ds in val.sets:
            ds.normalizer = train.normalizer
    return train, val


class MultiGridSource(BatchSource):
    """Batches from one grid per step, the grids in turn: step k is batch ``k // G`` of grid ``k mod G``'s own
    source (module docstring). ``item_shape`` is the first grid's; ``grids`` lists them all."""

    def __init__(self, sources: Sequence[BatchSource], dist_info: DistInfo | None = None) -> None:
        first = sources[0]
        super().__init__(sum(s.num_items for s in sources), first.batch_size, first.seed, dist_info)
        self.sources = list(sources)

    @property
    def grids(self) -> list[tuple[int, ...]]:
        return [tuple(s.item_shape[1:]) for s in self.sources]

    @property
    def item_shape(self) -> tuple[int, ...]:
        return self.sources[0].item_shape

    def _split(self, step: int) -> tuple[BatchSource, int]:
        return self.sources[int(step) % len(self.sources)], int(step) // len(self.sources)

    def epoch_of(self, step: int) -> tuple[int, int]:
        """The first grid's ``(epoch, batch)`` after ``step`` steps (each grid advances once per G steps)."""
        return self.sources[0].epoch_of(int(step) // len(self.sources))

    def indices(self, step: int) -> Tensor:
        source, k = self._split(step)
        return source.indices(k)

    def global_indices(self, step: int) -> Tensor:
        source, k = self._split(step)
        return source.global_indices(k)

    def batch(self, step: int) -> Tensor:
        source, k = self._split(step)
        return source.batch(k)

    def chunks(self, size: int) -> Iterator[Tensor]:
        for source in self.sources:
            yield from source.chunks(size)

    def close(self) -> None:
        for source in self.sources:
            source.close()


def multigrid_sources(kind, train_set: MultiGridDataset, val_set: MultiGridDataset | None, device: torch.device,
                      batch_size: int, seed: int, dist_info: DistInfo | None = None
                      ) -> tuple[MultiGridSource, MultiGridSource | None]:
    """In-memory sources of every grid (the kind's items, normalised on ``device``) joined by :class:`MultiGridSource`."""
    if batch_size > train_set.min_len:
        raise ValueError(f"train.batch_size={batch_size} is larger than the {train_set.min_len} training samples of "
                         "the smallest grid")
    train = MultiGridSource([InMemorySource(kind.items(ds, device), batch_size, seed, dist_info)
                             for ds in train_set.sets], dist_info)
    if val_set is None:
        return train, None
    return train, MultiGridSource([InMemorySource(kind.items(ds, device), batch_size, seed) for ds in val_set.sets])
