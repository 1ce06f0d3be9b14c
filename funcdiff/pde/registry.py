"""Named data-generating problems: the contract between :mod:`funcdiff.pde` and ``funcdiff data generate``.

Every ``Problem.generate(num_samples, resolution, *, generator, device="cpu", dtype=torch.float32, **params)``
returns a dict of tensors: pair problems give one ``(num_samples, *spatial)`` array per name in ``fields``;
trajectory problems give ``"u"`` of shape ``(num_samples, T, *spatial)`` and the times ``"t"`` of shape ``(T,)``.
Unknown ``params`` raise ``ValueError``; missing ones come from ``defaults``. The result is a deterministic function
of the generator state (all random numbers are drawn first, in float64, from ``generator``). Solves run in float64
unless ``precision="single"``; the outputs are cast to ``dtype``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from funcdiff.pde.burgers import solve_burgers
from funcdiff.pde.elliptic import solve_darcy, solve_helmholtz, solve_poisson
from funcdiff.pde.grf import sample_cosine_grf, sample_periodic_grf, threshold_coefficient
from funcdiff.pde.navier_stokes import solve_navier_stokes

FNO_NS_SIGMA = math.sqrt(2.0) * 7.0**1.5  # amplitude of the FNO Navier-Stokes initial vorticity (alpha=2.5, tau=7)


@dataclass(frozen=True)
class Problem:
    """A named PDE data generator (see the module docstring for the ``generate`` contract)."""

    name: str
    kind: str  # "pair" or "trajectory"
    fields: tuple[str, ...]
    defaults: dict
    generate: Callable[..., dict[str, Tensor]]
    description: str
    grid: str = "periodic"  # "periodic": x_j = j/R on [0, 1); "node": x_j = j/(R-1) on [0, 1] (Dirichlet)


def _resolve(problem: str, defaults: dict, params: dict) -> dict:
    """Defaults overridden by ``params``; ValueError naming unknown parameters."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {problem!r}; valid: {sorted(defaults)}")
    return {**defaults, **params}


def _work_dtype(precision: str) -> torch.dtype:
    if precision not in ("double", "single"):
        raise ValueError(f"precision must be 'double' or 'single', got {precision!r}")
    return torch.float64 if precision == "double" else torch.float32


def _check_size(num_samples: int, resolution: int, minimum: int) -> None:
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if int(resolution) < minimum:
        raise ValueError(f"resolution must be >= {minimum}, got {resolution}")


DARCY_DEFAULTS = {"f": 1.0, "alpha": 2.0, "tau": 3.0, "a_high": 12.0, "a_low": 3.0}


def generate_darcy(
    num_samples: int, resolution: int, *, generator: torch.Generator, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32, **params: Any,
) -> dict[str, Tensor]:
    """Darcy pairs: ``a`` thresholded cosine GRF (12 / 3), ``u`` solves ``-div(a grad u) = f``, ``u = 0`` on the
    boundary; node grid ``i / (N - 1)``. Returns ``{"a", "u"}`` each ``(num_samples, N, N)``."""
    p = _resolve("darcy", DARCY_DEFAULTS, params)
    _check_size(num_samples, resolution, 3)
    field_ = sample_cosine_grf(num_samples, resolution, alpha=p["alpha"], tau=p["tau"], generator=generator,
                               dtype=torch.float64)
    a = threshold_coefficient(field_, p["a_high"], p["a_low"])
    u = solve_darcy(a, p["f"])
    return {"a": a[:, 0].to(device, dtype), "u": u[:, 0].to(device, dtype)}


SOURCE_DEFAULTS = {"alpha": 2.0, "tau": 3.0, "sigma": None}


def _source(num_samples: int, resolution: int, generator: torch.Generator | None, p: dict) -> Tensor:
    return sample_cosine_grf(num_samples, resolution, alpha=p["alpha"], tau=p["tau"], sigma=p["sigma"],
                             generator=generator, dtype=torch.float64)


def generate_poisson(
    num_samples: int, resolution: int, *, generator: torch.Generator, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32, **params: Any,
) -> dict[str, Tensor]:
    """Poisson pairs ``Lap u = a``, ``u = 0`` on the boundary; ``a`` a cosine GRF on the node grid
    ``i / (N - 1)``. Returns ``{"a", "u"}`` each ``(num_samples, N, N)``."""
    p = _resolve("poisson", SOURCE_DEFAULTS, params)
    _check_size(num_samples, resolution, 3)
    a = _source(num_samples, resolution, generator, p)
    u = solve_poisson(a)
    return {"a": a[:, 0].to(device, dtype), "u": u[:, 0].to(device, dtype)}


HELMHOLTZ_DEFAULTS = {**SOURCE_DEFAULTS, "k": 1.0}


def generate_helmholtz(
    num_samples: int, resolution: int, *, generator: torch.Generator, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32, **params: Any,
) -> dict[str, Tensor]:
    """Helmholtz pairs ``Lap u + k^2 u = a``, ``u = 0`` on the boundary; ``a`` a cosine GRF on the node grid.
    Returns ``{"a", "u"}`` each ``(num_samples, N, N)``."""
    p = _resolve("helmholtz", HELMHOLTZ_DEFAULTS, params)
    _check_size(num_samples, resolution, 3)
    a = _source(num_samples, resolution, generator, p)
    u = solve_helmholtz(a, p["k"])
    return {"a": a[:, 0].to(device, dtype), "u": u[:, 0].to(device, dtype)}


NS_COMMON = {"nu": 1e-3, "forcing": "fno", "drag": 0.0, "alpha": 2.5, "tau": 7.0, "sigma": FNO_NS_SIGMA,
             "cfl": 0.5, "max_dt": 1e-2, "precision": "double"}
NS_PAIR_DEFAULTS = {**NS_COMMON, "t_final": 1.0}
NS_TRAJ_DEFAULTS = {**NS_COMMON, "times": [0.5 * i for i in range(11)]}


def _ns_solve(num_samples: int, resolution: int, generator: torch.Generator | None, device, p: dict,
              times: list[float]) -> Tensor:
    _check_size(num_samples, resolution, 4)
    work = _work_dtype(p["precision"])
    w0 = sample_periodic_grf(num_samples, resolution, 2, alpha=p["alpha"], tau=p["tau"], sigma=p["sigma"],
                             generator=generator, dtype=torch.float64).to(device, work)
    return solve_navier_stokes(w0, times, nu=p["nu"], forcing=p["forcing"], drag=p["drag"], cfl=p["cfl"],
                               max_dt=p["max_dt"])


def generate_navier_stokes(
    num_samples: int, resolution: int, *, generator: torch.Generator, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32, **params: Any,
) -> dict[str, Tensor]:
    """Vorticity pairs ``w0 -> w(t_final)`` (periodic grid ``i / N``, FNO forcing and GRF by default).
    Returns ``{"w0", "wT"}`` each ``(num_samples, N, N)``."""
    p = _resolve("navier_stokes", NS_PAIR_DEFAULTS, params)
    w = _ns_solve(num_samples, resolution, generator, device, p, [0.0, float(p["t_final"])])
    return {"w0": w[:, 0, 0].to(device, dtype), "wT": w[:, 0, -1].to(device, dtype)}


def generate_navier_stokes_trajectory(
    num_samples: int, resolution: int, *, generator: torch.Generator, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32, **params: Any,
) -> dict[str, Tensor]:
    """Vorticity trajectories at ``times``. Returns ``{"u": (num_samples, T, N, N), "t": (T,)}``."""
    p = _resolve("navier_stokes_trajectory", NS_TRAJ_DEFAULTS, params)
    w = _ns_solve(num_samples, resolution, generator, device, p, p["times"])
    return {"u": w[:, 0].to(device, dtype), "t": torch.tensor(p["times"], dtype=dtype, device=device)}


BURGERS_DEFAULTS = {"nu": 1e-2, "times": [0.1 * i for i in range(11)], "alpha": 2.5, "tau": 7.0, "sigma": 49.0,
                    "cfl": 1.0, "max_dt": 1e-2, "precision": "double"}


def generate_burgers(
    num_samples: int, resolution: int, *, generator: torch.Generator, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32, **params: Any,
) -> dict[str, Tensor]:
    """Burgers trajectories from periodic GRF initial data (grid ``i / N``).
    Returns ``{"u": (num_samples, T, N), "t": (T,)}``."""
    p = _resolve("burgers", BURGERS_DEFAULTS, params)
    _check_size(num_samples, resolution, 4)
    u0 = sample_periodic_grf(num_samples, resolution, 1, alpha=p["alpha"], tau=p["tau"], sigma=p["sigma"],
                             generator=generator, dtype=torch.float64).to(device, _work_dtype(p["precision"]))
    u = solve_burgers(u0, p["times"], nu=p["nu"], cfl=p["cfl"], max_dt=p["max_dt"])
    return {"u": u[:, 0].to(device, dtype), "t": torch.tensor(p["times"], dtype=dtype, device=device)}


PROBLEMS: dict[str, Problem] = {
    p.name: p
    for p in (
        Problem("darcy", "pair", ("a", "u"), DARCY_DEFAULTS, generate_darcy,
                "-div(a grad u) = f on [0,1]^2, u=0 on the boundary; a in {3, 12} from a thresholded GRF.", grid="node"),
        Problem("poisson", "pair", ("a", "u"), SOURCE_DEFAULTS, generate_poisson,
                "Lap u = a on [0,1]^2, u=0 on the boundary; a a cosine-basis GRF.", grid="node"),
        Problem("helmholtz", "pair", ("a", "u"), HELMHOLTZ_DEFAULTS, generate_helmholtz,
                "Lap u + k^2 u = a on [0,1]^2, u=0 on the boundary; a a cosine-basis GRF.", grid="node"),
        Problem("navier_stokes", "pair", ("w0", "wT"), NS_PAIR_DEFAULTS, generate_navier_stokes,
                "2-D vorticity NS on the periodic unit square, w(0) -> w(t_final), FNO forcing, nu=1e-3."),
        Problem("navier_stokes_trajectory", "trajectory", ("u",), NS_TRAJ_DEFAULTS, generate_navier_stokes_trajectory,
                "2-D vorticity NS trajectories at the given times (also returns 't')."),
        Problem("burgers", "trajectory", ("u",), BURGERS_DEFAULTS, generate_burgers,
                "1-D viscous Burgers on [0,1) from periodic GRF data (also returns 't')."),
    )
}


def get_problem(name: str) -> Problem:
    """Return the registered problem ``name``; ``ValueError`` listing the valid names otherwise."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown PDE problem {name!r}; valid: {', '.join(sorted(PROBLEMS))}")
    return PROBLEMS[name]
