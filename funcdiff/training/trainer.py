"""Trainer: AdamW + warm-up/cosine LR, gradient clipping, EMA, bf16 autocast (CPU or CUDA), JSON-lines log,
fixed-generator validation loss, atomic checkpoints with bit-exact resume, and torchrun/DDP.

Determinism: the data order is a pure function of (seed, step) (one seeded permutation per epoch), the
sigma/noise draws come from one explicit generator whose state is checkpointed, and the
initial weights come from ``train.seed`` -- so a run resumed from a checkpoint ends with exactly the
weights of an uninterrupted run (bit-exact on CPU).

Data parallel = one process. Every rank draws sigma and noise for the whole global batch from the same
generator and keeps its own rows, and DDP averages the ranks' gradients, so K ranks take the step one process
takes on the global batch (equal to float rounding; ``tests/test_ddp_equivalence.py``). ``train.grad_accum``
splits each rank's rows into micro-batches with the same result. Drawing the global batch's noise costs each
rank the noise of K times its share (a GRF draw: one FFT per item), small next to the network.

Signals: with :attr:`Trainer.stop` set (a :class:`~funcdiff.training.signals.StopSignal`, as ``funcdiff train``
does) a SIGUSR1/SIGTERM/SIGINT stops :meth:`Trainer.fit` after the step in hand, on every rank at the same step
(one all-reduce of a flag per step), and writes a checkpoint; ``stopped_by`` names the signal.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from funcdiff.config import RunConfig
from funcdiff.data import FieldDataset
from funcdiff.io.atomic import write_text_atomic
from funcdiff.io.checkpoint import (CheckpointMeta, checkpoint_path, latest_checkpoint, load_module_state,
                                    prune_checkpoints, read_checkpoint, save_checkpoint)
from funcdiff.kinds.base import check_channel_count, field_noise
from funcdiff.models import build_denoiser
from funcdiff.noise import GaussianRandomField
from funcdiff.data.streaming import StreamedDataset
from funcdiff.training.batches import BatchSource, InMemorySource, LoaderSettings, StreamedSource
from funcdiff.training.multigrid import MultiGridDataset, multigrid_datasets, multigrid_sources
from funcdiff.training.distributed import (DistInfo, all_reduce_mean, barrier, dist_info_from_env,
                                           init_distributed, select_device, shutdown_distributed)
from funcdiff.training.ema import EMA
from funcdiff.training.signals import StopSignal, agree_stop
from funcdiff.training.schedule import WarmupCosineSchedule

log = logging.getLogger(__name__)
LOG_FILE = "log.jsonl"
CONFIG_FILE = "config.yaml"
VAL_SEED_OFFSET = 7_777_777
AnyDataset = FieldDataset | StreamedDataset  # in memory, or streamed from a store (funcdiff.data.streaming)


def build_noise(config: RunConfig) -> GaussianRandomField:
    """The diffusion's GRF on [0, 1)^dim from ``config.noise`` and ``config.data.dim`` (on the sphere with
    ``noise.domain: sphere``); :func:`funcdiff.kinds.base.field_noise`."""
    return field_noise(config)


def build_datasets(config: RunConfig, fields: torch.Tensor | None = None) -> tuple[FieldDataset, FieldDataset]:
    """Train and validation sets of ``config.data`` (or of in-memory ``fields`` (N, C, *S) if given), cut by the
    config's kind (:meth:`funcdiff.kinds.base.ModelKind.datasets`): fields, or for a forecaster windows
    (C, history + horizon, *S) of trajectories (N, C, T, *S).

    The normaliser is fitted on the training split. Raises ValueError for non-finite data or a channel
    count that differs from ``data.channels``.
    """
    from funcdiff.kinds import model_kind

    if config.data.resolutions or isinstance(fields, (list, tuple)):  # several grids (funcdiff.training.multigrid)
        return multigrid_datasets(config, fields)
    kind = model_kind(config)
    store = streamed_store(config, kind.streams) if fields is None else None
    return kind.datasets(fields) if store is None else kind.stream_datasets(store)


def streamed_store(config: RunConfig, kind_streams: bool = True):
    """The store to stream ``data.path`` from (:func:`funcdiff.data.streaming.open_store`), or None to read it into
    memory: ``data.stream: true`` streams (UserError if the kind cannot), ``false`` never, ``auto`` when the kind and
    the format can stream and the file's channels exceed ``data.stream_above_gb`` GB as float32 (or the format has no
    whole-file reader: CDS netCDF, WeatherBench 2 zarr)."""
    from funcdiff.data.stores import XarrayStore
    from funcdiff.data.streaming import open_store
    from funcdiff.errors import UserError

    d = config.data
    if d.source != "file" or d.stream is False:
        return None
    if d.stream is True:
        if not kind_streams:
            raise UserError(f"forecast.kind={config.forecast.kind} models train on data in memory: set "
                            "data.stream: false (or auto)")
        return open_store(d.path, d.channels)
    if not kind_streams:
        return None
    try:
        store = open_store(d.path, d.channels)
    except (UserError, OSError, ValueError, KeyError):
        return None  # a format that cannot stream (.mat, .pt) or a file the in-memory reader explains better
    only_streamed = isinstance(store, XarrayStore)  # CDS netCDF / WB2 zarr: no whole-file reader
    return store if only_streamed or store.nbytes > d.stream_above_gb * 1e9 else None


def area_weights(spatial: tuple[int, ...], source: dict, device: torch.device) -> torch.Tensor:
    """Cell-area weights (H, 1) of a lat-lon grid, mean 1 (WeatherBench 2; :func:`funcdiff.metrics.latitude_weights`).
    ValueError unless the training data are on a lat-lon grid (an ERA5 store)."""
    from funcdiff.metrics import latitude_weights
    from funcdiff.sphere import grid_latitudes

    grid = source.get("grid")
    if not (isinstance(grid, dict) and grid.get("type") == "latlon") or len(spatial) != 2:
        raise ValueError("train.latitude_weighted needs lat-lon data (an ERA5 store of `funcdiff data era5`)")
    return latitude_weights(grid_latitudes(*spatial)).to(device=device, dtype=torch.float32)[:, None]


class Trainer:
    """Trains an EDM-preconditioned denoiser on a :class:`FieldDataset` with GRF noise.

    Args:
        config: the resolved run config (``config.model`` gets its in/out channels from the data).
        train_set, val_set: field datasets in memory, or streamed from a store (:mod:`funcdiff.data.streaming`)
            (``val_set`` optional; it uses ``train_set``'s normaliser). The trainer reads its batches from a
            :class:`~funcdiff.training.batches.BatchSource` (``self.source``) made of them once.
        device: torch device (default: ``config.train.device`` resolved for this rank).
        dist_info: rank layout (default: a single process); DDP-wraps the model when world_size > 1.
        progress: show a tqdm bar on rank 0.

    Shapes: dataset items (C, *S); the model sees batches (B / world_size, C, *S).
    """

    def __init__(self, config: RunConfig, train_set: AnyDataset, val_set: AnyDataset | None = None, *,
                 device: torch.device | str | None = None, dist_info: DistInfo | None = None,
                 progress: bool = True) -> None:
        tc = config.train
        self.config, self.dist, self.progress = config, dist_info or DistInfo(), progress
        self.device = torch.device(device) if device is not None else select_device(tc.device, self.dist)
        self.out_dir = Path(tc.out_dir)
        self._check_data(train_set, val_set)
        self.channel_names, self.normalizer = tuple(train_set.channel_names), train_set.normalizer
        self.data_source = dict(train_set.source)
        if "split" in self.data_source and config.data.source == "file" and config.data.path:
            self.data_source["split"] = {**self.data_source["split"], "path": str(Path(config.data.path).resolve())}
        from funcdiff.kinds import model_kind

        self.kind = model_kind(config)  # the one lookup: everything kind-specific below is the kind's
        self.kind.fit(train_set)
        self.source, self.val_source = self._sources(train_set, val_set)
        self.noise = self.kind.noise()
        self.model_config = self.kind.model_config(len(self.channel_names))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(tc.seed)
            self.model = build_denoiser(self.model_config).to(self.device)
        self.ema = EMA(self.model, tc.ema_decay)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.schedule = WarmupCosineSchedule(self.optimizer, tc.lr, tc.warmup_steps, tc.steps, tc.min_lr_ratio)
        self.loss_fn = self.kind.loss(self.noise)
        if tc.latitude_weighted:
            self.loss_fn.spatial_weights = area_weights(self.source.item_shape[1:], self.data_source, self.device)
        self.generator = torch.Generator(self.device).manual_seed(tc.seed)  # the same on every rank: global draws
        self.step = 0
        self.stop: StopSignal | None = None
        self.stopped_by = ""
        self.network: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=ids)
        if tc.compile:
            self.network = torch.compile(self.network)

    @classmethod
    def from_config(cls, config: RunConfig, fields: torch.Tensor | None = None, **kwargs: Any) -> "Trainer":
        """Build the datasets of ``config`` (or of in-memory ``fields``) and a Trainer on them."""
        train_set, val_set = build_datasets(config, fields)
        return cls(config, train_set, val_set, **kwargs)

    def _sources(self, train_set: AnyDataset, val_set: AnyDataset | None
                 ) -> tuple[BatchSource, BatchSource | None]:
        """The batch sources of the training and validation sets (:mod:`funcdiff.training.batches`), chosen once."""
        tc = self.config.train
        if isinstance(train_set, StreamedDataset):
            return self._streamed_sources(train_set, val_set)
        if isinstance(train_set, MultiGridDataset):
            return multigrid_sources(self.kind, train_set, val_set, self.device, tc.batch_size, tc.seed, self.dist)
        train = InMemorySource(self.kind.items(train_set, self.device), tc.batch_size, tc.seed, self.dist)
        if val_set is None or not len(val_set):
            return train, None
        return train, InMemorySource(self.kind.items(val_set, self.device), tc.batch_size, tc.seed)

    def _streamed_sources(self, train_set: StreamedDataset, val_set: StreamedDataset | None
                          ) -> tuple[BatchSource, BatchSource | None]:
        tc = self.config.train
        encode = functools.partial(self.kind.encode_batch, normalizer=train_set.normalizer, device=self.device)
        settings = LoaderSettings(tc.batch_size, tc.seed, tc.num_workers, tc.prefetch_factor,
                                  pin_memory=self.device.type == "cuda")
        train = StreamedSource(train_set.items, encode, settings, self.dist)
        if val_set is None or not len(val_set):
            return train, None
        return train, StreamedSource(val_set.items, encode, replace(settings, num_workers=0))

    def close(self) -> None:
        """Shut down the DataLoader workers of streamed data (a no-op for data in memory)."""
        self.source.close()
        if self.val_source is not None:
            self.val_source.close()

    @property
    def train_x(self) -> torch.Tensor:
        """All training items on the device ``(N, *item_shape)`` (in-memory data only)."""
        if not isinstance(self.source, InMemorySource):
            raise TypeError("the training data are streamed from disk: there is no train_x (use trainer.source)")
        return self.source.items

    def _check_data(self, train_set: AnyDataset, val_set: AnyDataset | None) -> None:
        check_channel_count(train_set.num_channels, tuple(self.config.data.channels))
        if val_set is not None and val_set.num_channels != train_set.num_channels:
            raise ValueError(f"validation data has {val_set.num_channels} channels, training data "
                             f"{train_set.num_channels}")
        n, b = len(train_set), self.config.train.batch_size
        if b > n:
            raise ValueError(f"train.batch_size={b} is larger than the {n} training samples")
        if b % self.dist.world_size:
            raise ValueError(f"train.batch_size={b} does not divide among {self.dist.world_size} ranks")
        accum = self.config.train.grad_accum
        if (b // self.dist.world_size) % accum:
            raise ValueError(f"train.batch_size={b} over {self.dist.world_size} rank(s) is {b // self.dist.world_size}"
                             f" per rank, which does not divide into train.grad_accum={accum} micro-batches")

    # ----------------------------------------------------------------------------------------- training
    def batch_indices(self, step: int) -> torch.Tensor:
        """This rank's sample indices at ``step``: batch ``k`` of a permutation seeded by (seed, epoch)
        (:meth:`funcdiff.training.batches.BatchSource.indices`)."""
        return self.source.indices(step)

    def epoch_of(self, step: int) -> tuple[int, int]:
        """``(epoch, k)``: after ``step`` steps, ``epoch`` whole passes over the data are done (0-based index of the
        epoch in hand) and ``k`` batches of the next (an epoch is ``len(train data) // batch_size`` batches)."""
        return self.source.epoch_of(step)

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast of the forward pass with ``train.bf16``, on CPU and CUDA alike (the spectral
        transforms, GroupNorm statistics and the loss stay float32; parameters and optimiser state stay float32)."""
        if self.config.train.bf16 and self.device.type in ("cpu", "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self) -> dict[str, float]:
        """One optimizer step on the global batch; returns ``{"loss", "lr", "grad_norm"}`` of this rank.

        Sigma and noise are drawn for the global batch (same generator on every rank) and this rank keeps its
        rows; the rows go through the network in ``train.grad_accum`` micro-batches whose gradients add up to the
        rank's mean-loss gradient (DDP synchronises after the last one)."""
        x = self.source.batch(self.step)
        b, accum = x.shape[0], self.config.train.grad_accum
        mine = slice(self.dist.rank * b, (self.dist.rank + 1) * b)
        sigma, eps = self.loss_fn.draw_batch(x, self.generator, rows=mine, total=b * self.dist.world_size)
        lr = self.schedule.lr()
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        micro, loss = b // accum, torch.zeros((), device=self.device)
        for k in range(accum):
            rows = slice(k * micro, (k + 1) * micro)
            last = k == accum - 1
            with (self.network.no_sync() if self.dist.enabled and not last else contextlib.nullcontext()):
                with self._autocast():
                    part = self.loss_fn(self.network, x[rows], draws=(sigma[rows], eps[rows]))
                if not bool(torch.isfinite(part)):
                    raise FloatingPointError(f"training loss is {part.item()} at step {self.step}; lower train.lr "
                                             "or check the data normalisation")
                (part / accum if accum > 1 else part).backward()
            loss = loss + part.detach() / accum
        clip = self.config.train.grad_clip if self.config.train.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        self.schedule.step()
        self.ema.update(self.model)
        self.step += 1
        return {"loss": loss.detach(), "lr": lr, "grad_norm": grad_norm.detach()}

    @torch.no_grad()
    def validation_loss(self, ema: bool = False) -> float:
        """EDM loss on the whole validation set with a *fixed* generator (comparable across steps)."""
        if self.val_source is None:
            raise ValueError("no validation set")
        model = self.ema.ema_model if ema else self.model
        model.eval()
        gen = torch.Generator(self.device).manual_seed(self.config.train.seed + VAL_SEED_OFFSET)
        total = 0.0
        for x in self.val_source.chunks(self.config.train.batch_size):
            with self._autocast():
                total += float(self.loss_fn(model, x, gen)) * x.shape[0]
        return total / self.val_source.num_items

    def fit(self, until: int | None = None) -> list[dict]:
        """Train from the current step to ``until`` (default ``train.steps``); returns the logged records.

        Rank 0 appends records to ``<out_dir>/log.jsonl``, saves the resolved config, and writes checkpoints
        every ``checkpoint_every`` steps and at the end.
        """
        tc = self.config.train
        until = tc.steps if until is None else min(int(until), tc.steps)
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.out_dir / CONFIG_FILE, yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        history: list[dict] = []
        bar = tqdm(total=until, initial=self.step, desc="train", disable=not (self.progress and self.dist.is_main))
        start = time.perf_counter()
        while self.step < until:
            metrics = self.train_step()
            record = self._maybe_record(metrics, until, time.perf_counter() - start)
            if record is not None:
                history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
            stop = self.stop is not None and agree_stop(self.stop.requested, self.dist.enabled)
            if stop or (_due(self.step, tc.checkpoint_every, until) and self.step > 0):
                self.save_checkpoint()
            bar.update(1)
            if stop:
                barrier(self.dist)  # no rank exits before rank 0 has written the checkpoint (Slurm may then kill all)
                self.stopped_by = self.stop.name or "a signal to another rank"
                break
        bar.close()
        return history

    def _maybe_record(self, metrics: dict, until: int, seconds: float) -> dict | None:
        tc = self.config.train
        evaluate = self.val_source is not None and _due(self.step, tc.eval_every, until)
        if not (_due(self.step, tc.log_every, until) or evaluate):
            return None
        loss = float(all_reduce_mean(metrics["loss"].float().reshape(1), self.dist))
        record = {"step": self.step, "loss": loss, "lr": metrics["lr"], "grad_norm": float(metrics["grad_norm"]),
                  "seconds": round(seconds, 3)}
        if evaluate and self.dist.is_main:
            record["val_loss"] = self.validation_loss()
            record["val_loss_ema"] = self.validation_loss(ema=True)
        if self.dist.is_main:
            with open(self.out_dir / LOG_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")
        return record

    # -------------------------------------------------------------------------------------- checkpoints
    def checkpoint_meta(self) -> CheckpointMeta:
        """Metadata stored with every checkpoint (config, model_config, noise, normaliser, channels, grid)."""
        return CheckpointMeta(config=self.config.to_dict(), model_config=self.model_config, noise=self.noise,
                              normalizer=self.normalizer, channel_names=self.channel_names,
                              resolution=self.source.item_shape[1:], task=self.config.name, step=self.step,
                              extra={**self.data_source, **self.kind.checkpoint_extra()})

    def _rng_states(self) -> list[torch.Tensor]:
        state = self.generator.get_state()
        if not self.dist.enabled:
            return [state]
        gathered: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(gathered, state)
        return gathered

    def state_dict(self) -> dict:
        """Everything a checkpoint holds (see :mod:`funcdiff.io.checkpoint`)."""
        return {"step": self.step, "model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "ema_num_updates": self.ema.num_updates, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.schedule.state_dict(), "rng": {"noise": self._rng_states()},
                "world_size": self.dist.world_size, "data": self.source.position(self.step),
                "meta": self.checkpoint_meta().to_json()}

    def save_checkpoint(self) -> Path | None:
        """Write ``<out_dir>/checkpoints/step_<step>.pt`` atomically (rank 0; every rank joins the RNG gather)."""
        state = self.state_dict()
        if not self.dist.is_main:
            return None
        path = save_checkpoint(checkpoint_path(self.out_dir, self.step), state)
        prune_checkpoints(self.out_dir, self.config.train.keep_checkpoints)
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore weights, EMA, optimizer, LR schedule, step and RNG state from a checkpoint."""
        state = read_checkpoint(path, map_location=self.device)
        load_module_state(self.model, state["model"], "model", path)
        load_module_state(self.ema.ema_model, state["ema"], "EMA", path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        self.ema.num_updates = int(state["ema_num_updates"])
        self.step = int(state["step"])
        self._restore_rng(state["rng"]["noise"], int(state.get("world_size", 1)))

    def _restore_rng(self, states: list[torch.Tensor], saved_world: int) -> None:
        if all(torch.equal(s.cpu(), states[0].cpu()) for s in states):  # global draws: one state, any world size
            self.generator.set_state(states[0].cpu())
            return
        if saved_world == self.dist.world_size and len(states) == self.dist.world_size:
            self.generator.set_state(states[self.dist.rank].cpu())
            return
        log.warning("checkpoint was written by %d ranks, resuming on %d: noise generators are reseeded "
                    "(training continues correctly but not bit-exactly)", saved_world, self.dist.world_size)
        self.generator.manual_seed(self.config.train.seed * 31 + self.step)  # the same on every rank

    def resume(self) -> Path | None:
        """Continue from the newest checkpoint in ``out_dir`` (no-op if there is none); returns its path."""
        path = latest_checkpoint(self.out_dir)
        if path is None:
            log.warning("no checkpoint under %s: starting from step 0", self.out_dir)
            return None
        self.load_checkpoint(path)
        if self.dist.is_main:
            _truncate_log(self.out_dir / LOG_FILE, self.step)
        return path


def _due(step: int, every: int, until: int) -> bool:
    return step == until or (every > 0 and step % every == 0)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records after ``step`` (written after the checkpoint a run resumes from)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    write_text_atomic(path, "".join(ln + "\n" for ln in lines))


def train(config: RunConfig, *, resume: bool = False, progress: bool = True) -> Trainer:
    """Run a whole training job (single process or one torchrun rank) and return the Trainer.

    Reads the rank layout from the environment (torchrun), initialises the process group, builds the
    data, optionally resumes from ``out_dir``, trains to ``train.steps`` and shuts the group down.
    """
    info = dist_info_from_env()
    device = select_device(config.train.device, info)
    init_distributed(device, info)
    try:
        trainer = Trainer.from_config(config, device=device, dist_info=info, progress=progress)
        if resume:
            trainer.resume()
        trainer.fit()
        trainer.close()
        barrier(info)
    finally:
        shutdown_distributed()
    return trainer
