"""Moment-matching posterior sampling (MMPS; Rozet et al. 2024, "Learning Diffusion Priors from Observations by
Expectation Maximization", eqs. 12–14): guidance with the Tweedie covariance instead of a model of it.

For x_σ = x_0 + σ ε, ε ~ N(0, C), the second-order Tweedie formula gives (with J = ∂D/∂x_σ)

    Cov[x_0 | x_σ] = σ² J C   (= σ² C Jᵀ: a covariance is symmetric),                                     (1)

and, for y = A x_0 + η, η ~ N(0, Σ_y), the Gaussian moment-matching likelihood

    p(y | x_σ) ≈ N(y; A D(x_σ), K),     K = Σ_y + A Cov[x_0 | x_σ] Aᵀ = Σ_y + σ² A J C Aᵀ.                 (2)

With K held fixed, σ² C ∇_x log p(y | x_σ) = σ² C Jᵀ Aᵀ K⁻¹ (y - A D) = Cov[x_0|x_σ] Aᵀ K⁻¹ r, so the guided
denoiser

    D̃(x_σ) = D(x_σ) + ζ σ² C Jᵀ Aᵀ w,    K w = r = y - A D(x_σ),                                          (3)

is the Kalman update of the denoised estimate with the *exact* conditional covariance: for a linear-Gaussian
problem and the exact denoiser it is E[x_0 | x_σ, y] at every σ, whatever the prior's covariance (the
covariance model of :mod:`funcdiff.guidance.likelihood` is exact only for a prior ∝ C). Every product with J is
one vector–Jacobian product through the denoiser call already made (the graph is kept): Jᵀ Aᵀ v. The system
K w = r has the size of the number of sensors and is solved by preconditioned conjugate gradients (PCG)
started from the DPS answer w₀ = K_model⁻¹ r, K_model the σ-aware model covariance of
:class:`~funcdiff.guidance.ObservationGuidance` (exact when the prior is ∝ C); so ``cg_iters = 0`` is DPS with
that likelihood, and each iteration costs one VJP. The product Jᵀ Aᵀ w of (3) is accumulated along the CG
iterations from the VJPs already taken, so a step costs one denoiser call and ``cg_iters + 1`` VJPs.

With a learned denoiser J need not be symmetric and K need not be positive definite; PCG stops for a sample
whose search direction has non-positive curvature (keeping its last iterate). A learned J can also make
A J C Aᵀ nearly singular in spurious directions, so K⁻¹r — and the correction of the unobserved channels —
explodes; a trust region in the metric of the model covariance bounds it (``trust_region``).

**A numerical solver in the loop** (y = A S(x_0) + η, ``mmps-physics``): A is replaced by the tangent-linear
model G' = A ∂S at the current estimate D(x_σ) (the extended Kalman filter's linearisation), so
K = Σ_y + σ² G' J C G'ᵀ; the VJP Jᵀ G'ᵀ v runs through the solver's adjoint and G'·z is a central difference
(two solves). For a linear PDE (Poisson, Helmholtz: S linear in the source) this is exact, and with the exact
denoiser of a Gaussian input prior the update is again E[x_0 | x_σ, y] (``tests/test_mmps.py``). The
preconditioner is the residual-normalised plug-in covariance (‖r‖²/n + s²) I: a solver has no closed-form
covariance model.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from funcdiff.guidance.covariance import ModelCovariance
from funcdiff.guidance.likelihood import in_chunks, sigma_per_sample
from funcdiff.guidance.linalg import conjugate_gradient
from funcdiff.guidance.operators import SparseOperator
from funcdiff.noise import GaussianRandomField
from funcdiff.sampling import Denoiser
from funcdiff.utils import DeviceCount, expand_sigma, repeated_vjps


class MomentMatchingDenoiser:
    """A denoiser ``(x, sigma) -> denoised`` corrected by MMPS, eq. (3) of the module docstring.

    Args:
        denoiser: the unconditional denoiser D(x, sigma) (differentiable).
        operator: the observation operator: :class:`SparseOperator` (linear), or
            :class:`~funcdiff.guidance.operators.SolverOperator` (a solver in the loop, linearised at D(x_σ) by
            its tangent model: the extended-Kalman form of eq. (3), exact for a linear solver).
        noise: the diffusion noise N(0, C).
        strength: ζ (1 = Bayesian).
        cg_iters: preconditioned CG iterations on the sensor-space system K w = r (0 = the DPS likelihood).
        chunk_size: samples per call (bounds the graph's memory); None = whole batch.
        tol: relative residual ‖K w - r‖/‖r‖ below which a sample's CG iterate stops changing (masked: CG runs
            exactly ``cg_iters`` iterations, :func:`funcdiff.guidance.linalg.conjugate_gradient`, no host sync).
        trust_region: κ of the bound (tδ)ᵀP_m⁻¹(tδ) ≤ κ²ζ² rᵀK_m⁻¹r on the correction (see ``_trust_scale``);
            2 by default (never binding for the exact denoiser in ``tests/test_mmps.py``); None = off.
        sigma_data: data std of the model state (float or per channel) for the trust region's covariance model;
            default: the operator's (1.0 for a solver operator).

    Counts ``vjps`` (vector–Jacobian products through the denoiser) and ``calls`` (denoiser evaluations).
    Shapes: x (B, C, *S), sigma (B,) or scalar -> (B, C, *S), detached.
    """

    def __init__(self, denoiser: Denoiser, operator: SparseOperator, noise: GaussianRandomField, *,
                 strength: float = 1.0, cg_iters: int = 3, chunk_size: Optional[int] = None,
                 tol: float = 1e-6, trust_region: Optional[float] = 2.0,
                 sigma_data: Optional[float | Sequence[float]] = None) -> None:
        if not strength >= 0 or cg_iters < 0 or (chunk_size is not None and chunk_size < 1):
            raise ValueError(f"need strength >= 0, cg_iters >= 0, chunk_size >= 1; got {strength}, {cg_iters}, "
                             f"{chunk_size}")
        self.denoiser, self.operator, self.noise = denoiser, operator, noise
        self.strength, self.cg_iters, self.chunk_size, self.tol = float(strength), int(cg_iters), chunk_size, tol
        if trust_region is not None and not trust_region > 0:
            raise ValueError(f"trust_region must be > 0 or None, got {trust_region}")
        self.trust_region = trust_region
        self.sigma_data = operator.sigma_data if sigma_data is None else sigma_data
        self.covariance = ModelCovariance(noise, self.sigma_data)
        self._vjps, self._calls = DeviceCount(), DeviceCount()

    @property
    def vjps(self) -> int:
        """VJPs through the denoiser so far (each for a whole chunk of the batch)."""
        return int(self._vjps)

    @property
    def calls(self) -> int:
        """Denoiser evaluations so far, per sample."""
        return int(self._calls)

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        return in_chunks(x, sigma, self.chunk_size,
                         lambda xs, ss, rows: self._guided(xs, ss, self.operator.for_batch(rows)))

    def _guided(self, x: Tensor, sigma: Tensor, op: SparseOperator) -> Tensor:
        self._calls.add(x.shape[0], x.device)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            with repeated_vjps(self.cg_iters > 0 and self.strength > 0):  # cg_iters + 1 VJPs through this graph
                denoised = self.denoiser(x_in, sigma)
            pred = op.predict(denoised)
            if self.strength == 0:
                return denoised.detach()
            sig = sigma_per_sample(sigma, x).double()  # (B,)
            scale = expand_sigma(sigma, x_in).double() ** 2  # σ² broadcastable to x

            def vjp(v: Tensor) -> Tensor:
                """C Jᵀ Aᵀ v (model dtype -> float64). Shapes: (B, n) -> (B, C, *S)."""
                self._vjps.add(1, x_in.device)
                g, = torch.autograd.grad(pred, x_in, v.to(pred.dtype), retain_graph=True)
                return self.noise.apply_cov_power(g.double(), 1.0)

            values, noise_var = op.constants_on(pred.device)
            r = values - pred.detach().double()  # y - G(D): the prediction above, not a new solve
            precond = op.preconditioner(r, sig, denoised.detach())
            w, cjtw = self._pcg(op.tangent(denoised), vjp, precond, r, noise_var, scale, denoised)
        delta = self.strength * scale * cjtw
        if self.trust_region is not None:
            delta = delta * self._trust_scale(r, precond, delta, sig)
        return (denoised.double() + delta).to(x.dtype).detach()

    def _trust_scale(self, r: Tensor, precond, delta: Tensor, sig: Tensor) -> Tensor:
        """t ≤ 1 per sample with (tδ)ᵀ P_m⁻¹ (tδ) ≤ κ² ζ² rᵀ K_m⁻¹ r, P_m = r²(σ) C / a² and K_m the covariance
        model of :class:`ObservationGuidance` (for the exact Kalman update δᵀP⁻¹δ ≤ rᵀK⁻¹r with the true P, K).

        A learned Jacobian with spurious near-null directions of A J C Aᵀ makes K⁻¹r, and with it the
        correction of the *unobserved* channels, blow up (measured on a small Darcy model: the inverse's
        coefficient error 84 at 6 steps without this bound). Shapes: delta (B, C, *S) -> (B, 1, ..., 1)."""
        chi2 = (r * precond(r)).sum(dim=1)  # rᵀ K_m⁻¹ r
        norm = (delta * self.noise.apply_cov_power(delta, -1.0)).flatten(2).sum(2)  # δ_cᵀ C⁻¹ δ_c
        bound = (self.trust_region * self.strength) ** 2 * chi2.clamp(min=0)
        return self.covariance.trust_scale(norm, sig, bound, delta.ndim)

    def _pcg(self, tangent, vjp, precond, r: Tensor, noise_var: Tensor, scale: Tensor, like: Tensor
             ) -> tuple[Tensor, Tensor]:
        """Solve K w = r by PCG from w₀ = ``precond``(r) (K_model⁻¹ r); ``tangent`` z ↦ A·z (the linearised
        forward model). Returns w (B, n) and C Jᵀ Aᵀ w (B, C, *S) (float64)."""
        s2 = noise_var.to(r.device)

        def apply_k(v: Tensor) -> tuple[Tensor, Tensor]:
            g = vjp(v)  # C Jᵀ Aᵀ v
            return s2 * v + tangent((scale * g).to(like.dtype)).double(), g

        return conjugate_gradient(apply_k, r, precond(r), self.cg_iters, precond=precond, tol=self.tol)

