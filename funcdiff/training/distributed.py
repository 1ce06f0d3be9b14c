"""torchrun / DistributedDataParallel plumbing: detect the launch, pick the device, shard the batch.

Launch with ``torchrun --no-python --nproc_per_node N funcdiff train ...`` (or ``srun torchrun ...`` under Slurm).
torchrun sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; a plain ``python`` run is a world of one.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Rank layout of the current process. ``rank`` 0 is the one that writes logs and checkpoints."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info_from_env() -> DistInfo:
    """Read ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` (set by torchrun); defaults to a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad distributed environment: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank=rank, local_rank=local, world_size=world)


def select_device(preference: str, info: DistInfo) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; on CUDA each rank uses ``cuda:<local_rank>``."""
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {preference!r}")
    use_cuda = preference == "cuda" or (preference == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if not use_cuda:
        return torch.device("cpu")
    device = torch.device("cuda", info.local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device


def init_distributed(device: torch.device, info: DistInfo) -> None:
    """Initialise the default process group (nccl on CUDA, gloo on CPU) when launched with WORLD_SIZE > 1."""
    if not info.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


def shutdown_distributed() -> None:
    """Destroy the default process group if one is initialised (call :func:`barrier` first on a normal end).

    ``gc.collect`` frees DDP reducers and finished gloo work that still hold the group, so its worker threads are
    joined here and not during interpreter shutdown (a rank aborted there with "terminate called without an
    active exception"). No barrier here: after an error on one rank it would hold that rank until the group's
    timeout instead of letting it exit with its traceback."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()
    dist.destroy_process_group()
    gc.collect()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()


def shard_batch(indices: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's contiguous share of a global batch of indices (``len`` must divide by the world size)."""
    if len(indices) % info.world_size:
        raise ValueError(f"global batch of {len(indices)} does not divide among {info.world_size} ranks")
    per_rank = len(indices) // info.world_size
    return indices[info.rank * per_rank:(info.rank + 1) * per_rank]


def rank_seed(seed: int, info: DistInfo) -> int:
    """Seed of this rank's noise/sigma generator: different per rank, equal to ``seed`` on rank 0."""
    return int(seed) + 1_000_003 * info.rank


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Average a tensor over ranks (identity in a single process)."""
    if info.enabled and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value


def batch_rank_from_env(env: "os._Environ[str] | dict[str, str] | None" = None) -> tuple[int, int]:
    """``(rank, world_size)`` of a batch-inference process: torchrun's ``RANK``/``WORLD_SIZE`` if set, else Slurm's
    ``SLURM_PROCID``/``SLURM_NTASKS`` (one process per ``srun`` task), else ``(0, 1)``.

    Batch inference needs no process group (ranks share nothing but the output folder), so a plain
    ``srun -n K funcdiff solve --cases ...`` works without torchrun. ValueError for an inconsistent pair.
    """
    env = os.environ if env is None else env
    for rank_key, world_key in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if world_key in env or rank_key in env:
            try:
                rank, world = int(env.get(rank_key, "0")), int(env.get(world_key, "1"))
            except ValueError as err:
                raise ValueError(f"bad {rank_key}/{world_key} in the environment: {err}") from None
            if world < 1 or not 0 <= rank < world:
                raise ValueError(f"bad distributed environment: {rank_key}={rank}, {world_key}={world}")
            return rank, world
    return 0, 1
