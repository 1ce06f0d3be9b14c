"""The rotating shallow-water equations on the sphere, as an ERA5-like source of test and demo data.

The solver is torch-harmonics' ``ShallowWaterSolver`` (Bonev et al., ICML 2023, the SFNO paper's benchmark;
spectral in vorticity, divergence and geopotential, third-order Adams–Bashforth with implicit hyperdiffusion),
used as a library; this module only chooses the initial state, spins the flow up, and samples it every few hours.
It needs the optional extra ``pip install -e ".[sphere]"`` (torch-harmonics 0.8.0 with torch 2.13; 0.9.x with 2.14).

Initial state: the barotropically unstable mid-latitude jet of Galewsky, Scott and Polvani (2004, Tellus 56A) plus
a random perturbation (torch-harmonics' random initial condition at Mach ``mach``, drawn from ``seed``), so that
different seeds give different weather. After ``spinup_days`` the jet has broken into eddies; frames are then
taken every ``step_hours``.

Units and layout: geopotential ``z`` (m² s⁻², the layer's g·h; mean g·``mean_depth``), eastward wind ``u`` and
northward wind ``v`` (m s⁻¹), on a grid with pole rows, latitudes ascending in degrees north, longitudes
0 .. 360 - 360/W degrees east. Shapes: (T, H, W) float32 per variable.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class ShallowWaterRun:
    """Settings of one simulation. ``nlat`` rows with poles and ``2 (nlat - 1)`` columns; ``dt`` seconds per solver
    step (default: 600 s × 32 / (nlat - 1), about a quarter of the gravity-wave CFL limit); ``mean_depth`` in m
    (5.5 km puts the geopotential near ERA5's z500, ~5.4e4 m² s⁻²)."""

    nlat: int = 65
    step_hours: float = 6.0
    spinup_days: float = 10.0
    seed: int = 0
    mach: float = 0.5
    mean_depth: float = 5500.0
    dt: float | None = None

    def __post_init__(self) -> None:
        if self.nlat < 9 or self.nlat % 2 == 0:
            raise ValueError(f"nlat must be odd and >= 9 (a grid with pole rows, e.g. 33, 65, 121), got {self.nlat}")
        if self.step_hours <= 0 or self.spinup_days < 0 or self.mach < 0 or self.mean_depth <= 0:
            raise ValueError("step_hours and mean_depth must be positive, spinup_days and mach non-negative")

    @property
    def nlon(self) -> int:
        return 2 * (self.nlat - 1)

    @property
    def solver_dt(self) -> float:
        """Solver time step in seconds, dividing ``step_hours`` exactly."""
        target = self.dt if self.dt is not None else 600.0 * 32 / (self.nlat - 1)
        steps = max(1, math.ceil(self.step_hours * SECONDS_PER_HOUR / target))
        return self.step_hours * SECONDS_PER_HOUR / steps

    @property
    def steps_per_frame(self) -> int:
        return round(self.step_hours * SECONDS_PER_HOUR / self.solver_dt)


def _solver(run: ShallowWaterRun):
    try:
        from torch_harmonics.examples import ShallowWaterSolver
    except ImportError as err:  # pragma: no cover - exercised where the extra is absent
        from funcdiff.errors import UserError

        raise UserError("the shallow-water generator needs torch-harmonics: pip install -e \".[sphere]\" "
                        "(torch-harmonics 0.8.0 with torch 2.13; with torch 2.14: "
                        "pip install torch-harmonics==0.9.3)") from err
    modes = run.nlon // 3  # the 2/3 rule: quadratic terms do not alias
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ShallowWaterSolver(run.nlat, run.nlon, run.solver_dt, lmax=modes, mmax=modes,
                                  havg=run.mean_depth)


def _initial_state(solver, run: ShallowWaterRun) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = solver.galewsky_initial_condition()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run.seed)
        perturbation = solver.random_initial_condition(mach=run.mach)
    perturbation[0, 0, 0] = 0  # keep the mean depth
    return state + perturbation


def shallow_water_frames(run: ShallowWaterRun, frames: int) -> Iterator[np.ndarray]:
    """Yield ``frames`` states (3, H, W) float32 (z, u, v; latitude ascending), ``run.step_hours`` apart, after the
    spin-up. Memory stays at one state."""
    torch_threads = torch.get_num_threads()
    solver = _solver(run)
    try:
        state = _initial_state(solver, run)
        spinup = round(run.spinup_days * 24 / run.step_hours)
        if spinup:
            state = solver.timestep(state, spinup * run.steps_per_frame)
        for k in range(frames):
            if k:
                state = solver.timestep(state, run.steps_per_frame)
            grid = solver.gethuv(state).numpy()
            if not np.isfinite(grid).all():
                raise FloatingPointError(f"the shallow-water run blew up at frame {k}; lower dt or mach")
            yield np.flip(grid, axis=1).astype(np.float32)  # the solver's rows run north to south
    finally:
        torch.set_num_threads(torch_threads)


def grid_coordinates(run: ShallowWaterRun) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes (ascending, with poles) and longitudes in degrees. Shapes: (H,), (W,)."""
    from funcdiff.sphere import grid_latitudes, grid_longitudes

    return grid_latitudes(run.nlat, run.nlon), grid_longitudes(run.nlon)
