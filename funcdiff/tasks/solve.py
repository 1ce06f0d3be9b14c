"""Solve a forward or inverse PDE task from sparse observations with a jointly trained diffusion model.

::

    from funcdiff.tasks import solve, make_observation, load_truth
    truth = load_truth("darcy_test.h5", ("a", "u"), index=0)           # (1, 2, 64, 64), physical units
    obs = make_observation("darcy-inverse", truth, fraction=0.03, seed=0)  # 3 % of u at random nodes
    post = solve("runs/darcy/", "darcy-inverse", obs, num_samples=8, steps=100, truth=truth)
    print(post.metrics())          # relative L2 of the posterior mean, misclassification, observation misfit
    post.save("posterior.nc"); post.plot("posterior.png")

The model state holds every channel of the PDE (e.g. Darcy (a, u)); observations of some channels guide the
sampler (a posterior method of :mod:`funcdiff.tasks.samplers`), optionally with the task's PDE residual
(:class:`funcdiff.guidance.PDEResidualGuidance`); the task's target channels are reported. The same checkpoint
solves at any resolution (the sensors are coordinates in the domain, read by interpolation at every grid).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
import xarray as xr
from torch import Tensor, nn

from funcdiff.data.datasets import check_finite
from funcdiff.errors import UserError
from funcdiff.guidance import PDEResidualGuidance, SparseObservation, random_sensors
from funcdiff.guidance.io import observation_to_dataset
from funcdiff.io.checkpoint import CheckpointMeta, load_denoiser
from funcdiff.io.netcdf import add_field, fields_to_dataset, write_netcdf
from funcdiff.metrics import misclassification_rate, relative_l2
from funcdiff.schedules import recorded_schedule
from funcdiff.sampling import num_denoiser_calls
from funcdiff.tasks.problems import TASKS, Task, get_task, is_reconstruct, reconstruct_task
from funcdiff.tasks.samplers import (METHODS, GuidedSampler, PosteriorProblem, build, check_method,  # noqa: F401
                                     draw, solve_physics)
from funcdiff.tasks.settings import FEW_STEPS, SolveSettings  # noqa: F401  (METHODS, FEW_STEPS: re-exported)

PROBLEM_ALIASES = {"navier-stokes": "navier_stokes"}
ModelLike = "str | os.PathLike | tuple[nn.Module, CheckpointMeta]"


@dataclass
class Posterior:
    """Posterior samples of a task's state given observations, in physical units.

    Attributes:
        task: the task solved.  channel_names: names of the state channels (C).
        samples: (K, C, *S) posterior samples.  observation: the sensors and values (B_obs = 1) used.
        truth: (1, C_t, *S) ground truth of the channels in ``truth_names`` (or None).
        settings: how the samples were drawn (steps, nfe, seed, guidance, checkpoint, resolution).
    """

    task: Task
    channel_names: tuple[str, ...]
    samples: Tensor
    observation: SparseObservation
    truth: Optional[Tensor] = None
    truth_names: tuple[str, ...] = ()
    settings: dict = field(default_factory=dict)
    units: dict = field(default_factory=dict)  # channel -> CF units (lat-lon models: from the ERA5 store)

    @property
    def mean(self) -> Tensor:
        """Posterior mean. Shapes: (1, C, *S)."""
        return self.samples.mean(dim=0, keepdim=True)

    @property
    def std(self) -> Tensor:
        """Posterior standard deviation (0 for a single sample). Shapes: (1, C, *S)."""
        if self.samples.shape[0] < 2:
            return torch.zeros_like(self.mean)
        return self.samples.std(dim=0, keepdim=True)

    def channel(self, x: Tensor, names: Sequence[str]) -> Tensor:
        """The channels ``names`` of a state (B, C, *S) -> (B, len(names), *S)."""
        return x[:, [self.channel_names.index(n) for n in names]]

    def misfit(self) -> dict[str, float]:
        """Relative observation misfit ‖y - A x‖ / ‖y‖ of the posterior mean and the mean over samples."""
        rel = self.observation.relative_misfit
        return {"misfit_mean": float(rel(self.mean)[0]), "misfit_samples": float(rel(self.samples).mean())}

    def metrics(self) -> dict[str, float]:
        """Misfit plus, with truth, relative L2 of the mean and of single samples per target channel and
        (binary targets) the misclassification rate of the mean at the task's threshold."""
        out = self.misfit()
        if self.truth is None:
            return out
        for name in self.task.target:
            if name not in self.truth_names:
                continue
            truth = self.truth[:, [self.truth_names.index(name)]]
            out[f"rel_l2_{name}"] = float(relative_l2(self.channel(self.mean, [name]), truth)[0, 0])
            single = relative_l2(self.channel(self.samples, [name]), truth.expand(self.samples.shape[0], *truth.shape[1:]))
            out[f"rel_l2_{name}_single"] = float(single.mean())
            if self.task.grid == "latlon":  # area-weighted RMSE (WeatherBench 2), units of the channel
                out.update(_latlon_rmse(name, self.channel(self.mean, [name]), self.channel(self.samples, [name]),
                                        truth))
            if self.task.threshold is not None:
                rate = misclassification_rate(self.channel(self.mean, [name]), truth, self.task.threshold)
                out[f"misclassification_{name}"] = float(rate[0, 0])
        return out

    def to_dataset(self) -> xr.Dataset:
        """netCDF-ready dataset: samples per channel, ``<c>_mean``, ``<c>_std``, ``<c>_truth``/``<c>_error``,
        the sensors in the layout of :mod:`funcdiff.guidance.io` (so :func:`~funcdiff.guidance.load_observation`
        reads them back) and the metrics and settings as attributes."""
        attrs = {"task": self.task.name, "problem": self.task.problem, **self.settings, **self.metrics()}
        ds = fields_to_dataset(self.samples, self.channel_names, attrs, grid=self.task.netcdf_grid)
        like = self.channel_names[0]
        for name in self.channel_names:
            add_field(ds, f"{name}_mean", self.channel(self.mean, [name])[0, 0], like)
            add_field(ds, f"{name}_std", self.channel(self.std, [name])[0, 0], like)
        for name in self.truth_names:
            truth = self.truth[0, self.truth_names.index(name)]
            add_field(ds, f"{name}_truth", truth, like)
            add_field(ds, f"{name}_error", self.channel(self.mean, [name])[0, 0] - truth, like)
        for var in ds.data_vars:  # every variable derived from a channel carries that channel's units
            base = var if var in self.units else var.rpartition("_")[0]
            if base in self.units:
                ds[var].attrs["units"] = str(self.units[base])
        obs = self.observation
        names = obs.channel_names or tuple(self.channel_names[c] if c < len(self.channel_names) else ""
                                           for c in obs.channels)
        sensors = observation_to_dataset(obs, units=[str(self.units.get(n, "1")) for n in names])
        clash = [c for c in ("latitude", "longitude") if c in sensors.coords and c in ds.dims]
        if clash:  # station latitude/longitude beside the grid's: CF wants other names for the stations' own
            sensors = sensors.rename({c: f"station_{c}" for c in clash})
            sensors["observed_values"].attrs["coordinates"] = " ".join(f"station_{c}" for c in clash)
        return xr.merge([ds, sensors], combine_attrs="override")

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dataset` to a netCDF file atomically (CF-1.8)."""
        return write_netcdf(self.to_dataset(), path, title=f"funcdiff posterior samples, task {self.task.name}")

    def plot(self, path: str | os.PathLike) -> Path:
        """PNG with truth, the observed channel with sensor dots, posterior mean, std and error of the target."""
        from funcdiff.io.plots import plot_panels

        target, observed = self.task.target[0], self.channel_names[self.observation.channels[0]]
        mean, std = self.channel(self.mean, [target])[0, 0], self.channel(self.std, [target])[0, 0]
        if self.truth is not None and observed in self.truth_names:
            obs_field = self.truth[0, self.truth_names.index(observed)]
        else:
            obs_field = self.channel(self.mean, [observed])[0, 0]
        panels = [(f"observed {observed} ({self.observation.num_sensors} sensors)", obs_field)]
        if self.truth is not None and target in self.truth_names:
            truth = self.truth[0, self.truth_names.index(target)]
            panels = [(f"truth {target}", truth), *panels]
        panels += [(f"posterior mean {target}", mean), (f"posterior std {target}", std)]
        if self.truth is not None and target in self.truth_names:
            panels.append((f"|error| {target}", (mean - truth).abs()))
        dot_panel = 1 if panels[0][0].startswith("truth") else 0
        points = self.observation.coords if self.observation.dim == 2 else None  # (x, y), or (lat, lon) degrees
        cmaps = [None] * (len(panels) - 2) + ["viridis", "magma"]  # fields by the colour_scale rule; std, |error|
        shared = [i for i, (name, _) in enumerate(panels) if name.startswith(("truth", "posterior mean"))]
        if observed == target:
            shared.append(dot_panel)  # the observed field is the target: on the scale of truth and estimate
        units = [str(self.units.get(name.split()[-1] if not name.startswith("observed") else observed, "1"))
                 for name, _ in panels]
        how = (f"{self.task.name}: {self.task.target[0]} = numerical solver applied to each posterior sample of "
               f"{self.task.observed[0]} (pushforward)" if self.settings.get("pushforward") else
               f"{self.task.name}: guided diffusion posterior ({self.samples.shape[0]} samples)")
        return plot_panels(panels, path, cmaps=cmaps, points=points, point_panels=[dot_panel], shared=shared,
                           title=how, units=units, grid="latlon" if self.task.grid == "latlon" else "periodic",
                           reference=0 if panels[0][0].startswith("truth") else None)


def load_model(checkpoint: ModelLike, device: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointMeta]:
    """A checkpoint file or run directory (EMA weights), or an in-memory ``(denoiser, meta)`` pair."""
    if isinstance(checkpoint, tuple):
        return checkpoint
    return load_denoiser(checkpoint, ema=True, device=device)


def checkpoint_problem(meta: CheckpointMeta) -> Optional[str]:
    """The PDE problem a checkpoint was trained on, when it records one: ``meta.extra["pde"]`` or
    ``meta.extra["task"]``, else a run name that is a task or problem name or starts with one
    (``"darcy"``, ``"darcy-64"``, ``"darcy-inverse"``). None when nothing is recorded."""
    for key in ("pde", "problem", "task"):
        value = meta.extra.get(key) if meta.extra else None
        if value:
            return _problem_of_name(str(value)) or str(value)
    return _problem_of_name(meta.task or "")


def checkpoint_grid(meta: CheckpointMeta) -> str:
    """``"node"``, ``"periodic"`` or ``"latlon"`` (a model trained on an ERA5 store): the grid of a checkpoint's
    training data (``meta.extra["grid"]`` from the data file), else the grid of the task registry's problem it was
    trained on, else ``"periodic"``."""
    grid = (meta.extra or {}).get("grid")
    kind = grid.get("type") if isinstance(grid, dict) else grid
    if kind == "latlon":
        return "latlon"
    if kind in ("node", "nodes", "periodic"):
        return "node" if kind.startswith("node") else "periodic"
    problem = checkpoint_problem(meta)
    grids = {t.grid for t in TASKS.values() if t.problem == problem}
    return grids.pop() if len(grids) == 1 else "periodic"


def _problem_of_name(name: str) -> Optional[str]:
    name = name.strip().lower()
    if name in TASKS:
        return TASKS[name].problem
    problems = {t.problem for t in TASKS.values()} | set(PROBLEM_ALIASES)
    for prob in sorted(problems, key=len, reverse=True):
        if name == prob or name.startswith(prob + "-") or name.startswith(prob + "_"):
            return PROBLEM_ALIASES.get(prob, prob)
    return None


def _check_sphere(sensor_grid: str, model_grid: str, what: str) -> None:
    """UserError when stations at (latitude, longitude) meet a model of the unit domain (or the reverse)."""
    if sensor_grid == "latlon" and model_grid != "latlon":
        raise UserError(f"the stations are (latitude, longitude) on the sphere but {what} lies on the {model_grid!r} "
                         "grid of the unit domain: use a model trained on an ERA5 store (lat-lon grid)")
    if model_grid == "latlon" and sensor_grid not in ("latlon", None):
        raise UserError(f"{what} lies on the sphere but the sensors use the {sensor_grid!r} grid of the unit "
                         "domain: give stations at (latitude, longitude) in degrees")


def resolve_task(task: str | Task, meta: CheckpointMeta, observed: Optional[Sequence[str]] = None,
                 sensor_grid: Optional[str] = None) -> Task:
    """A registered task, or the generic ``reconstruct`` task of this checkpoint (its channels and grid, sensors
    on ``observed``, default every channel; :func:`funcdiff.tasks.problems.reconstruct_task`). UserError for
    sensors on another grid than the model's (``sensor_grid``), an observed name the model does not have or an
    unknown task."""
    try:
        if is_reconstruct(task):
            _check_sphere(sensor_grid, checkpoint_grid(meta), f"checkpoint {meta.path or '(in memory)'}")
            return reconstruct_task(tuple(meta.channel_names), tuple(observed) if observed else None,
                                    checkpoint_grid(meta), checkpoint_problem(meta) or "")
        return get_task(task)
    except ValueError as err:
        raise UserError(str(err)) from err


def _latlon_rmse(name: str, mean: Tensor, samples: Tensor, truth: Tensor) -> dict[str, float]:
    """Area-weighted RMSE (WeatherBench 2 weights) of the posterior mean and, averaged, of single samples.
    Shapes: mean (1, 1, H, W), samples (K, 1, H, W), truth (1, 1, H, W); units of the channel."""
    from funcdiff.metrics import latitude_weights, rmse
    from funcdiff.sphere import grid_latitudes

    weights = latitude_weights(grid_latitudes(*truth.shape[-2:])).to(truth.dtype)[:, None]
    single = rmse(samples, truth.expand_as(samples), weights, (1, 2, 3))
    return {f"rmse_{name}": float(rmse(mean, truth, weights)), f"rmse_{name}_single": float(single.mean())}


def check_compatible(task: Task, meta: CheckpointMeta, method: str = "dps") -> None:
    """UserError if the checkpoint was trained on another PDE problem or lacks the task's channels (with the
    solver in the loop, ``*-physics`` methods, only the input channel is needed)."""
    trained = checkpoint_problem(meta)
    if trained is not None and trained != task.problem:
        raise UserError(f"checkpoint {meta.path or '(in memory)'} was trained on {trained!r} "
                         f"(run {meta.task!r}) but task {task.name!r} needs a model of {task.problem!r}")
    needed = (task.input_channel,) if method.endswith("-physics") else task.channels
    missing = [c for c in needed if c not in meta.channel_names]
    if missing:
        raise UserError(f"task {task.name!r} needs channels {list(task.channels)} but the model has "
                         f"{list(meta.channel_names)} (missing {missing})")


def _bind_observation(task: Task, observation: SparseObservation, channel_names: Sequence[str]) -> SparseObservation:
    """Re-index the observation's channels by name into the model's channel order; check task and grid."""
    if observation.values is None:
        raise UserError("the observation holds no values")
    _check_sphere(observation.grid, task.grid, f"task {task.name!r}")
    names = observation.channel_names or tuple(task.channels[c] for c in observation.channels)
    unknown = [n for n in names if n not in channel_names]
    if unknown:
        raise UserError(f"observed channels {unknown} are not channels of the model {list(channel_names)}")
    if tuple(names) != task.observed:
        raise UserError(f"task {task.name!r} observes {list(task.observed)} but the observation holds {list(names)}")
    if observation.grid != task.grid:
        raise UserError(f"task {task.name!r} uses the {task.grid!r} grid but the observation's sensors use "
                         f"{observation.grid!r}")
    return SparseObservation(coords=observation.coords, channels=tuple(channel_names.index(n) for n in names),
                             values=observation.values[:1], noise_std=observation.noise_std, grid=observation.grid,
                             channel_names=tuple(names))


def _spatial(resolution: int | Sequence[int] | None, meta: CheckpointMeta, truth: Optional[Tensor]) -> tuple[int, ...]:
    if resolution is None:
        return tuple(truth.shape[2:]) if truth is not None else tuple(meta.resolution)
    sizes = (resolution,) if isinstance(resolution, int) else tuple(resolution)
    if any(int(n) < 2 for n in sizes):
        raise UserError(f"resolution must be at least 2 points per axis, got {resolution}")
    if isinstance(resolution, int):
        if len(set(meta.resolution)) > 1:
            raise UserError(f"the model's grid {tuple(meta.resolution)} is not square: give the resolution "
                             "as a tuple")
        return (int(resolution),) * len(meta.resolution)
    return tuple(int(n) for n in resolution)


def _pde_term(task: Task, meta: CheckpointMeta, weight: float, start_sigma: float) -> PDEResidualGuidance:
    """The task's PDE residual as a guidance term on the decoded state, normalised by the data std of
    ``task.residual_scale_channel`` (so ``weight`` is dimensionless)."""
    if task.residual is None:
        raise UserError(f"task {task.name!r} has no PDE residual: run it with pde_guidance=False")
    scale = 1.0
    if task.residual_scale_channel is not None and meta.normalizer is not None:
        scale = float(meta.normalizer.std[meta.channel_names.index(task.residual_scale_channel)])
    index = [meta.channel_names.index(c) for c in task.channels]
    return PDEResidualGuidance(lambda field: task.residual(field[:, index]) / scale, weight,
                               start_sigma=start_sigma, decode=_decoder(meta))


def _decoder(meta: CheckpointMeta):
    return meta.normalizer.decode if meta.normalizer is not None else None


@dataclass
class Prepared:
    """A checked solve: the problem every method is built from, the truth to score against and where."""

    problem: PosteriorProblem
    truth: Optional[Tensor]
    truth_names: tuple[str, ...]
    scored_on: dict


def solve_settings(settings: Optional[SolveSettings] = None, keywords: Optional[dict] = None) -> SolveSettings:
    """``settings`` (default :class:`SolveSettings()`) updated by keyword settings (``solve(..., steps=50)``);
    TypeError naming an unknown keyword."""
    settings = settings if settings is not None else SolveSettings()
    return settings.updated(**keywords) if keywords else settings


def solve(checkpoint: ModelLike, task: str | Task, observation: SparseObservation,
          settings: Optional[SolveSettings] = None, *, truth: Optional[Tensor] = None,
          truth_names: Optional[Sequence[str]] = None, batch_size: Optional[int] = None,
          device: str | torch.device = "cpu", progress: bool = False, cuda_graphs: bool = False,
          **keywords) -> Posterior:
    """Posterior samples of ``task`` given sparse ``observation`` (physical units), from a trained model.

    prepare (checks, model, sensors, grid, schedule) -> build (the method's guided denoiser, one registry lookup in
    :data:`funcdiff.tasks.samplers.POSTERIOR_METHODS`) -> draw (:func:`funcdiff.sampling.sample`) -> post-process
    (decode, solver in the loop / pushforward, :class:`Posterior`).

    Args:
        checkpoint: checkpoint file, run directory, or ``(denoiser, meta)``.
        task: a task name (see :data:`funcdiff.tasks.TASKS`) or :class:`Task`.
        observation: sensors of the task's observed channels with values (1, C_obs, N) in physical units.
        settings: every setting that changes the result (:class:`~funcdiff.tasks.settings.SolveSettings`:
            method, num_samples, steps, solver, resolution, seed, guidance_strength, scaling, cg_iters,
            pde_guidance / pde_weight / pde_start_sigma, trust_region, sigma_max, pushforward). Each may also be
            given as a keyword (``solve(..., num_samples=8, steps=50, method="mmps")``), which updates
            ``settings``. A truth on another grid than ``resolution`` is interpolated onto the sampling grid
            (:func:`regrid`), where the metrics are computed; ``settings["scored_on"]`` says so.
        truth: optional ground truth (1, C_t, *S) of channels ``truth_names`` (default: the task's channels).
        batch_size: samples per guided denoiser call (bounds gradient memory; results do not depend on it).
        progress: show a progress bar over the sampler's steps.
        cuda_graphs: replay every guided step from a CUDA graph (a CUDA ``device``; the same samples, less host
            overhead per step). A step that waits for the host cannot be recorded: ``enkg*`` (it reads a number per
            step), a solver in the loop (inverse ``*-physics``) and PDE guidance (switched on by the noise level)
            are a :class:`~funcdiff.errors.UserError` before sampling starts. mmps's ``vjps`` then also counts the
            eager warm-up calls that precede each capture.
    Shapes: returns a :class:`Posterior` with samples (num_samples, C, *S) in physical units.
    ``task="reconstruct"``: the generic task of the checkpoint (:func:`resolve_task`; sensors of the observation's
    channels, every channel reported); on a lat-lon model the resolution is rows (columns twice as many) or a tuple.
    """
    settings = solve_settings(settings, keywords)
    prepared = prepare(checkpoint, task, observation, settings, truth=truth, truth_names=truth_names,
                       batch_size=batch_size, device=device)
    sampler = build(prepared.problem, settings, batch_size)
    x = draw(prepared.problem, sampler, settings, device=device, progress=progress, cuda_graphs=cuda_graphs)
    return post_process(prepared, sampler, x, settings)


def prepare(checkpoint: ModelLike, task: str | Task, observation: SparseObservation, settings: SolveSettings, *,
            truth: Optional[Tensor] = None, truth_names: Optional[Sequence[str]] = None,
            batch_size: Optional[int] = None, device: str | torch.device = "cpu") -> Prepared:
    """Check the settings against the task and the model, load the model, bind the sensors to its channels, fix
    the sampling grid (regridding the truth onto it) and read the schedule from the checkpoint."""
    if is_reconstruct(task):  # built from the model: load it first (once; ``checkpoint`` becomes the pair)
        checkpoint = load_model(checkpoint, device)
        task = resolve_task(task, checkpoint[1], observation.channel_names, observation.grid)
    task = get_task(task)
    resolution = settings.resolution
    if isinstance(resolution, int) and task.grid == "latlon":  # like `funcdiff sample`: H rows, 2H columns
        resolution = (resolution, 2 * resolution)
    if settings.num_samples < 1 or settings.steps < 1:
        raise UserError(f"num_samples and steps must be positive integers, got {settings.num_samples} and "
                        f"{settings.steps}")
    check_method(task, settings, batch_size)
    if settings.pushforward and (task.direction != "forward" or task.forward_solver is None):
        raise UserError(f"pushforward needs a forward task with a numerical solver; {task.name!r} is "
                         f"{task.direction!r}" + ("" if task.forward_solver is not None else " without a solver"))
    denoiser, meta = load_model(checkpoint, device)
    check_compatible(task, meta, settings.method)
    names = tuple(meta.channel_names)
    obs = _bind_observation(task, observation, task.channels if settings.physics else names)
    truth, truth_names = _check_truth(truth, truth_names, task)
    spatial = _spatial(resolution, meta, truth)
    scored_on = {}
    if truth is not None and tuple(truth.shape[2:]) != spatial:
        if task.trajectory:
            raise UserError(f"truth grid {tuple(truth.shape[2:])} differs from the sampling grid {spatial}")
        scored_on = {"scored_on": f"the sampling grid {'x'.join(map(str, spatial))}: truth interpolated "
                                  f"(multilinear) from {'x'.join(map(str, truth.shape[2:]))}"}
        truth = regrid(truth, spatial, task.grid)
    pde_terms = [_pde_term(task, meta, settings.pde_weight, settings.pde_start_sigma)] if settings.pde_guidance else []
    schedule = recorded_schedule(meta.config, sigma_max=settings.sigma_max)  # = meta.schedule, σ_max overridden
    problem = PosteriorProblem(task, denoiser, meta, obs, (settings.num_samples, len(names), *spatial), schedule,
                               pde_terms)
    return Prepared(problem, truth, truth_names, scored_on)


def post_process(prepared: Prepared, sampler: GuidedSampler, x: Tensor, settings: SolveSettings) -> Posterior:
    """Model states -> physical samples (decode; the solver in the loop's (input, S(input)); pushforward), the
    run's settings and costs, and the :class:`Posterior`."""
    problem = prepared.problem
    task, meta, names = problem.task, problem.meta, problem.names
    counts = sampler.counts()
    samples = (_decoder(meta)(x) if meta.normalizer is not None else x).cpu()
    if settings.physics:
        samples, names = solve_physics(task, samples, names)
        counts["solver_calls"] = counts.get("solver_calls", 0) + settings.num_samples
    if settings.pushforward:
        samples = push_forward(task, samples, names)
        counts["solver_calls"] += settings.num_samples
    s = settings
    record = {"method": s.method, **counts, "steps": s.steps, "solver": s.solver, **problem.schedule,
              "nfe": num_denoiser_calls(s.solver, s.steps), "seed": s.seed, "guidance_strength": s.guidance_strength,
              "pde_guidance": int(s.pde_guidance), "pde_weight": s.pde_weight, "pushforward": int(s.pushforward),
              "trust_region": s.kappa or 0.0, "num_sensors": problem.observation.num_sensors,
              "resolution": list(problem.shape[2:]), "checkpoint": meta.path, "checkpoint_step": meta.step,
              **prepared.scored_on}
    units = ((meta.extra or {}).get("era5") or {}).get("units") or {}
    return Posterior(task, names, samples.float(), problem.observation, prepared.truth, prepared.truth_names,
                     record, units=dict(units))


def regrid(x: Tensor, spatial: Sequence[int], grid: str) -> Tensor:
    """Fields on another grid of the same convention (``"node"`` or ``"periodic"``), by the multilinear
    interpolation the sensors use; used to score a posterior sampled on a grid other than the truth's.

    Shapes: x (B, C, *S) -> (B, C, *spatial), same dtype.
    """
    axes = [torch.arange(n, dtype=torch.float64) / (n if grid == "periodic" else n - 1) for n in spatial]
    if grid == "latlon":  # grid points of the target lat-lon grid, in degrees
        from funcdiff.sphere import grid_latitudes, grid_longitudes

        axes = [torch.from_numpy(grid_latitudes(*spatial)), torch.from_numpy(grid_longitudes(spatial[1]))]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(spatial))
    grid_points = SparseObservation(points, channels=tuple(range(x.shape[1])), grid=grid)
    return grid_points.observe(x.double()).reshape(*x.shape[:2], *spatial).to(x.dtype)


def push_forward(task: Task, samples: Tensor, channel_names: Sequence[str]) -> Tensor:
    """Replace the target channel of each sample by the task's numerical solver applied to its input channel.

    Shapes: samples (K, C, *S) in physical units -> (K, C, *S); only ``task.target`` changes.
    """
    (source,), (target,) = task.observed, task.target
    i, j = channel_names.index(source), channel_names.index(target)
    out = samples.clone()
    out[:, j:j + 1] = task.forward_solver(samples[:, i:i + 1]).to(samples.dtype)
    return out


def _check_truth(truth: Optional[Tensor], names: Optional[Sequence[str]], task: Task
                 ) -> tuple[Optional[Tensor], tuple[str, ...]]:
    if truth is None:
        return None, ()
    names = tuple(names or task.channels)
    if truth.ndim < 3 or truth.shape[1] != len(names):
        raise UserError(f"truth must be (1, {len(names)}, *S) for channels {list(names)}, got {tuple(truth.shape)}")
    try:
        check_finite(truth, names)
    except ValueError as err:
        raise UserError(f"truth: {err}") from err
    return truth[:1].detach().float().cpu(), names


def make_observation(task: str | Task, truth: Tensor, *, fraction: Optional[float] = None,
                     count: Optional[int] = None, seed: int = 0, noise_std: float = 0.0, on_grid: bool = True,
                     truth_names: Optional[Sequence[str]] = None) -> SparseObservation:
    """Random sensors of the task's observed channels, read from ``truth`` (plus Gaussian noise of ``noise_std``).

    Exactly one of ``fraction`` (of the grid's points, FunDPS: 0.03) and ``count`` must be given.
    Shapes: truth (1, C_t, *S) of channels ``truth_names`` (default the task's channels); values (1, C_obs, N).
    """
    task = get_task(task)
    if (fraction is None) == (count is None):
        raise UserError("give exactly one of fraction= and count= for the number of sensors")
    if (fraction is not None and not 0.0 < fraction <= 1.0) or (count is not None and count < 1):
        raise UserError(f"the sensor fraction must be in (0, 1] and the count at least 1, got "
                        f"{fraction if fraction is not None else count}")
    truth, names = _check_truth(truth, truth_names, task)
    gen = torch.Generator().manual_seed(int(seed))
    how_many = float(fraction) if fraction is not None else int(count)
    coords = random_sensors(how_many, truth.shape[2:], grid=task.grid, on_grid=on_grid, generator=gen)
    missing = [c for c in task.observed if c not in names]
    if missing:
        raise UserError(f"truth lacks the observed channels {missing} (has {list(names)})")
    channels = tuple(names.index(c) for c in task.observed)
    obs = SparseObservation(coords=coords, channels=channels, noise_std=noise_std, grid=task.grid,
                            channel_names=task.observed)
    values = obs.observe(truth.double())
    if noise_std > 0:
        values = values + noise_std * torch.randn(values.shape, generator=gen, dtype=values.dtype)
    return SparseObservation(coords=coords, channels=tuple(task.channels.index(c) for c in task.observed),
                             values=values, noise_std=noise_std, grid=task.grid, channel_names=task.observed)


def load_truth(path: str | os.PathLike, channels: Sequence[str], index: int = 0) -> Tensor:
    """Ground truth sample ``index`` of the named channels from our HDF5 layout (any format
    :func:`funcdiff.data.load_fields` reads; an ERA5 store: frame ``index`` of the series) or a netCDF file with
    one variable per channel. Reads that sample only where the format allows
    (:func:`funcdiff.tasks.case_store.open_samples`).

    Shapes: returns (1, len(channels), *S) float32, physical units.
    """
    from funcdiff.tasks.case_store import open_samples

    path = Path(path)
    store = open_samples(path, channels)
    if not 0 <= index < store.shape[0]:
        raise UserError(f"sample index {index} out of range: {path} holds {store.shape[0]} samples")
    return store.read([index]).float()


def read_truth_file(path: str | os.PathLike, channels: Sequence[str]) -> Tensor:
    """Every sample of the named channels from our HDF5 layout (any format :func:`funcdiff.data.load_fields`
    reads) or a netCDF file with one variable per channel (ValueError naming missing variables).

    Shapes: returns (N, len(channels), *S) float32, physical units.
    """
    path = Path(path)
    if path.suffix in (".nc", ".nc4", ".netcdf"):
        from funcdiff.io.netcdf import dataset_to_fields

        with xr.open_dataset(path, engine="netcdf4") as ds:
            return dataset_to_fields(ds.load(), channels)
    from funcdiff.data import load_fields

    data = load_fields(path, fields=list(channels))
    fields = data.stack(tuple(channels)).float()
    if data.source == "era5_zarr":  # an ERA5 store: every frame of every segment is a sample (N·T, C, H, W)
        fields = fields.movedim(2, 1).flatten(0, 1)
    return fields
