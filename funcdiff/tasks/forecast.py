"""Probabilistic forecasting: autoregressive and rolling diffusion rollouts, ensembles, sensors assimilated on the way.

A rollout is a loop around the shared solvers (:mod:`funcdiff.sampling`), never a new solver:

* **autoregressive** -- each step draws ``horizon`` fresh frames of function-space noise, runs the Karras schedule
  (``steps_per_frame × horizon`` steps) with the last ``history`` clean frames as conditioning, and emits all
  ``horizon`` frames;
* **rolling** (Ruhe et al., ICML 2024; the EDM form of Rühling Cachay et al. 2025, ERDM) -- a window of W frames
  whose noise rises with the frame index; each step lowers every frame's sigma along the per-frame schedule
  (:func:`funcdiff.sampling.sigmas_rolling`, ``steps_per_frame`` solver steps), emits the now-clean first frame,
  shifts the window and appends fresh noise at sigma_max. The very first step runs the initial phase (all noise
  -> the rolling profile) before that, with ``steps_per_frame × W`` steps (the steps a frame sees in the window).

* **deterministic** -- the MSE baseline of the same backbone (``forecast.kind: deterministic``): one Euler step
  from sigma_max to 0, i.e. the network's conditional-mean prediction, one evaluation per block.

All are one function, :func:`rollout_step`, over a :class:`RolloutState` (history, window, per-member random
generators, frames emitted). :func:`rollout` is a generator of emitted frames, so memory never grows with the lead
time; :class:`Forecast` streams them to netCDF, resumes a killed run bit-identically from a state file written
after every step, plots and scores. Sensors with times (:class:`~funcdiff.guidance.timed.TimedObservation`) guide
every window frame that carries them through the existing :class:`~funcdiff.guidance.GuidedDenoiser`.

Units: states inside the loop are normalised (the checkpoint's :class:`~funcdiff.data.Normalizer`); everything a
user gives or gets is physical. Shapes: frames are ``(M, C, *S)`` for M members; windows and histories are folded
frames-major ``(M, W·C, *S)`` (:mod:`funcdiff.data.windows`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor

from funcdiff.config import ForecastConfig, SampleConfig, config_from_dict
from funcdiff.data import Normalizer
from funcdiff.data.windows import fold_frames, frame_channels, unfold_frames
from funcdiff.errors import UserError
from funcdiff.guidance import GuidedDenoiser
from funcdiff.guidance.likelihood import ObservationGuidance
from funcdiff.guidance.timed import FrameTerm, TimedObservation
from funcdiff.noise import GaussianRandomField, make_generators
from funcdiff.sampling import get_solver, sigmas_karras, sigmas_rolling
from funcdiff.training.forecast import frames_per_step, nfe_per_frame

ConditionalDenoiser = Callable[..., Tensor]  # (x, sigma, cond=history) -> denoised, normalised units


@dataclass
class Forecaster:
    """What a rollout needs: the conditional denoiser and how it was trained.

    ``denoiser(x, sigma, cond=history)`` maps a noisy window (B, horizon·C, *S) at per-element sigma and clean
    history (B, history·C, *S) to the denoised window; a trained checkpoint gives one through
    :func:`load_forecaster`, tests give exact ones. ``dt`` is the time between frames, ``normalizer`` maps
    physical to model units (``None``: identity).
    """

    denoiser: ConditionalDenoiser
    noise: GaussianRandomField
    forecast: ForecastConfig
    channel_names: tuple[str, ...]
    normalizer: Optional[Normalizer] = None
    sample: SampleConfig = field(default_factory=SampleConfig)
    dt: float = 1.0
    grid: str = "periodic"
    min_resolution: tuple[int, ...] = ()
    sigma_data: float | Sequence[float] = 1.0
    name: str = "forecaster"
    device: str | torch.device = "cpu"
    time_units: str = "model time units"
    channel_units: tuple[str, ...] = ()
    training_split: Optional[dict] = None  # :func:`funcdiff.io.checkpoint.training_split` of the checkpoint

    @property
    def channels(self) -> int:
        return len(self.channel_names)

    def encode(self, x: Tensor) -> Tensor:
        """Physical -> model units. Shapes: (B, C, ...) -> same."""
        return x if self.normalizer is None else self.normalizer.encode(x).to(x.dtype)

    def decode(self, x: Tensor) -> Tensor:
        """Model -> physical units. Shapes: (B, C, ...) -> same."""
        return x if self.normalizer is None else self.normalizer.decode(x).to(x.dtype)


def load_forecaster(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> Forecaster:
    """The :class:`Forecaster` of a checkpoint file or run directory (EMA weights); UserError if the checkpoint
    is not a forecaster's."""
    from funcdiff.io.checkpoint import load_denoiser, training_split

    denoiser, meta = load_denoiser(checkpoint, ema=True, device=device)
    fc = _forecaster_from(denoiser, meta, checkpoint, device)
    fc.training_split = training_split(meta)
    return fc


def _forecaster_from(denoiser, meta, checkpoint, device) -> Forecaster:
    """The forecaster of a loaded checkpoint, by its kind (UserError for a model that is not one)."""
    config = config_from_dict(meta.config)
    if not config.forecast.enabled:
        raise UserError(f"checkpoint {checkpoint} is not a forecaster (it was trained without a `forecast:` "
                        "section); train one with a config from configs/forecast/")
    if config.forecast.kind == "super_resolution":
        raise UserError(f"checkpoint {checkpoint} is a super-resolution model, not a forecaster: apply it to a "
                        "trajectory with `funcdiff upsample`")
    if config.forecast.kind == "trajectory":
        from funcdiff.tasks.trajectory import trajectory_forecaster

        return trajectory_forecaster(denoiser, meta, config, device)
    modes = tuple(meta.model_config.get("n_modes", ()))
    era5 = meta.extra.get("era5") or {}  # lat-lon data from an ERA5 store: CF time units and channel units
    units = era5.get("units") or {}
    return Forecaster(denoiser=denoiser, noise=meta.noise, forecast=config.forecast,
                      time_units=str(era5.get("time_units", "model time units")),
                      channel_units=tuple(str(units.get(c, "1")) for c in meta.channel_names) if units else (),
                      channel_names=tuple(meta.channel_names), normalizer=meta.normalizer, sample=config.sample,
                      dt=float(meta.extra.get("dt", 1.0)), grid=str(_grid_kind(meta.extra.get("grid"))),
                      min_resolution=tuple(int(m) + 1 for m in modes),
                      sigma_data=meta.model_config.get("sigma_data", 1.0), name=str(meta.task or "forecaster"),
                      device=device)


def _grid_kind(grid) -> str:
    kind = grid.get("type") if isinstance(grid, dict) else grid
    if kind == "latlon":
        return "latlon"
    return "node" if isinstance(kind, str) and kind.startswith("node") else "periodic"


# ------------------------------------------------------------------------------------------------ the loop
@dataclass
class RolloutState:
    """Everything a rollout carries from one step to the next (normalised units).

    ``history`` (M, history·C, *S) clean frames; ``window`` (M, horizon·C, *S) the rolling window at the start of
    a step, or ``None`` before the first rolling step (and always for autoregressive steps); ``emitted`` frames
    so far; one random generator per member, so a member's result never depends on the batch it ran in.
    """

    history: Tensor
    window: Optional[Tensor]
    emitted: int
    generators: list[torch.Generator]

    def state_dict(self) -> dict:
        """Plain tensors and numbers (``torch.load(weights_only=True)`` reads them back)."""
        return {"history": self.history, "window": self.window, "emitted": self.emitted,
                "generators": [g.get_state() for g in self.generators]}

    @classmethod
    def from_state_dict(cls, state: dict, device: str | torch.device = "cpu") -> "RolloutState":
        """The state on ``device``; the generators stay on the CPU, where :func:`make_generators` makes them."""
        gens = []
        for s in state["generators"]:
            g = torch.Generator()
            g.set_state(s)
            gens.append(g)
        window = state["window"]
        return cls(state["history"].to(device), None if window is None else window.to(device),
                   int(state["emitted"]), gens)


def initial_state(fc: Forecaster, initial: Tensor, members: int, seed: int, offset: int = 0) -> RolloutState:
    """The state before the first step: the last ``history`` frames of ``initial``, repeated per member.

    ``offset`` separates the generators of several initial states (member m of initial state j draws from
    generator (seed, j·members + m)). Shapes: initial (C, T0, *S) physical, T0 ≥ history.
    """
    check_initial(fc, initial)
    h = fc.forecast.history
    frames = fc.encode(initial[:, -h:].unsqueeze(0).to(fc.device, torch.float32))  # (1, C, h, *S)
    history = fold_frames(frames).expand(members, *fold_frames(frames).shape[1:]).clone()
    gens = make_generators(seed, range(offset * members, (offset + 1) * members))
    return RolloutState(history, None, 0, gens)


def check_initial(fc: Forecaster, initial: Tensor) -> None:
    """UserError for an initial state the forecaster cannot start from (frames, channels, grid, NaN)."""
    h, c = fc.forecast.history, fc.channels
    if initial.ndim < 3 or initial.shape[0] != c:
        raise UserError(f"the initial state must be (C={c}, frames, *space) for channels {list(fc.channel_names)}, "
                        f"got shape {tuple(initial.shape)}")
    if initial.shape[1] < h:
        raise UserError(f"the forecaster needs {h} history frames but the initial state has {initial.shape[1]}")
    spatial = tuple(initial.shape[2:])
    if fc.min_resolution and (len(spatial) != len(fc.min_resolution)
                              or any(n < m for n, m in zip(spatial, fc.min_resolution))):
        raise UserError(f"the initial state's grid {spatial} does not fit the model: it needs "
                        f"{len(fc.min_resolution)} spatial axes of at least {fc.min_resolution} points")
    bad = int((~torch.isfinite(initial[:, -h:])).sum())
    if bad:
        raise UserError(f"the initial state holds {bad} NaN/Inf values")


TermsForLead = Callable[[int], list]  # lead -> guidance terms on one (B, C, *S) frame (physical-units terms)


def rollout_step(fc: Forecaster, state: RolloutState, *, steps_per_frame: int, solver: str = "heun",
                 terms_for_lead: Optional[TermsForLead] = None, batch_size: Optional[int] = None
                 ) -> tuple[Tensor, RolloutState]:
    """One forecast step for all members, in chunks of ``batch_size`` (results independent of the chunking).

    Returns the emitted frames (M, C, e, *S) in model units (e = 1 rolling, ``horizon`` autoregressive) and the
    new state.
    """
    m = state.history.shape[0]
    size = batch_size or m
    frames, histories, windows = [], [], []
    for start in range(0, m, size):
        part = slice(start, min(start + size, m))
        window = None if state.window is None else state.window[part]
        out = _step_chunk(fc, state.history[part], window, state.generators[part], state.emitted,
                          steps_per_frame, solver, terms_for_lead)
        for acc, value in zip((frames, histories, windows), out):
            acc.append(value)
    e = frames_per_step(fc.forecast)
    new_window = None if windows[0] is None else torch.cat(windows)
    new_state = RolloutState(torch.cat(histories), new_window, state.emitted + e, state.generators)
    return unfold_frames(torch.cat(frames), fc.channels), new_state


def _step_chunk(fc: Forecaster, history: Tensor, window: Optional[Tensor], gens: list[torch.Generator],
                emitted: int, steps_per_frame: int, solver: str, terms_for_lead: Optional[TermsForLead]
                ) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Advance one chunk of members: (emitted frames folded, new history, new window)."""
    c, w, kind = fc.channels, fc.forecast.horizon, fc.forecast.kind
    if kind == "trajectory":  # one diffusion of all `horizon` frames in the transform's space
        from funcdiff.tasks.trajectory import trajectory_step

        return trajectory_step(fc, history, gens, emitted, steps_per_frame, solver, terms_for_lead)
    s = fc.sample
    run = get_solver(solver)
    denoiser = _window_denoiser(fc, history, emitted, terms_for_lead)
    if window is None:
        window = _fresh_noise(fc, gens, w * c, history)
        if kind == "rolling":
            init = sigmas_rolling(w, steps_per_frame * w, s.sigma_min, s.sigma_max, s.rho, init=True)
            window = run(denoiser, window, _per_frame(init, c, history))
    if kind == "rolling":
        sigmas = _per_frame(sigmas_rolling(w, steps_per_frame, s.sigma_min, s.sigma_max, s.rho), c, history)
    elif kind == "deterministic":
        sigmas, run = torch.tensor([s.sigma_max, 0.0], dtype=torch.float64), get_solver("euler")  # x -> D(x)
    else:
        sigmas = sigmas_karras(steps_per_frame * w, s.sigma_min, s.sigma_max, s.rho)
    x = run(denoiser, window, sigmas)
    e = frames_per_step(fc.forecast)
    out = x[:, :e * c]
    new_window = torch.cat([x[:, e * c:], _fresh_noise(fc, gens, e * c, history)], dim=1) if kind == "rolling" else None
    new_history = torch.cat([history, out], dim=1)[:, -fc.forecast.history * c:]
    return out, new_history, new_window


def _fresh_noise(fc: Forecaster, gens: list[torch.Generator], channels: int, like: Tensor) -> Tensor:
    """sigma_max × function-space noise for ``channels`` folded channels, one generator per member."""
    shape = (len(gens), channels, *like.shape[2:])
    return fc.sample.sigma_max * fc.noise.sample(shape, generator=gens, dtype=like.dtype).to(like.device)


def _per_frame(sigmas: Tensor, channels: int, like: Tensor) -> Tensor:
    """(n+1, W) per-frame levels -> (n+1, 1, W·C, 1, ...) rows broadcastable to a folded window."""
    rows = sigmas.repeat_interleave(channels, dim=1)
    return rows.reshape(*rows.shape, *[1] * (like.ndim - 2)).unsqueeze(1).to(like.device, like.dtype)


def _window_denoiser(fc: Forecaster, history: Tensor, emitted: int, terms_for_lead: Optional[TermsForLead]):
    """The conditional denoiser with this step's history bound; wrapped by guidance for frames with sensors
    (window frame k is lead ``emitted + 1 + k``)."""
    def denoiser(x: Tensor, sigma: Tensor) -> Tensor:
        return fc.denoiser(x, sigma, cond=history)

    if terms_for_lead is None:
        return denoiser
    c = fc.channels
    terms = [FrameTerm(term, frame_channels(k, c))
             for k in range(fc.forecast.horizon) for term in terms_for_lead(emitted + 1 + k)]
    if not terms:
        return denoiser
    return GuidedDenoiser(denoiser, terms, fc.noise, sigma_data=fc.sigma_data)


def per_initial_state(observations: TimedObservation | Sequence[Optional[TimedObservation]] | None,
                      n_init: int) -> tuple[Optional[TimedObservation], ...]:
    """One entry per initial state: ``observations`` as given (a sequence of ``n_init``), one
    :class:`TimedObservation` for a single initial state, or ``None`` (no sensors). UserError for one
    observation given to several initial states: their trajectories differ, so one set of values is wrong for
    all but one (make each with :func:`funcdiff.guidance.timed.twin_observation` from its own trajectory)."""
    if observations is None:
        return (None,) * n_init
    if isinstance(observations, TimedObservation):
        if n_init != 1:
            raise UserError(f"one set of timed observations for {n_init} initial states: give one per initial "
                            "state (a list, None where a state has no sensors), each read from its own trajectory")
        return (observations,)
    observations = tuple(observations)
    if len(observations) != n_init:
        raise UserError(f"{len(observations)} sets of timed observations for {n_init} initial states: give one per "
                        "initial state")
    return observations


def observation_digest(observation: TimedObservation) -> str:
    """A short hash of the sensors (positions, channels, noise, times, values): part of a run's signature, so a
    forecast is never resumed with other sensors."""
    import hashlib

    s = observation.sensors
    h = hashlib.blake2b(digest_size=12)
    for t in (s.coords, s.values, observation.times, s.noise_std_per_channel()):
        h.update(t.detach().double().cpu().numpy().tobytes())
    h.update(repr((s.channels, s.grid)).encode())
    return h.hexdigest()


def observation_terms(fc: Forecaster, observation: TimedObservation, lead_steps: int) -> TermsForLead:
    """lead -> guidance terms of the sensors at that lead (physical values; the terms decode the model state)."""
    grids = {observation.sensors.grid, fc.grid}
    if "latlon" in grids and len(grids) == 2:
        raise UserError(f"the sensors are on a {observation.sensors.grid!r} grid "
                        f"({'lat-lon stations' if observation.sensors.grid == 'latlon' else 'unit-domain positions'})"
                        f" but the forecaster's grid is {fc.grid!r}")
    leads = observation.leads(fc.dt, lead_steps)
    by_lead: dict[int, list] = {}
    for k, lead in enumerate(leads):
        sensors = observation.at(k)
        if sensors.values.shape[1] and max(sensors.channels) >= fc.channels:
            raise UserError(f"the observation reads channels {sensors.channels} but the forecaster has "
                            f"{list(fc.channel_names)}")
        term = ObservationGuidance(sensors, fc.noise, sigma_data=fc.sigma_data, decode=fc.decode)
        by_lead.setdefault(lead, []).append(term)
    return lambda lead: by_lead.get(lead, [])


def rollout(fc: Forecaster, initial: Tensor, lead_steps: int, *, members: int = 8, seed: int = 0,
            steps_per_frame: Optional[int] = None, solver: str = "heun",
            observations: Optional[TimedObservation] = None, batch_size: Optional[int] = None,
            state: Optional[RolloutState] = None, offset: int = 0) -> Iterator[tuple[list[int], Tensor, RolloutState]]:
    """Yield ``(leads, frames, state)`` after every forecast step until ``lead_steps`` frames are out.

    ``frames`` (M, C, len(leads), *S) are physical; ``state`` is the state after the step (save it to resume:
    pass it back as ``state``). Frames past ``lead_steps`` of a last autoregressive block are dropped.
    Shapes: initial (C, T0, *S) physical with T0 ≥ history.
    """
    if lead_steps < 1 or members < 1:
        raise UserError(f"need lead_steps >= 1 and members >= 1, got {lead_steps}, {members}")
    spf = int(steps_per_frame or fc.forecast.steps_per_frame)
    if spf < 1:
        raise UserError(f"steps per frame must be >= 1, got {steps_per_frame}")
    terms = observation_terms(fc, observations, lead_steps) if observations is not None else None
    state = state or initial_state(fc, initial, members, seed, offset)
    while state.emitted < lead_steps:
        with torch.no_grad():
            frames, new_state = rollout_step(fc, state, steps_per_frame=spf, solver=solver, terms_for_lead=terms,
                                             batch_size=batch_size)
        keep = min(frames.shape[2], lead_steps - state.emitted)
        leads = list(range(state.emitted + 1, state.emitted + 1 + keep))
        yield leads, fc.decode(frames[:, :, :keep]), new_state
        state = new_state


# ----------------------------------------------------------------------------------------- the ensemble
class Forecast:
    """An ensemble forecast from one or more initial states, computed lazily (nothing runs until asked).

    ``frames(init)`` streams ``(lead, (M, C, *S))`` physical frames; ``save(path)`` streams them into a netCDF file
    (layout in :mod:`funcdiff.io.forecast_file`) and resumes a killed save bit-identically; ``to_tensor()``,
    ``plot(path)`` and ``scores(truth)`` read the saved file when there is one.

    Shapes: initial (n_init, C, T0, *S) physical, T0 ≥ the forecaster's history.
    """

    def __init__(self, forecaster: Forecaster, initial: Tensor, lead_steps: int, *, members: int = 8, seed: int = 0,
                 steps_per_frame: Optional[int] = None, solver: str = "heun",
                 observations: TimedObservation | Sequence[Optional[TimedObservation]] | None = None,
                 batch_size: Optional[int] = None,
                 init_index: Optional[Sequence[int]] = None, init_frame: Optional[Sequence[int]] = None,
                 init_time: Optional[Sequence[float]] = None, attrs: Optional[dict] = None) -> None:
        single = initial.ndim == 2 + forecaster.noise.dim  # (C, T0, *S) rather than (n_init, C, T0, *S)
        initial = initial.unsqueeze(0) if single else initial
        for x in initial:
            check_initial(forecaster, x)
        n = initial.shape[0]
        self.forecaster, self.initial, self.lead_steps = forecaster, initial, int(lead_steps)
        self.members, self.seed, self.solver = int(members), int(seed), solver
        self.steps_per_frame = int(steps_per_frame or forecaster.forecast.steps_per_frame)
        self.batch_size = batch_size
        self.observations = per_initial_state(observations, n)
        for obs in self.observations:
            if obs is not None:
                observation_terms(forecaster, obs, self.lead_steps)  # checks times, channels and grid now
        self.init_index = tuple(int(i) for i in (init_index if init_index is not None else range(n)))
        self.init_frame = tuple(int(f) for f in (init_frame if init_frame is not None else [initial.shape[2] - 1] * n))
        self.init_time = tuple(float(t) for t in (init_time if init_time is not None else
                                                  [f * forecaster.dt for f in self.init_frame]))
        self.attrs = dict(attrs or {})
        self.path: Optional[Path] = None

    def observations_for(self, init: int) -> Optional[TimedObservation]:
        """The timed observations assimilated in the rollout of initial state ``init`` (None: no sensors)."""
        return self.observations[init]

    def blocks(self, init: int = 0, state: Optional[RolloutState] = None
               ) -> Iterator[tuple[list[int], Tensor, RolloutState]]:
        """The rollout of initial state ``init`` step by step (see :func:`rollout`)."""
        return rollout(self.forecaster, self.initial[init], self.lead_steps, members=self.members, seed=self.seed,
                       steps_per_frame=self.steps_per_frame, solver=self.solver,
                       observations=self.observations_for(init),
                       batch_size=self.batch_size, state=state, offset=init)

    def frames(self, init: int = 0) -> Iterator[tuple[int, Tensor]]:
        """Yield ``(lead, frame (M, C, *S))`` as the rollout of initial state ``init`` produces them."""
        for leads, frames, _ in self.blocks(init):
            for k, lead in enumerate(leads):
                yield lead, frames[:, :, k]

    @property
    def nfe_per_frame(self) -> float:
        return nfe_per_frame(self.forecaster.forecast, self.steps_per_frame, self.solver)

    def signature(self) -> dict:
        """What determines the result: a partial file is resumed only by a run with the same signature."""
        return {"forecaster": self.forecaster.name, "lead_steps": self.lead_steps, "members": self.members,
                "seed": self.seed, "steps_per_frame": self.steps_per_frame, "solver": self.solver,
                "batch_size": self.batch_size, "init_index": list(self.init_index),
                "init_frame": list(self.init_frame),
                "observations": [None if o is None else observation_digest(o) for o in self.observations],
                "initial_sum": float(self.initial.double().sum())}

    def save(self, path: str | os.PathLike, *, progress: bool = False) -> Path:
        """Stream the forecast to netCDF; rerun after a kill to continue (see :func:`save_forecast`)."""
        from funcdiff.tasks.forecast_io import save_forecast

        self.path = save_forecast(self, Path(path), progress=progress)
        return self.path

    def to_tensor(self) -> Tensor:
        """All members and leads, physical, on the CPU: from the saved file if any, else by running the rollout.
        Shapes: (n_init, M, C, L, *S)."""
        if self.path is not None:
            from funcdiff.tasks.forecast_io import read_forecast

            return read_forecast(self.path)
        runs = [torch.cat([f.cpu() for _, f, _ in self.blocks(i)], dim=2) for i in range(self.initial.shape[0])]
        return torch.stack(runs)

    def scores(self, truth: Tensor) -> dict[str, Tensor]:
        """Per-lead scores against ``truth`` (n_init, C, L', *S) with L' ≥ L (lead ℓ at index ℓ - 1)
        (:func:`funcdiff.tasks.evaluate.lead_scores`: RMSE, relative L2, fair CRPS, spread, SSR, rank histogram,
        spectrum errors; each (C, L))."""
        from funcdiff.tasks.evaluate import lead_scores

        truth = truth.unsqueeze(0) if truth.ndim == self.initial.ndim - 1 else truth
        if truth.shape[2] < self.lead_steps:
            raise UserError(f"the truth has {truth.shape[2]} leads, the forecast {self.lead_steps}")
        return lead_scores(self.to_tensor(), truth[:, :, :self.lead_steps].to(torch.float32))

    def plot(self, path: str | os.PathLike, truth: Optional[Tensor] = None, init: int = 0,
             channels: Optional[Sequence[str]] = None) -> Path:
        """PNG of :meth:`figure` (same arguments)."""
        from funcdiff.io.plots import save_figure

        return save_figure(self.figure(truth, init, channels), path)

    def figure(self, truth: Optional[Tensor] = None, init: int = 0, channels: Optional[Sequence[str]] = None):
        """Matplotlib Figure of truth (if given), ensemble mean, two members and the spread at a few leads of
        every channel (or the ``channels`` named), truth and estimates on one colour scale with units, the
        initial state in the title and the assimilated sensors marked
        (:func:`funcdiff.tasks.forecast_io.forecast_figure`). Shapes: truth (C, L', *S) for initial state ``init``."""
        from funcdiff.tasks.forecast_io import forecast_figure

        f = self.forecaster
        return forecast_figure(self.to_tensor()[init], truth=truth, dt=f.dt, channel_names=f.channel_names,
                               channels=channels, channel_units=f.channel_units, grid=f.grid,
                               time_units=f.time_units, observations=self.observations_for(init),
                               init=(self.init_index[init], self.init_frame[init], self.init_time[init]))


def forecast(model: Forecaster | str | os.PathLike, initial: Tensor, lead_steps: int, *, members: int = 8,
             observations: Optional[TimedObservation] = None, seed: int = 0, device: str = "cpu",
             **kwargs) -> Forecast:
    """An ensemble :class:`Forecast` of ``lead_steps`` frames from ``initial`` (C, T0, *S) or (n_init, C, T0, *S)
    physical frames, with a trained checkpoint (path) or a :class:`Forecaster`; keyword arguments go to
    :class:`Forecast` (``steps_per_frame``, ``solver``, ``batch_size``, ...)."""
    fc = model if isinstance(model, Forecaster) else load_forecaster(model, device)
    return Forecast(fc, initial, lead_steps, members=members, seed=seed, observations=observations, **kwargs)
