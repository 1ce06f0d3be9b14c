"""Gradient guidance as a wrapper around the denoiser (DPS, Chung et al. 2023; FunDPS, Yao et al. 2025).

**The correction.** For x_σ = x_0 + σ ε with ε ~ N(0, C), Tweedie's formula reads
E[x_0 | x_σ] = x_σ + σ² C ∇ log p_σ(x_σ), and conditioning on observations y adds the likelihood score:

    E[x_0 | x_σ, y] = D(x_σ; σ) + σ² C ∇_x log p(y | x_σ).                                        (1)

:class:`GuidedDenoiser` returns D̃ = D + δ with δ = -ζ σ² C ∇_x L, where L = Σ terms(D(x), σ) is a negative
log-likelihood through the *current* denoiser call only (DPS: p(y | x_σ) ≈ p(y | x_0 = D(x_σ))) and ζ is the
user-facing ``strength`` (ζ = 1: Bayesian, the exact posterior for a linear-Gaussian problem when the
likelihood model is exact). Because D̃ is again a denoiser, every solver in :mod:`funcdiff.sampling` uses it
unchanged.

**Relation to DPS's step.** One Euler step of the probability-flow ODE
x_{i+1} = x_i + (σ_{i+1} - σ_i)(x_i - D̃)/σ_i with D̃ = D + δ equals the unguided step plus (1 - σ_{i+1}/σ_i)·δ.
DPS (Alg. 1) adds -ζ_i ∇_{x_i}‖y - A D(x_i)‖, so DPS is this wrapper with δ = -ζ_i/h_i · ∇‖y - A D‖,
h_i = 1 - σ_{i+1}/σ_i: a hand-set ζ_i silently depends on the number of steps (through h_i), on σ, on the
units of y and on the number of sensors, which is why reference code tunes weights from 1 to 5·10⁴ per task.
Here (1) fixes all of these: the σ² factor and the step fraction come from the ODE, and the likelihood's
covariance K(σ) (see :mod:`funcdiff.guidance.likelihood`) normalises units and sensor count, so ζ = 1 is the
default for every task. Tune ζ upward (2–10) only if a learned
denoiser under-fits the observations, downward (0.3–1) if steps become unstable (few steps, large ζ).

**Function-space preconditioning (default).** With GRF noise the score in (1) is multiplied by C (FunDPS):
the gradient of a point-observation loss is a sum of grid deltas whose size grows with resolution, while
C ∇ is a smooth bump of fixed width — the correction lives in the same function space as the noise and is
the same function at every resolution. ``precondition=False`` uses δ = -ζ σ² ∇L (pixel-space DPS, the right
choice only for white noise, where C = a² I and both agree up to a²; with GRF noise it leaves rough samples,
see ``benchmarks/guidance.py``).

**Damped terms (PDE residuals).** A term with ``damped = True`` gets its own correction, shortened to the Kalman
step length along its direction: t = q / (q + δᵀHδ), q = -∇_D L·δ = ζ ∇_D Lᵀ P ∇_D L with P = σ² J C
= Cov[x_0 | x_σ] (second-order Tweedie) and H the term's Gauss–Newton Hessian (``term.curvature``). This is
the exact conditional mean for a scalar linear-Gaussian constraint and keeps a large weight from making the
ODE stiff (plain δ grows like σ²·weight and diverges at large σ).

**Trust region (observation terms).** For the linear-Gaussian problem the exact correction δ = P Aᵀ K⁻¹ r
(P = Cov[x_0 | x_σ]) obeys δᵀ P⁻¹ δ = rᵀK⁻¹ A P Aᵀ K⁻¹ r ≤ rᵀ K⁻¹ r = 2L, because A P Aᵀ ≤ K: conditioning
cannot move the estimate further, in the prior's own metric, than the observations' χ² asks for. A learned
denoiser's Jacobian at large σ and few steps can break this by orders of magnitude — typically in the
*unobserved* channels (observing a, the correction to u explodes), which is why 5-step guided sampling
diverged while the observed channel fitted. ``trust_region = κ`` rescales δ of the undamped terms to
δᵀP⁻¹δ ≤ κ² ζ² · 2L with the model covariance P = r_c²(σ) C / a² per channel (the one of
:mod:`funcdiff.guidance.likelihood`); δᵀC⁻¹δ = ζσ²·(-∇_x L)ᵀδ needs no inverse of C. Never active for the
exact denoiser (the oracle tests are unchanged).

Off by default (``None``): the model P treats channels as independent, but a joint (coefficient, solution)
prior correlates them strongly, so a legitimate cross-channel correction — the whole point of an inverse
problem, observing u to move a — can have a small norm under the true P and a large one under the model's.
Measured on Darcy (``benchmarks/few_step_guidance.py``): κ = 1 rescues 5-step sampling (forward rel. L2
0.52 → 0.30) but costs ~3 % on the inverse at ≥ 10 steps with a small model and 15 % with a 4000-step one.
Use it for few-step budgets (:func:`funcdiff.tasks.solve` does so by itself for ≤ 7 steps).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch
from torch import Tensor

from funcdiff.guidance.covariance import ModelCovariance
from funcdiff.guidance.likelihood import Decode, ObservationGuidance, in_chunks, sigma_per_sample
from funcdiff.guidance.terms import GuidanceTerm, as_term
from funcdiff.guidance.observations import SparseObservation
from funcdiff.noise import GaussianRandomField
from funcdiff.sampling import Denoiser, sample
from funcdiff.schedules import RHO, SIGMA_MAX, SIGMA_MIN
from funcdiff.utils import expand_sigma, repeated_vjps


class GuidedDenoiser:
    """A denoiser ``(x, sigma) -> denoised`` corrected by gradient guidance, δ = -ζ σ² C ∇_x Σ terms(D(x), σ).

    Args:
        denoiser: the unconditional denoiser D(x, sigma).
        terms: guidance terms ``term(denoised, sigma) -> (B,)`` negative log-likelihoods (summed), e.g.
            :class:`ObservationGuidance`, :class:`PDEResidualGuidance`: instances of
            :class:`~funcdiff.guidance.terms.GuidanceTerm` (``for_batch`` gives a batch chunk its own rows) or plain
            callables.
        noise: the diffusion noise (its covariance C preconditions the gradient); needed if ``precondition``.
        strength: ζ, multiplies every term (1 = Bayesian; see the module docstring for tuning).
        precondition: apply C to the gradient (function-space guidance, default) or not (pixel space).
        chunk_size: samples per gradient computation (bounds activation memory); ``None`` = whole batch.
        trust_region: κ of the trust region of the undamped terms (module docstring); ``None`` = off (default),
            1 = the bound that is exact for a linear-Gaussian problem (for few-step sampling). Needs
            ``precondition``.
        sigma_data: data std of the model state (float or one per channel) for the trust region's P.

    The output is detached; gradients flow only through this call's denoiser evaluation, never into the
    solver's history, and grad is enabled internally even when the caller runs under ``torch.no_grad()``.
    Shapes: x (B, C, *S), sigma (B,) or broadcastable -> (B, C, *S).
    """

    def __init__(self, denoiser: Denoiser, terms: Sequence[GuidanceTerm], noise: Optional[GaussianRandomField] = None, *,
                 strength: float = 1.0, precondition: bool = True, chunk_size: Optional[int] = None,
                 trust_region: Optional[float] = None, sigma_data: float | Sequence[float] = 1.0) -> None:
        if precondition and noise is None:
            raise ValueError("precondition=True needs the diffusion noise: pass noise=...")
        if not strength >= 0 or (chunk_size is not None and chunk_size < 1):
            raise ValueError(f"need strength >= 0 and chunk_size >= 1, got {strength}, {chunk_size}")
        if trust_region is not None and not trust_region > 0:
            raise ValueError(f"trust_region must be > 0 or None, got {trust_region}")
        self.denoiser, self.terms, self.noise = denoiser, [as_term(t) for t in terms], noise
        self.strength, self.precondition, self.chunk_size = float(strength), precondition, chunk_size
        self.trust_region = trust_region if precondition else None
        self.sigma_data = torch.as_tensor(sigma_data, dtype=torch.float64).flatten()
        self.covariance = ModelCovariance(noise, self.sigma_data) if precondition else None

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        return in_chunks(x, sigma, self.chunk_size, lambda xs, ss, rows: self._guided(
            xs, ss, [term.for_batch(rows) for term in self.terms]))

    def _guided(self, x: Tensor, sigma: Tensor, terms: list) -> Tensor:
        plain = [t for t in terms if not t.damped]
        groups = ([(plain, None)] if plain else []) + [([t], t) for t in terms if t.damped]
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            with repeated_vjps(len(groups) > 1 and self.strength > 0):  # one VJP per group through this graph
                denoised = self.denoiser(x_in, sigma)
            deltas = [self._correction(x_in, denoised, sigma, group, damped, last=k == len(groups) - 1)
                      for k, (group, damped) in enumerate(groups)]
            deltas = [d for d in deltas if d is not None]
        delta = sum(deltas[1:], deltas[0]) if deltas else None
        return denoised.detach() if delta is None else (denoised + delta).detach()

    def _correction(self, x_in: Tensor, denoised: Tensor, sigma: Tensor, terms: list, damped,
                    last: bool = False) -> Optional[Tensor]:
        """δ = -ζ σ² C ∇_x L for L = Σ terms; for a damped term, shortened to the Kalman step length. The graph
        through the denoiser is kept for the next group unless this is the ``last`` (then its buffers are freed
        as the backward pass goes)."""
        per_sample = sum((term(denoised, sigma) for term in terms), denoised.new_zeros(denoised.shape[0]))
        loss = per_sample.sum()
        if not loss.requires_grad or self.strength == 0:
            return None
        wrt = (x_in,) if damped is None else (x_in, denoised)  # ∇_D L only for the Kalman step length
        grad_x, *grad_d = torch.autograd.grad(loss, wrt, retain_graph=not last)
        raw = grad_x.detach()
        if self.precondition:
            grad_x = self.noise.apply_cov_power(grad_x, 1.0)
        delta = (-self.strength * expand_sigma(sigma, x_in) ** 2 * grad_x).detach()
        if damped is None:
            if self.trust_region is None:
                return delta
            return delta * self._trust_scale(raw, delta, per_sample.detach(), sigma)
        # Kalman step length t = q / (q + δᵀHδ) along δ (module docstring, "Damped terms")
        q = (-(grad_d[0].detach() * delta).flatten(1).sum(dim=1)).clamp(min=0)
        curv = damped.curvature(denoised.detach(), delta, sigma)
        t = q / (q + curv).clamp(min=1e-30)
        return delta * t.reshape(-1, *[1] * (delta.ndim - 1))

    def _trust_scale(self, grad: Tensor, delta: Tensor, loss: Tensor, sigma: Tensor) -> Tensor:
        """Factor t ≤ 1 (B, 1, ..., 1) with (tδ)ᵀP⁻¹(tδ) ≤ κ²ζ²·2L (module docstring, "Trust region").

        Shapes: grad = ∇_x L (unpreconditioned), delta (B, C, *S); loss (B,); sigma as the denoiser's.
        """
        sig = sigma_per_sample(sigma, delta).double()
        c_inv = (self.strength * sig**2)[:, None] * (-(grad * delta).flatten(2).sum(2)).double()  # δ_cᵀC⁻¹δ_c
        bound = (self.trust_region * self.strength) ** 2 * 2 * loss.double().clamp(min=0)
        return self.covariance.trust_scale(c_inv, sig, bound, delta.ndim).to(delta.dtype)


@dataclass(frozen=True)
class GuidedSampling:
    """The settings of :func:`guided_sample` that change its result.

    Attributes:
        steps, solver, seed, solver_options: the sampler (:func:`funcdiff.sampling.sample`).
        sigma_min, sigma_max, rho: the Karras schedule; default the one default of :mod:`funcdiff.schedules` (for a
            loaded model pass the recorded one: ``GuidedSampling(**meta.schedule)`` or ``**meta.schedule``).
        guidance_strength: ζ.  scaling: the likelihood's covariance (:class:`ObservationGuidance`).
        precondition: function-space guidance (C ∇).  trust_region: κ, None = off (:class:`GuidedDenoiser`).
    """

    steps: int = 64
    solver: str = "heun"
    seed: int = 0
    guidance_strength: float = 1.0
    scaling: str = "likelihood"
    precondition: bool = True
    trust_region: Optional[float] = None
    sigma_min: float = SIGMA_MIN
    sigma_max: float = SIGMA_MAX
    rho: float = RHO
    solver_options: Optional[dict] = None


RUN_OPTIONS = ("chunk_size", "device", "dtype", "progress")  # how guided_sample runs, not what it computes


def guided_sample(denoiser: Denoiser, noise: GaussianRandomField,
                  observation: SparseObservation | Sequence[SparseObservation] | None, shape: Sequence[int],
                  settings: Optional[GuidedSampling] = None, *, pde_terms: Optional[Sequence] = None,
                  decode: Optional[Decode] = None, sigma_data: float | Sequence[float] = 1.0, **keywords) -> Tensor:
    """Posterior samples given sparse observations (and optional PDE-residual terms).

    Builds one :class:`ObservationGuidance` per observation (sensor sets may differ per channel: pass a list),
    wraps ``denoiser`` in :class:`GuidedDenoiser` and runs :func:`funcdiff.sampling.sample` (under no_grad;
    the wrapper enables grad for its own call). Observation values (B_obs, C_obs, N) must have B_obs = 1
    (shared by all samples) or B_obs = B (sample i sees observation i).

    ``settings``: :class:`GuidedSampling`; its fields may also be given as keywords (``steps=32, seed=0``), which
    update it. Other keywords: ``chunk_size`` (samples per gradient computation), ``device``, ``dtype``
    (default float32), ``progress``. ``decode`` maps model units to the observations' units; ``sigma_data`` is
    the model's data std (float or per channel).

    Shapes: ``shape`` = (B, C, *S) of the model state; returns (B, C, *S) in model units (apply the decode map
    for physical units).
    """
    run = {k: keywords.pop(k) for k in RUN_OPTIONS if k in keywords}
    s = replace(settings or GuidedSampling(), **keywords)
    guided = observation_guided(denoiser, noise, observation, shape[0], pde_terms=pde_terms, decode=decode,
                                sigma_data=sigma_data, scaling=s.scaling, strength=s.guidance_strength,
                                precondition=s.precondition, chunk_size=run.pop("chunk_size", None),
                                trust_region=s.trust_region)
    return sample(guided, shape, noise, steps=s.steps, solver=s.solver, sigma_min=s.sigma_min,
                  sigma_max=s.sigma_max, rho=s.rho, seed=s.seed, solver_options=s.solver_options, **run)


def observation_guided(denoiser: Denoiser, noise: GaussianRandomField,
                       observation: SparseObservation | Sequence[SparseObservation] | None, batch: int, *,
                       pde_terms: Optional[Sequence] = None, decode: Optional[Decode] = None,
                       sigma_data: float | Sequence[float] = 1.0, scaling: str = "likelihood", **options
                       ) -> GuidedDenoiser:
    """The :class:`GuidedDenoiser` of :func:`guided_sample`: one :class:`ObservationGuidance` per observation
    (values (B_obs, C_obs, N) with B_obs = 1 or ``batch``) plus ``pde_terms``; ``options`` go to the wrapper
    (strength, precondition, chunk_size, trust_region)."""
    observations = [] if observation is None else (
        [observation] if isinstance(observation, SparseObservation) else list(observation))
    terms = [ObservationGuidance(obs, noise, sigma_data=sigma_data, scaling=scaling, decode=decode)
             for obs in observations]
    for obs in observations:
        if obs.values.shape[0] not in (1, batch):
            raise ValueError(f"observation values hold {obs.values.shape[0]} instances for {batch} samples")
    return GuidedDenoiser(denoiser, terms + list(pde_terms or []), noise, sigma_data=sigma_data, **options)
