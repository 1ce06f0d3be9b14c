"""Sampling: sigma schedules and ODE/SDE solvers for EDM-style diffusion in function space.

Conventions (k-diffusion / EDM):
- A *denoiser* is a callable ``denoiser(x, sigma) -> denoised`` with x (B, C, *S) and sigma (B,) (or anything
  broadcastable to x); ``denoised`` estimates E[x_0 | x_sigma].
- A schedule ``sigmas`` is a decreasing 1-D tensor that ends at 0.
- Every solver has the signature ``sample_<name>(denoiser, x, sigmas, *, noise=None, callback=None, **opts)``
  where ``noise(like) -> Tensor`` draws function-space noise shaped like ``like`` (needed by stochastic steps).
- With GRF noise x_sigma = x_0 + sigma·ε, ε ~ N(0, C), the probability-flow ODE keeps the EDM form
  dx/dsigma = (x - D(x; sigma)) / sigma (Karras et al. 2022, eq. 3 with s(t)=1, σ(t)=t), because Tweedie's
  formula reads D = x + sigma² C ∇ log p_sigma(x); so the same solvers serve white and coloured noise.
- Solvers carry no ``torch.no_grad()``: guidance wraps the denoiser and needs gradients. Callers decide
  (``sample`` below runs under ``no_grad`` by default; a guidance wrapper re-enables grad inside itself).
- ``callback(info)`` is called after every step with ``info = {"i", "x", "sigma", "sigma_next", "denoised"}``;
  if it returns a tensor, that tensor replaces ``x`` (a step hook, e.g. for projection-type guidance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Optional, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from funcdiff.noise import GaussianRandomField, make_generators
from funcdiff.schedules import RHO, SIGMA_MAX, SIGMA_MIN, init_levels, rolling_levels, sigma_from_level
from funcdiff.utils import to_device


class Denoiser(Protocol):
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor: ...


NoiseFn = Callable[[torch.Tensor], torch.Tensor]
Callback = Callable[[dict], Optional[torch.Tensor]]


def sigmas_karras(
    n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO, device=None
) -> torch.Tensor:
    """Karras et al. (2022) schedule, eq. 5: n noise levels from sigma_max to sigma_min, then a final 0.

    Shapes: returns (n + 1,), float64 on ``device`` (solvers cast to the state's dtype per step).
    """
    if n < 1:
        raise ValueError(f"need at least one step, got n={n}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64, device=device)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (max_inv + ramp * (min_inv - max_inv)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def sigmas_rolling(window: int, steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                   rho: float = RHO, init: bool = False) -> torch.Tensor:
    """Per-frame schedule of one rolling step: global t from 1 to 0 in ``steps`` solver steps, so that frame 0
    ends clean (``init=False``); or the initial phase from an all-noise window to the rolling profile (``init``).

    Shapes: returns (steps + 1, W) float64; row i holds the W frames' sigmas after i steps.
    """
    if steps < 1 or window < 1:
        raise ValueError(f"need steps >= 1 and window >= 1, got steps={steps}, window={window}")
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    levels = init_levels(window, t) if init else rolling_levels(window, t)
    return sigma_from_level(levels, sigma_min, sigma_max, rho)


def _check_schedule(sigmas: torch.Tensor) -> None:
    """A scalar schedule (n+1,) must decrease strictly and end at 0; a per-element schedule (n+1, ...) must not
    increase anywhere (a frame may hold its level for a step, e.g. a window's last frame at sigma_max)."""
    if sigmas.ndim < 1 or len(sigmas) < 2:
        raise ValueError(f"sigmas must be a schedule of length >= 2, got shape {tuple(sigmas.shape)}")
    if sigmas.ndim > 1:
        if not bool((sigmas[1:] <= sigmas[:-1]).all()) or not bool((sigmas >= 0).all()):
            raise ValueError("a per-element sigma schedule must be non-negative and non-increasing in every element")
        return
    if not bool((sigmas[1:] < sigmas[:-1]).all()) or float(sigmas[-1]) != 0.0:
        raise ValueError("sigmas must be strictly decreasing and end at 0")


def _denoise(denoiser: Denoiser, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    if isinstance(sigma, torch.Tensor):
        return denoiser(x, sigma)
    return denoiser(x, torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device))


def _slope(x: torch.Tensor, denoised: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """dx/dsigma = (x - D) / sigma of the probability-flow ODE; per-element levels at 0 are frozen (slope 0)."""
    if not isinstance(sigma, torch.Tensor):
        return (x - denoised) / sigma
    return torch.where(sigma > 0, (x - denoised) / sigma.clamp_min(torch.finfo(x.dtype).tiny), 0.0)


class _ElementLevels:
    """A per-element schedule (n+1, ...) as the loop uses it: every decision (validity, Heun's second call, the
    label floor) taken on a host copy, and the levels and labels as rows on the state's device, made once per
    schedule, device and dtype (:func:`_element_levels`). A rollout reuses one schedule for every emitted frame, so
    its steps neither copy from the host nor wait for the device: on a GPU each copy of a pageable host tensor and
    each ``bool(tensor)`` stalls the host until the device has caught up."""

    def __init__(self, host: torch.Tensor, device: torch.device, dtype: torch.dtype) -> None:
        _check_schedule(host)
        floor = float(host[host > 0].min())
        labels = torch.where(host > 0, host, torch.full_like(host, floor))
        rows = torch.stack([host, labels]).to(device=device, dtype=dtype)
        self.levels, self.labels = list(rows[0]), list(rows[1])
        self.heun = [bool((row > 0).any()) for row in host]


_ELEMENT_LEVELS: dict[tuple, _ElementLevels] = {}
_ELEMENT_LEVELS_KEPT = 32


def _element_levels(sigmas: torch.Tensor, x: torch.Tensor) -> _ElementLevels:
    """The :class:`_ElementLevels` of ``sigmas`` for ``x``'s device and dtype, cached by the schedule's values.
    Pass the schedule on the host: a device schedule is first copied back (one wait for the device)."""
    host = sigmas.detach().to("cpu", torch.float64).contiguous()
    key = (tuple(host.shape), host.numpy().tobytes(), x.device, x.dtype)
    levels = _ELEMENT_LEVELS.get(key)
    if levels is None:
        if len(_ELEMENT_LEVELS) >= _ELEMENT_LEVELS_KEPT:
            _ELEMENT_LEVELS.pop(next(iter(_ELEMENT_LEVELS)))  # the oldest
        levels = _ELEMENT_LEVELS[key] = _ElementLevels(host, x.device, x.dtype)
    return levels


def _churn_gamma(sigma: float, n_steps: int, s_churn: float, s_tmin: float, s_tmax: float) -> float:
    """EDM Algorithm 2, line 4: the fraction by which sigma is raised before a stochastic step."""
    if s_churn <= 0 or not s_tmin <= sigma <= s_tmax:
        return 0.0
    return min(s_churn / n_steps, math.sqrt(2.0) - 1.0)


def _edm_loop(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    order: int,
    noise: Optional[NoiseFn],
    callback: Optional[Callback],
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Karras et al. (2022) Algorithm 2: Euler (order 1) or Heun (order 2) steps with optional churn.

    The last step to sigma = 0 is always an Euler step (Heun would divide by zero). ``sigmas`` is a scalar
    schedule (n+1,) or a per-element one (n+1, *shape) whose rows broadcast against x (rolling diffusion: one
    level per frame); per element, a step to 0 is an Euler step and elements at 0 stay fixed.
    """
    if s_churn > 0 and (noise is None or sigmas.ndim > 1):
        raise ValueError("stochastic churn needs a noise source (noise=...) and a scalar schedule")
    if sigmas.ndim > 1:
        per_element = _element_levels(sigmas, x)
        levels, labels, heun_needed = per_element.levels, per_element.labels, per_element.heun
    else:
        _check_schedule(sigmas)
        levels = labels = [float(s) for s in sigmas]  # Python floats: the historical, bit-exact path
        heun_needed = [s > 0 for s in levels]
    n_steps = len(levels) - 1
    for i in range(n_steps):
        sigma, sigma_next = levels[i], levels[i + 1]
        gamma = _churn_gamma(sigma, n_steps, s_churn, s_tmin, s_tmax)
        sigma_hat = sigma * (1 + gamma) if gamma > 0 else sigma
        if gamma > 0:
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * noise(x)
        denoised = _denoise(denoiser, x, sigma_hat)
        d = _slope(x, denoised, sigma_hat)
        x_next = x + (sigma_next - sigma_hat) * d
        if order == 2 and heun_needed[i + 1]:
            # per element, a level that reached 0 is told as the schedule's smallest positive level: those
            # elements take the Euler step and this output is discarded for them, but they are the input of the
            # others' evaluation, and a network never saw sigma = 0 (c_noise = ln(0)/4) in training
            denoised_next = _denoise(denoiser, x_next, labels[i + 1])
            d_next = _slope(x_next, denoised_next, sigma_next)
            heun = x + (sigma_next - sigma_hat) * 0.5 * (d + d_next)
            x_next = torch.where(sigma_next > 0, heun, x_next) if isinstance(sigma_next, torch.Tensor) else heun
        x = x_next
        if callback is not None:
            info = {"i": i, "x": x, "sigma": sigma_hat, "sigma_next": sigma_next, "denoised": denoised}
            replaced = callback(info)
            x = x if replaced is None else replaced
    return x


def sample_euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                 noise: Optional[NoiseFn] = None, callback: Optional[Callback] = None) -> torch.Tensor:
    """Euler steps of the probability-flow ODE (first order; one denoiser call per step).

    Shapes: x (B, C, *S) at noise level sigmas[0]; returns (B, C, *S) at sigma = 0.
    """
    return _edm_loop(denoiser, x, sigmas, order=1, noise=noise, callback=callback)


def sample_heun(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                noise: Optional[NoiseFn] = None, callback: Optional[Callback] = None) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 1): 2n - 1 denoiser calls for n steps."""
    return _edm_loop(denoiser, x, sigmas, order=2, noise=noise, callback=callback)


def sample_stochastic(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                      noise: Optional[NoiseFn] = None, callback: Optional[Callback] = None,
                      s_churn: float = 40.0, s_tmin: float = 0.05, s_tmax: float = 50.0,
                      s_noise: float = 1.003) -> torch.Tensor:
    """EDM stochastic sampler (Karras et al. 2022, Algorithm 2): Heun steps with churn.

    Before each step whose sigma lies in [s_tmin, s_tmax] the state is pushed up to sigma·(1 + gamma) by
    adding ``noise`` (function-space noise, so the churn respects the noise's covariance).
    """
    return _edm_loop(denoiser, x, sigmas, order=2, noise=noise, callback=callback,
                     s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)


SOLVERS: dict[str, Callable[..., torch.Tensor]] = {
    "euler": sample_euler,
    "heun": sample_heun,
    "stochastic": sample_stochastic,
}


def get_solver(name: str) -> Callable[..., torch.Tensor]:
    """Look a solver up by name; the error lists the valid names."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; valid solvers: {sorted(SOLVERS)}")
    return SOLVERS[name]


def num_denoiser_calls(solver: str, steps: int) -> int:
    """Network evaluations (NFE) that ``steps`` steps of ``solver`` cost."""
    get_solver(solver)
    return steps if solver == "euler" else 2 * steps - 1


def _progress(bar: tqdm) -> Callback:
    """A solver callback that advances ``bar`` by one step and leaves the state alone."""

    def callback(info: dict) -> None:
        bar.update(1)

    return callback


@dataclass(frozen=True)
class SamplerSettings:
    """What a :func:`sample` call computes besides the seed: ``steps`` of ``solver`` (EDM's Euler/Heun/churn,
    Karras et al. 2022 Alg. 1-2; ``solver_options`` go to it) along the Karras schedule ``sigma_min`` ..
    ``sigma_max`` with exponent ``rho`` (default the one of :mod:`funcdiff.schedules`; for a trained model pass
    the recorded one, ``SamplerSettings(**meta.schedule)``). ``bf16``: run the denoiser calls under bfloat16
    autocast (CPU or CUDA; the state, the solver's arithmetic and the spectral transforms stay float32; the
    error against a float32 sample of the same seed is measured in ``benchmarks/denoiser_speed.py``)."""

    steps: int = 32
    solver: str = "heun"
    sigma_min: float = SIGMA_MIN
    sigma_max: float = SIGMA_MAX
    rho: float = RHO
    solver_options: Optional[dict] = None
    bf16: bool = False


def bf16_autocast(device: torch.device | str, enabled: bool = True):
    """A bfloat16 autocast context on ``device`` (CPU or CUDA) when ``enabled``, else a no-op context."""
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=enabled and device_type in ("cpu", "cuda"))


def sample(denoiser: Denoiser, shape: Sequence[int], noise: GaussianRandomField,
           settings: Optional[SamplerSettings] = None, *, seed: int = 0, batch_size: Optional[int] = None,
           device=None, dtype: torch.dtype = torch.float32, progress: bool = False, grad: bool = False,
           cuda_graphs: bool = False, **keywords) -> torch.Tensor:
    """Draw samples at any resolution: Karras schedule, initial and churn noise from ``noise``.

    ``settings`` (:class:`SamplerSettings`): steps, solver and schedule; its fields may also be given as keywords
    (``steps=16, sigma_max=20``), which update it (an unknown keyword is a TypeError). Each sample i gets its own
    generator seeded from (``seed``, i), so results do not depend on ``batch_size`` (the chunk size bounding
    memory). Runs under ``torch.no_grad()`` unless ``grad=True``; guidance wrappers enable gradients for their own
    denoiser call either way. ``cuda_graphs`` (a CUDA ``device``, ``grad`` off): the denoiser calls are replayed from
    CUDA graphs (:class:`~funcdiff.models.graphs.GraphedDenoiser`), the same samples with far less host overhead per
    call at small and medium grids (``benchmarks/denoiser_speed.py``'s graphed rows).

    Shapes: ``shape`` = (B, C, *S); returns (B, C, *S) on ``device``.
    """
    s = replace(settings or SamplerSettings(), **keywords)
    if cuda_graphs:
        if torch.device(device or "cpu").type != "cuda" or grad:
            raise ValueError(f"cuda_graphs needs a CUDA device and grad=False, got device {device!r}, grad={grad}")
        from funcdiff.models.graphs import GraphedDenoiser

        denoiser = GraphedDenoiser(denoiser)
    steps, solver, sigma_max = s.steps, s.solver, s.sigma_max
    run = get_solver(solver)
    shape = tuple(int(n) for n in shape)
    batch_size = batch_size or shape[0]
    sigmas = sigmas_karras(steps, s.sigma_min, sigma_max, s.rho)
    chunks = []
    starts = range(0, shape[0], batch_size)
    bar = tqdm(total=len(starts) * steps, desc="sampling", unit="step", disable=not progress)
    for start in starts:
        n = min(batch_size, shape[0] - start)
        gens = make_generators(seed, range(start, start + n))
        draw = lambda like, g=gens: to_device(noise.sample(like.shape, generator=g, dtype=like.dtype), like.device)
        x = sigma_max * to_device(noise.sample((n, *shape[1:]), generator=gens, dtype=dtype), device)
        with torch.set_grad_enabled(grad), bf16_autocast(x.device, s.bf16):
            x = run(denoiser, x, sigmas, noise=draw, callback=_progress(bar), **(s.solver_options or {}))
        chunks.append(x.detach())
    bar.close()
    return torch.cat(chunks)
