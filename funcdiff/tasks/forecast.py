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

Each is a kind (:mod:`funcdiff.kinds`): :func:`rollout_step` calls its ``step`` over a :class:`RolloutState`
(history, window, per-member random generators, frames emitted). :func:`rollout` is a generator of emitted frames, so memory never grows with the lead
time; :class:`Forecast` streams them to netCDF, resumes a killed run bit-identically from a state file written
after every step, plots and scores. Sensors with times (:class:`~funcdiff.guidance.timed.TimedObservation`) guide
every window frame that carries them through the existing :class:`~funcdiff.guidance.GuidedDenoiser`.

Units: states inside the loop are normalised (the checkpoint's :class:`~funcdiff.data.Normalizer`); everything a
user gives or gets is physical. Shapes: frames are ``(M, C, *S)`` for M members; windows and histories are folded
frames-major ``(M, W·C, *S)`` (:mod:`funcdiff.data.windows`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor

from funcdiff.data.windows import fold_frames, unfold_frames
from funcdiff.errors import UserError
from funcdiff.guidance.likelihood import ObservationGuidance
from funcdiff.guidance.timed import TimedObservation
from funcdiff.kinds.base import Forecaster, RolloutState, load_for_role
from funcdiff.noise import make_generators


def load_forecaster(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> Forecaster:
    """The :class:`~funcdiff.kinds.base.Forecaster` of a checkpoint file or run directory (EMA weights), built by
    its kind (:mod:`funcdiff.kinds`); UserError if the checkpoint is not a forecaster's."""
    return load_for_role(checkpoint, "forecaster", device)


# ------------------------------------------------------------------------------------------------ the loop
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
    """One forecast step for all members, in chunks of ``batch_size`` (results independent of the chunking): the
    forecaster's kind advances each chunk (:meth:`funcdiff.kinds.base.ModelKind.step`).

    Returns the emitted frames (M, C, e, *S) in model units (e frames per step of the kind, e.g. 1 rolling,
    ``horizon`` autoregressive) and the new state.
    """
    kind, m = fc.model_kind, state.history.shape[0]
    size = batch_size or m
    frames, histories, windows = [], [], []
    for start in range(0, m, size):
        out = kind.step(fc, state.part(slice(start, min(start + size, m))), steps_per_frame=steps_per_frame,
                        solver=solver, terms_for_lead=terms_for_lead)
        for acc, value in zip((frames, histories, windows), out):
            acc.append(value)
    e = kind.frames_per_step(fc.forecast)
    new_window = None if windows[0] is None else torch.cat(windows)
    new_state = RolloutState(torch.cat(histories), new_window, state.emitted + e, state.generators)
    return unfold_frames(torch.cat(frames), fc.channels), new_state


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


def place_terms(terms_for_lead: TermsForLead, leads: Sequence[int], channels: int, like: Tensor) -> None:
    """Make the device constants of the observation terms at ``leads`` before a rollout (sensor stencils, values,
    the likelihood's covariance, the decode gain) by evaluating each once on a zero frame (1, ``channels``, *S) on
    ``like``'s device: otherwise each term makes them on its first use, inside the loop, and a step whose window
    takes in a new lead with sensors waits for the device (``tests/test_host_sync.py``)."""
    frame = like.new_zeros(1, channels, *like.shape[2:])
    sigma = like.new_ones(1)
    with torch.no_grad():
        for lead in leads:
            for term in terms_for_lead(lead):
                term(frame, sigma)


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
    if terms is not None:
        place_terms(terms, range(state.emitted + 1, lead_steps + 1), fc.channels, state.history)
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
        return self.forecaster.model_kind.nfe_per_frame(self.forecaster.forecast, self.steps_per_frame, self.solver)

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


def with_cuda_graphs(fc: Forecaster) -> Forecaster:
    """``fc`` with its network's calls replayed from CUDA graphs: the same forecast (the same kernels run), with one
    launch per call instead of hundreds, which is what bounds a rollout at small and medium grids on a GPU. A graph
    is captured per shape of the calls (window, history, members per chunk) on first use and kept with the returned
    forecaster, so make it once and reuse it across forecasts. Guided steps (frames with sensors) stay eager.
    ValueError unless ``fc`` is on a CUDA device."""
    if torch.device(fc.device).type != "cuda":
        raise ValueError(f"cuda_graphs needs a forecaster on a CUDA device, got device {str(fc.device)!r}")
    return fc.model_kind.graphed(fc)


def forecast(model: Forecaster | str | os.PathLike, initial: Tensor, lead_steps: int, *, members: int = 8,
             observations: Optional[TimedObservation] = None, seed: int = 0, device: str = "cpu",
             cuda_graphs: bool = False, **kwargs) -> Forecast:
    """An ensemble :class:`Forecast` of ``lead_steps`` frames from ``initial`` (C, T0, *S) or (n_init, C, T0, *S)
    physical frames, with a trained checkpoint (path) or a :class:`Forecaster`; ``cuda_graphs``: the network's calls
    replayed from CUDA graphs (:func:`with_cuda_graphs`); keyword arguments go to :class:`Forecast`
    (``steps_per_frame``, ``solver``, ``batch_size``, ...)."""
    fc = model if isinstance(model, Forecaster) else load_forecaster(model, device)
    fc = with_cuda_graphs(fc) if cuda_graphs else fc
    return Forecast(fc, initial, lead_steps, members=members, seed=seed, observations=observations, **kwargs)
