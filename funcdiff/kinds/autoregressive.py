"""Autoregressive forecasters (``forecast.kind: autoregressive``): p(x_{t+1..t+horizon} | x_{t-history+1..t}).

Training items are windows of ``history + horizon`` frames folded frames-major into channels
(:mod:`funcdiff.data.windows`); the history frames are clean conditioning channels, the ``horizon`` future frames
are noised at one sigma. A rollout step draws ``horizon`` fresh frames of function-space noise, runs the Karras
schedule (``steps_per_frame × horizon`` steps) with the last ``history`` clean frames as conditioning and emits all
``horizon`` frames. The rolling and deterministic kinds are this one with other hooks (:meth:`sigma_sampler`,
:meth:`start_window`, :meth:`schedule`, :meth:`next_window`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from funcdiff.data import FieldDataset
from funcdiff.data.windows import fold_frames, frame_channels
from funcdiff.data.datasets import split_record
from funcdiff.data.stores import ArrayStore
from funcdiff.data.streaming import StreamedDataset, window_index
from funcdiff.errors import UserError
from funcdiff.kinds.base import (Forecaster, ModelKind, RolloutState, check_channel_count, encoded,
                                 forecaster_from_meta, streamed_sets)
from funcdiff.sampling import get_solver, sigmas_karras
from funcdiff.training.forecast import load_trajectories, trajectory_split, window_datasets
from funcdiff.utils import to_device


def window_sets(config, fields: Optional[Tensor] = None) -> tuple[FieldDataset, FieldDataset]:
    """Train/validation windows (C, history + horizon, *S) of the trajectories of ``config.data`` (or of in-memory
    trajectories ``fields`` (N, C, T, *S)), split by trajectory (:func:`funcdiff.training.forecast.window_datasets`)."""
    traj, source = load_trajectories(config) if fields is None else (fields, {})
    check_channel_count(traj.shape[1], config.data.channels)
    return window_datasets(traj, config, source)


def stream_window_sets(config, store: ArrayStore) -> tuple[StreamedDataset, StreamedDataset]:
    """Streamed train/validation windows (C, history + horizon, *S) of a trajectory store (N, C, T, *S): the
    trajectories of :func:`funcdiff.training.forecast.trajectory_split`, the windows of
    :func:`funcdiff.data.streaming.window_index`, ``dt`` = the store's frame spacing × ``forecast.frame_step``."""
    d, fc = config.data, config.forecast
    if len(store.shape) != 3 + d.dim:
        raise UserError(f"{store.path}: channels {list(d.channels)} have shape {(store.shape[0], *store.shape[2:])}; "
                        f"a forecaster needs trajectories (N, T, *S) with data.dim={d.dim} spatial dims")
    count = len(store) if d.num_samples is None else min(len(store), d.num_samples)
    if count < 2:
        raise UserError(f"a forecaster needs at least 2 trajectories (one held out), got {count}")
    train, held_out = trajectory_split(count, config)
    t = store.coords.get("t")
    t = None if t is None else np.asarray(t, dtype=np.float32)  # as load_fields gives the coordinate
    spacing = float(t[1] - t[0]) if t is not None and len(t) > 1 else float(store.attrs.get("dt", 1.0))
    source = {"dt": spacing * fc.frame_step, "split": split_record(held_out, count, "trajectory")}
    windows = [window_index(store, rows, fc.window, fc.stride, fc.frame_step) for rows in (train, held_out)]
    return streamed_sets(config, store, windows[0], windows[1], source)


class AutoregressiveKind(ModelKind):
    """Blocks of ``horizon`` frames given ``history`` frames (module docstring)."""

    name = "autoregressive"
    role = "forecaster"
    refusals = {"field": "checkpoint {checkpoint} is a forecaster (forecast.kind={name}); it needs initial frames: "
                         "use `funcdiff forecast --checkpoint ... --initial FILE`"}

    # ------------------------------------------------------------------------------------- training
    def model_config(self, num_channels: int) -> dict:
        c, fc = int(num_channels), self.config.forecast
        return {**self.config.model, "in_channels": c * fc.horizon, "out_channels": c * fc.horizon,
                "cond_channels": c * fc.history}

    def datasets(self, fields: Optional[Tensor] = None) -> tuple[FieldDataset, FieldDataset]:
        return window_sets(self.config, fields)

    def items(self, dataset: FieldDataset, device: torch.device) -> Tensor:
        """Windows folded frames-major: (N, C, L, *S) -> (N, L·C, *S), history first."""
        return fold_frames(encoded(dataset, device))

    streams = True

    def stream_datasets(self, store: ArrayStore) -> tuple[StreamedDataset, StreamedDataset]:
        """Windows of the trajectories of ``data.path`` (at most ``data.num_samples``), split by trajectory as
        :func:`window_sets` splits them; no window crosses a gap in the store's time axis."""
        return stream_window_sets(self.config, store)

    def encode_batch(self, raw: Tensor, normalizer, device) -> Tensor:
        """Raw windows (b, C, L, *S) -> folded items (b, L·C, *S), as :meth:`items`."""
        return fold_frames(super().encode_batch(raw, normalizer, device))

    def cond_channels(self) -> int:
        """The ``history`` frames' channels."""
        return len(self.config.data.channels) * self.config.forecast.history

    # ------------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, denoiser, meta, config, device="cpu") -> Forecaster:
        return forecaster_from_meta(denoiser, meta, config, device)

    # ------------------------------------------------------------------------------------- rollout
    @classmethod
    def frames_per_step(cls, forecast) -> int:
        return forecast.horizon

    @classmethod
    def nfe_per_frame(cls, forecast, steps_per_frame: int, solver: str = "heun") -> float:
        """Heun: 2 per step, the last step of a block to 0 costs 1."""
        steps = steps_per_frame * forecast.horizon
        return (steps if solver == "euler" else 2 * steps - 1) / forecast.horizon

    @classmethod
    def step(cls, fc: Forecaster, state: RolloutState, *, steps_per_frame: int, solver: str = "heun",
             terms_for_lead=None) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        c, history, gens = fc.channels, state.history, state.generators
        denoiser = window_denoiser(fc, history, state.emitted, terms_for_lead)
        window = state.window
        if window is None:
            window = cls.start_window(fc, denoiser, get_solver(solver), gens, history, steps_per_frame)
        sigmas, run = cls.schedule(fc, steps_per_frame, solver, history)
        x = run(denoiser, window, sigmas)
        e = cls.frames_per_step(fc.forecast) * c
        out = x[:, :e]
        new_history = torch.cat([history, out], dim=1)[:, -fc.forecast.history * c:]
        return out, new_history, cls.next_window(fc, x[:, e:], gens, history)

    @classmethod
    def graphed(cls, fc: Forecaster) -> Forecaster:
        """The conditional denoiser ``fc.denoiser(x, sigma, cond=history)`` wrapped in a ``GraphedDenoiser``."""
        from funcdiff.models.graphs import GraphedDenoiser

        return dataclasses.replace(fc, denoiser=GraphedDenoiser(fc.denoiser))

    @classmethod
    def start_window(cls, fc: Forecaster, denoiser, run, gens, history: Tensor, steps_per_frame: int) -> Tensor:
        """The window a step starts from when the state has none: sigma_max × fresh noise."""
        return fresh_noise(fc, gens, fc.forecast.horizon * fc.channels, history)

    @classmethod
    def schedule(cls, fc: Forecaster, steps_per_frame: int, solver: str, like: Tensor):
        """``(sigmas, solver)`` of one step: the Karras ramp of ``steps_per_frame × horizon`` steps."""
        s = fc.sample
        return sigmas_karras(steps_per_frame * fc.forecast.horizon, s.sigma_min, s.sigma_max, s.rho), get_solver(solver)

    @classmethod
    def next_window(cls, fc: Forecaster, rest: Tensor, gens, history: Tensor) -> Optional[Tensor]:
        """The window the next step starts from, given the frames not emitted (None: start afresh)."""
        return None


# ----------------------------------------------------------------------------------------- shared pieces
def fresh_noise(fc: Forecaster, gens: list[torch.Generator], channels: int, like: Tensor) -> Tensor:
    """sigma_max × function-space noise for ``channels`` folded channels, one generator per member."""
    shape = (len(gens), channels, *like.shape[2:])
    return fc.sample.sigma_max * to_device(fc.noise.sample(shape, generator=gens, dtype=like.dtype), like.device)


def window_denoiser(fc: Forecaster, history: Tensor, emitted: int, terms_for_lead):
    """The conditional denoiser with this step's history bound; wrapped by guidance for frames with sensors
    (window frame k is lead ``emitted + 1 + k``)."""
    def denoiser(x: Tensor, sigma: Tensor) -> Tensor:
        return fc.denoiser(x, sigma, cond=history)

    if terms_for_lead is None:
        return denoiser
    from funcdiff.guidance import GuidedDenoiser
    from funcdiff.guidance.timed import FrameTerm

    c = fc.channels
    terms = [FrameTerm(term, frame_channels(k, c))
             for k in range(fc.forecast.horizon) for term in terms_for_lead(emitted + 1 + k)]
    if not terms:
        return denoiser
    return GuidedDenoiser(denoiser, terms, fc.noise, sigma_data=fc.sigma_data)


__all__ = ["AutoregressiveKind", "fresh_noise", "stream_window_sets", "window_denoiser", "window_sets"]
