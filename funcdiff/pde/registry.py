"""Named data-generating problems: the contract between :mod:`funcdiff.pde` and ``funcdiff data generate``.

Every ``Problem.generate(num_samples, resolution, *, generator, device="cpu", dtype=torch.float32, **params)``
returns a dict of tensors: pair problems give one ``(num_samples, *spatial)`` array per name in ``fields``;
trajectory problems give one ``(num_samples, T, *spatial)`` array per field and the frame times ``"t"`` of shape
``(T,)``. Trajectory frames are taken after a ``spin_up`` (integrated and discarded, removing the transient of the
random initial state) at ``t = i * dt``, ``i < num_frames`` (or at an explicit list ``times`` where the problem has
one); ``"t"`` is measured from the end of the spin-up, so the first frame has ``t = times[0]`` (0 for ``dt``).
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
from funcdiff.pde.navier_stokes import make_forcing, solve_navier_stokes
from funcdiff.pde.spectral import TWO_PI

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
    solver: str = ""  # what makes the data, recorded in files ("": the problem's name)


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


# Frame times of trajectory problems (see the module docstring). ``times`` (a list) is kept by the problems that
# had it (their defaults reproduce the old frames); ``dt`` and ``num_frames`` replace it when either is set.
FRAME_DEFAULTS = {"spin_up": 0.0, "dt": None, "num_frames": None}


def frame_times(problem: str, p: dict) -> list[float]:
    """Frame times ``(T,)`` after the spin-up (first frame at 0 for uniform frames), from resolved params ``p``:
    ``i * dt`` for ``i < num_frames`` when ``dt`` or ``num_frames`` is set, else ``p["times"]``."""
    if float(p["spin_up"]) < 0:
        raise ValueError(f"{problem}: spin_up must be >= 0, got {p['spin_up']}")
    if p["dt"] is None and p["num_frames"] is None and p.get("times") is not None:
        return [float(t) for t in p["times"]]
    if p["dt"] is None or p["num_frames"] is None or float(p["dt"]) <= 0 or int(p["num_frames"]) < 1:
        raise ValueError(f"{problem}: set both dt > 0 and num_frames >= 1 (got dt={p['dt']}, "
                         f"num_frames={p['num_frames']})")
    return [i * float(p["dt"]) for i in range(int(p["num_frames"]))]


def _trajectory(field: str, frames: Tensor, times: list[float], device, dtype: torch.dtype) -> dict[str, Tensor]:
    """``{field: (B, T, *S), "t": (T,)}`` from a solver output ``frames`` of shape ``(B, 1, T, *S)``."""
    return {field: frames[:, 0].to(device, dtype), "t": torch.tensor(times, dtype=dtype, device=device)}


NS_COMMON = {"nu": 1e-3, "forcing": "fno", "drag": 0.0, "alpha": 2.5, "tau": 7.0, "sigma": FNO_NS_SIGMA,
             "cfl": 0.5, "max_dt": 1e-2, "precision": "double"}
NS_PAIR_DEFAULTS = {**NS_COMMON, "t_final": 1.0}
NS_TRAJ_DEFAULTS = {**NS_COMMON, "times": [0.5 * i for i in range(11)], **FRAME_DEFAULTS}
# Kolmogorov flow: body force amplitude * sin(8 pi y) e_x (wavenumber 4), see generate_kolmogorov.
KOLMOGOROV_DEFAULTS = {**NS_COMMON, "forcing": "kolmogorov", "amplitude": 2.0, "drag": 0.35, "max_dt": 0.05,
                       "precision": "single", "spin_up": 5.0, "dt": 0.1, "num_frames": 200}


def _ns_solve(num_samples: int, resolution: int, generator: torch.Generator | None, device, p: dict,
              times: list[float]) -> Tensor:
    """Sample the GRF initial vorticity and return ``solve_navier_stokes`` at ``times`` ``(B, 1, T, N, N)``."""
    _check_size(num_samples, resolution, 4)
    work = _work_dtype(p["precision"])
    w0 = sample_periodic_grf(num_samples, resolution, 2, alpha=p["alpha"], tau=p["tau"], sigma=p["sigma"],
                             generator=generator, dtype=torch.float64).to(device, work)
    forcing = p["forcing"]
    if "amplitude" in p:
        forcing = make_forcing(forcing, resolution, amplitude=p["amplitude"], device=device, dtype=work)
    return solve_navier_stokes(w0, times, nu=p["nu"], forcing=forcing, drag=p["drag"], cfl=p["cfl"],
                               max_dt=p["max_dt"])


def _ns_trajectory(name: str, field: str, defaults: dict, num_samples: int, resolution: int, generator, device,
                   dtype: torch.dtype, params: dict) -> dict[str, Tensor]:
    """Vorticity frames after the spin-up: ``{field: (B, T, N, N), "t": (T,)}``."""
    p = _resolve(name, defaults, params)
    times = frame_times(name, p)
    w = _ns_solve(num_samples, resolution, generator, device, p, [float(p["spin_up"]) + t for t in times])
    return _trajectory(field, w, times, device, dtype)


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
    """FNO-forced vorticity trajectories (field ``u``, vorticity in 1/time) at ``times`` (default 0, 0.5, ..., 5),
    or at ``i * dt`` for ``i < num_frames`` when those are set, after ``spin_up`` (default 0: frame 0 is the GRF).
    Returns ``{"u": (num_samples, T, N, N), "t": (T,)}``."""
    return _ns_trajectory("navier_stokes_trajectory", "u", NS_TRAJ_DEFAULTS, num_samples, resolution, generator,
                          device, dtype, params)


def generate_kolmogorov(
    num_samples: int, resolution: int, *, generator: torch.Generator, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32, **params: Any,
) -> dict[str, Tensor]:
    """Forced 2-D turbulence: Kolmogorov flow, the chaotic-flow setting of Kochkov et al. (PNAS 2021) and of
    Rolling Diffusion (Ruhe et al., ICML 2024), on the periodic unit square (grid ``i / N``).

    ``w_t + u . grad w = nu Lap w - drag w + curl(amplitude sin(8 pi y) e_x)``; GRF initial vorticity (as FNO),
    integrated for ``spin_up`` and discarded, then ``num_frames`` frames ``dt`` apart. Defaults: ``nu = 1e-3``,
    ``amplitude = 2``, ``drag = 0.35``, ``spin_up = 5``, ``dt = 0.1``, ``num_frames = 200``, single precision.
    Mapped to Kochkov's ``[0, 2 pi)^2`` units with unit forcing (lengths x 2 pi, times x ``sqrt(2 pi amplitude)``
    = 3.54) this is ``Re = sqrt(2 pi amplitude) / (4 pi^2 nu) = 90`` with drag 0.1 (Kochkov: Re = 1000, drag
    0.1, solved at 2048^2). Re = 90 is about the largest that 64^2 resolves: measured at 64^2, the energy spectrum
    falls ~5 decades from the forcing scale to the 2/3 cutoff (k = 21) and matches a 128^2 solve within ~25 %
    up to k = 18 (no pile-up beyond a x1.7 excess in the last two shells); yet the flow is chaotic: mean energy
    ~0.2 (rms speed ~0.65) is stationary after t ~ 2, and two states 1e-6 apart separate with a Lyapunov rate of
    ~1.5 per time unit, to O(1) relative difference after ~10 time units (~100 frames at the default ``dt``).

    Returns:
        ``{"w": (num_samples, T, N, N), "t": (T,)}``: vorticity (1/time) and times since the end of the spin-up.
    """
    return _ns_trajectory("kolmogorov", "w", KOLMOGOROV_DEFAULTS, num_samples, resolution, generator, device,
                          dtype, params)


BURGERS_DEFAULTS = {"nu": 1e-2, "times": [0.1 * i for i in range(11)], "alpha": 2.5, "tau": 7.0, "sigma": 49.0,
                    "cfl": 1.0, "max_dt": 1e-2, "precision": "double", **FRAME_DEFAULTS}
BURGERS_SHOCK_DEFAULTS = {**{k: v for k, v in BURGERS_DEFAULTS.items() if k != "times"}, "nu": 1e-3,
                          "dt": 0.01, "num_frames": 201}


def _burgers(name: str, defaults: dict, num_samples: int, resolution: int, generator, device, dtype: torch.dtype,
             params: dict) -> dict[str, Tensor]:
    """GRF initial data, ``spin_up``, then frames: ``{"u": (B, T, N), "t": (T,)}``."""
    p = _resolve(name, defaults, params)
    _check_size(num_samples, resolution, 4)
    times = frame_times(name, p)
    u0 = sample_periodic_grf(num_samples, resolution, 1, alpha=p["alpha"], tau=p["tau"], sigma=p["sigma"],
                             generator=generator, dtype=torch.float64).to(device, _work_dtype(p["precision"]))
    u = solve_burgers(u0, [float(p["spin_up"]) + t for t in times], nu=p["nu"], cfl=p["cfl"], max_dt=p["max_dt"])
    return _trajectory("u", u, times, device, dtype)


def generate_burgers(
    num_samples: int, resolution: int, *, generator: torch.Generator, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32, **params: Any,
) -> dict[str, Tensor]:
    """Viscous Burgers (``nu = 1e-2``) trajectories from periodic GRF initial data (grid ``i / N``), at ``times``
    (default 0, 0.1, ..., 1) or at ``i * dt``, ``i < num_frames`` when those are set, after ``spin_up``
    (default 0). Returns ``{"u": (num_samples, T, N), "t": (T,)}`` (velocity in length/time)."""
    return _burgers("burgers", BURGERS_DEFAULTS, num_samples, resolution, generator, device, dtype, params)


def generate_burgers_shock(
    num_samples: int, resolution: int, *, generator: torch.Generator, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32, **params: Any,
) -> dict[str, Tensor]:
    """Shock-forming Burgers: ``nu = 1e-3``, the GRF of ``burgers`` (max|u0| ~ 0.5, max|u0_x| ~ 5, so fronts form by
    t ~ 0.2), frames ``dt = 0.01`` apart, 201 of them (t in [0, 2]), no spin-up.

    Use ``resolution >= 1024`` (the default recipe): measured against 4096 points (ETDRK4, 2/3 rule), 1024 points
    keep the spectrum at the 2/3 cutoff 1e-11 below its peak and the peak front gradient max|u_x| ~ 230 within 1 %,
    with no Gibbs overshoot (max|u(t)| <= max|u0|); 512 points are stable but under-resolve the fronts (peak
    gradient 10 % low, cutoff spectrum only 1e-7 below the peak). Returns ``{"u": (num_samples, T, N), "t": (T,)}``.
    """
    return _burgers("burgers_shock", BURGERS_SHOCK_DEFAULTS, num_samples, resolution, generator, device, dtype,
                    params)


BURGERS_FORCED_DEFAULTS = {**BURGERS_SHOCK_DEFAULTS, "forcing_amplitude": 0.3, "forcing_modes": 3}


def sample_forcing(num_samples: int, resolution: int, amplitude: float, modes: int,
                   generator: torch.Generator | None) -> Tensor:
    """Smooth random forcings ``f(x) = A / sqrt(K) sum_{k=1..K} (a_k cos 2 pi k x + b_k sin 2 pi k x)``, a_k, b_k
    i.i.d. N(0, 1) (float64, from ``generator``): zero mean, expected rms over x equal to ``A``; a few low Fourier
    modes as the forcings of WDNO's Burgers control setting (Hu, Wang et al., ICLR 2025). Shapes: (B, 1, N)."""
    if int(modes) < 1 or 2 * int(modes) >= int(resolution):
        raise ValueError(f"forcing_modes must be in [1, resolution/2), got {modes}")
    ab = torch.randn(num_samples, 2, int(modes), generator=generator, dtype=torch.float64)
    x = torch.arange(resolution, dtype=torch.float64) / resolution
    k = torch.arange(1, int(modes) + 1, dtype=torch.float64)
    phase = TWO_PI * k[:, None] * x  # (K, N)
    f = (ab[:, 0, :, None] * torch.cos(phase) + ab[:, 1, :, None] * torch.sin(phase)).sum(1)
    return (float(amplitude) / math.sqrt(int(modes)) * f)[:, None]


def generate_burgers_shock_forced(
    num_samples: int, resolution: int, *, generator: torch.Generator, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32, **params: Any,
) -> dict[str, Tensor]:
    """Forced shock-forming Burgers ``u_t + u u_x = nu u_xx + f(x)``: the setting of ``burgers_shock`` (nu = 1e-3,
    GRF initial data, 201 frames 0.01 apart, no spin-up) with one time-independent forcing per trajectory from
    :func:`sample_forcing` (rms ``forcing_amplitude`` = 0.3 length/time^2 over ``forcing_modes`` = 3 modes; drawn
    after the initial states). Use ``resolution >= 1024`` as for ``burgers_shock``: measured on 4 samples (same u0 and f
    solved at 512/1024/4096 points, 201 frames), 1024 points keep the peak front gradient within 1.1 % of 4096's
    (240 vs 243) and max|u - u_4096| = 5e-5; 512 points: 6 % low, 6e-3.

    Returns ``{"u": (num_samples, T, N), "f": (num_samples, T, N), "t": (T,)}``: ``f`` is the forcing repeated
    over the frames (so that it is one more channel of the trajectory file, read like ``u``)."""
    p = _resolve("burgers_shock_forced", BURGERS_FORCED_DEFAULTS, params)
    _check_size(num_samples, resolution, 4)
    times = frame_times("burgers_shock_forced", p)
    work = _work_dtype(p["precision"])
    u0 = sample_periodic_grf(num_samples, resolution, 1, alpha=p["alpha"], tau=p["tau"], sigma=p["sigma"],
                             generator=generator, dtype=torch.float64)
    f = sample_forcing(num_samples, resolution, p["forcing_amplitude"], p["forcing_modes"], generator)
    u = solve_burgers(u0.to(device, work), [float(p["spin_up"]) + t for t in times], nu=p["nu"], cfl=p["cfl"],
                      max_dt=p["max_dt"], forcing=f.to(device, work))
    out = _trajectory("u", u, times, device, dtype)
    out["f"] = f.to(device, dtype).expand(-1, len(times), -1).contiguous()
    return out


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
                "2-D vorticity NS trajectories (FNO forcing) at the given times or every dt after spin_up (also 't')."),
        Problem("kolmogorov", "trajectory", ("w",), KOLMOGOROV_DEFAULTS, generate_kolmogorov,
                "2-D Kolmogorov flow (forced turbulence, Re~90, drag 0.35), vorticity w every dt after spin_up."),
        Problem("burgers", "trajectory", ("u",), BURGERS_DEFAULTS, generate_burgers,
                "1-D viscous Burgers (nu=1e-2) on [0,1) from periodic GRF data (also returns 't')."),
        Problem("burgers_shock", "trajectory", ("u",), BURGERS_SHOCK_DEFAULTS, generate_burgers_shock,
                "1-D Burgers with nu=1e-3: shocks form by t~0.2; use >= 1024 points (also returns 't')."),
        Problem("burgers_shock_forced", "trajectory", ("u", "f"), BURGERS_FORCED_DEFAULTS,
                generate_burgers_shock_forced,
                "burgers_shock plus a random time-independent forcing f(x) (3 modes, rms 0.3), stored as field f."),
    )
}


def get_problem(name: str) -> Problem:
    """Return the registered problem ``name``; ``ValueError`` listing the valid names otherwise."""
    key = str(name).strip().lower().replace("-", "_")  # one spelling shown, both accepted
    if key not in PROBLEMS:
        raise ValueError(f"unknown PDE problem {name!r}; valid: {', '.join(sorted(PROBLEMS))}")
    return PROBLEMS[key]
