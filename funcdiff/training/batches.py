"""Batch sources: where the :class:`~funcdiff.training.Trainer` gets the training items of step ``k``.

One contract (:class:`BatchSource`), one class per way of holding the data, chosen once when the trainer is built:

- :class:`InMemorySource`: every item normalised on the device (the fast path for data that fit in memory);
- :class:`StreamedSource`: items read from a store on disk (:mod:`funcdiff.data.streaming`) by torch DataLoader
  workers, only those of this rank's share of each batch, normalised as they arrive.

The order is the source-independent part and lives here once: step ``k`` takes batch ``k mod E`` (E batches per
epoch) of a permutation of the items seeded by ``(train.seed, epoch)``, and each rank keeps its contiguous share
(:func:`funcdiff.training.distributed.shard_batch`). So every source gives the same batch at the same step, for any
number of DataLoader workers, and a run resumed at step ``k`` (mid-epoch too) continues with exactly the batches
of the uninterrupted run. A new source (e.g. several grids) implements :meth:`BatchSource.batch` and
:meth:`BatchSource.chunks` and inherits the order.

Shapes: a batch is ``(B / world_size, *item_shape)``, e.g. ``(b, C, *S)`` fields or ``(b, L·C, *S)`` folded windows.
"""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from funcdiff.data.streaming import ReadFailure, StoreItems, pass_through
from funcdiff.errors import UserError
from funcdiff.training.distributed import DistInfo, shard_batch

Encode = Callable[[Tensor], Tensor]  # raw physical items (b, C, *rest) on the CPU -> training items on the device
PERMUTATION_SEED_FACTOR = 1_000_003  # epoch e of seed s is permuted by the generator seeded s·1_000_003 + e


class BatchSource(ABC):
    """The training items of a run, ``num_items`` of them, served batch by batch (module docstring).

    Args:
        num_items: items in the training set.
        batch_size: the global batch (all ranks).
        seed: ``train.seed`` (the permutation of epoch e is seeded ``seed·1_000_003 + e``).
        dist_info: this process's rank layout.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, dist_info: DistInfo | None = None) -> None:
        self.num_items, self.batch_size, self.seed = int(num_items), int(batch_size), int(seed)
        self.dist = dist_info or DistInfo()
        self._perm_cache: tuple[int, Tensor] | None = None

    # ----------------------------------------------------------------------------------------- the order
    @property
    def batches_per_epoch(self) -> int:
        """``num_items // batch_size`` (the remainder of a permutation is not used)."""
        return self.num_items // self.batch_size

    def epoch_of(self, step: int) -> tuple[int, int]:
        """``(epoch, k)``: after ``step`` steps, ``epoch`` whole passes are done and ``k`` batches of the next."""
        return divmod(int(step), self.batches_per_epoch)

    def permutation(self, epoch: int) -> Tensor:
        """The item order of ``epoch`` (int64 ``(num_items,)``, cached for the epoch in hand)."""
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * PERMUTATION_SEED_FACTOR + epoch)
            self._perm_cache = (epoch, torch.randperm(self.num_items, generator=gen))
        return self._perm_cache[1]

    def global_indices(self, step: int) -> Tensor:
        """All ranks' item indices at ``step`` (int64 ``(batch_size,)``)."""
        epoch, k = self.epoch_of(step)
        return self.permutation(epoch)[k * self.batch_size:(k + 1) * self.batch_size]

    def indices(self, step: int) -> Tensor:
        """This rank's item indices at ``step`` (int64 ``(batch_size / world_size,)``)."""
        return shard_batch(self.global_indices(step), self.dist)

    def position(self, step: int) -> dict[str, int]:
        """Where ``step`` is in the data (what a checkpoint records): epoch, batch within it, items, batch size."""
        epoch, k = self.epoch_of(step)
        return {"epoch": epoch, "batch_in_epoch": k, "num_items": self.num_items, "batch_size": self.batch_size}

    # ----------------------------------------------------------------------------------------- the data
    @property
    @abstractmethod
    def item_shape(self) -> tuple[int, ...]:
        """Shape of one training item, e.g. ``(C, *S)``."""

    @abstractmethod
    def batch(self, step: int) -> Tensor:
        """This rank's items of ``step``, normalised float32 on the training device ``(b, *item_shape)``."""

    @abstractmethod
    def chunks(self, size: int) -> Iterator[Tensor]:
        """Every item in index order, ``size`` at a time (the validation loss), on the training device."""

    def close(self) -> None:
        """Release worker processes and file handles (a no-op for in-memory data)."""


class InMemorySource(BatchSource):
    """All items held as one tensor ``items`` ``(N, *item_shape)`` on the training device."""

    def __init__(self, items: Tensor, batch_size: int, seed: int, dist_info: DistInfo | None = None) -> None:
        super().__init__(items.shape[0], batch_size, seed, dist_info)
        self.items = items

    @property
    def item_shape(self) -> tuple[int, ...]:
        return tuple(self.items.shape[1:])

    def batch(self, step: int) -> Tensor:
        return self.items[self.indices(step).to(self.items.device)]

    def chunks(self, size: int) -> Iterator[Tensor]:
        for start in range(0, self.num_items, size):
            yield self.items[start:start + size]


class StepBatches(Sampler):
    """A DataLoader batch sampler that yields this rank's item indices of steps ``start, start + 1, ...`` without
    end (:meth:`BatchSource.indices`): the order is fixed here, in the main process, so it does not depend on the
    number of workers (the DataLoader returns the batches in sampler order, at most ``prefetch_factor`` per worker
    ahead)."""

    def __init__(self, source: BatchSource, start: int) -> None:
        self.source, self.start = source, int(start)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while True:
            yield self.source.indices(step).tolist()
            step += 1


def quiet_worker(worker_id: int) -> None:
    """A DataLoader worker's ``worker_init_fn``: the scheduler's stop signals (SIGUSR1, SIGINT; Slurm may send them
    to every process of the job) are the training process's to handle (:mod:`funcdiff.training.signals`: it stops
    after the step in hand, writes a checkpoint and shuts the workers down), so a worker ignores them. SIGTERM keeps
    its default: the DataLoader ends its workers with it."""
    for sig in (signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


class StreamedSource(BatchSource):
    """Items read from a store by a torch DataLoader (``num_workers`` processes, 0 = in this process; each opens
    the store itself), ``prefetch_factor`` batches ahead per worker, pinned host memory on CUDA; raw batches are
    normalised on the device by ``encode`` (the kind's :meth:`~funcdiff.kinds.base.ModelKind.encode_batch`, the
    function that makes the in-memory items), so a batch equals the in-memory source's bit for bit.

    ``batch(step)`` for consecutive steps runs one DataLoader from the first step asked; a step out of sequence (a
    resume, a rewind) starts a new one there.

    Args:
        items: a :class:`~funcdiff.data.streaming.StoreItems` (raw float32 items ``(C, *rest)``).
        encode: raw batch on the CPU -> training items on the device.
        settings: :class:`LoaderSettings` (batch size, seed, workers, prefetch, pinned memory).
    """

    def __init__(self, items: StoreItems, encode: Encode, settings: "LoaderSettings",
                 dist_info: DistInfo | None = None) -> None:
        super().__init__(len(items), settings.batch_size, settings.seed, dist_info)
        self.items, self.encode, self.settings = items, encode, settings
        self._iterator: Iterator | None = None
        self._next_step = -1
        self._item_shape: tuple[int, ...] | None = None

    @property
    def item_shape(self) -> tuple[int, ...]:
        if self._item_shape is None:
            self._item_shape = tuple(self.encode(self.items.read([0])).shape[1:])
        return self._item_shape

    def _loader(self, start: int) -> Iterator:
        s = self.settings
        workers = s.num_workers
        loader = DataLoader(self.items, batch_sampler=StepBatches(self, start),
                            num_workers=workers, collate_fn=pass_through, pin_memory=s.pin_memory,
                            prefetch_factor=s.prefetch_factor if workers else None,
                            multiprocessing_context=s.context if workers else None, persistent_workers=False,
                            worker_init_fn=quiet_worker if workers else None)
        return iter(loader)

    def batch(self, step: int) -> Tensor:
        if self._iterator is None or step != self._next_step:
            self.close()
            self._iterator = self._loader(step)
        raw = next(self._iterator)
        self._next_step = step + 1
        if isinstance(raw, ReadFailure):
            self.close()
            raise UserError(raw.message)
        return self.encode(raw)

    def chunks(self, size: int) -> Iterator[Tensor]:
        for start in range(0, self.num_items, size):
            yield self.encode(self.items.read(range(start, min(start + size, self.num_items))))

    def close(self) -> None:
        self._iterator, self._next_step = None, -1  # the DataLoader iterator shuts its workers down when freed


@dataclass(frozen=True)
class LoaderSettings:
    """How a :class:`StreamedSource` reads: global ``batch_size``, ``seed`` (the order), ``num_workers``, ``prefetch_factor`` (batches per worker), ``pin_memory``, ``context`` (``fork``/``spawn``/
    ``forkserver``; None: the platform's default)."""

    batch_size: int
    seed: int
    num_workers: int = 0
    prefetch_factor: int = 2
    pin_memory: bool = False
    context: str | None = None



__all__ = ["BatchSource", "Encode", "InMemorySource", "LoaderSettings", "PERMUTATION_SEED_FACTOR", "StepBatches",
           "StreamedSource",
           "quiet_worker"]
