"""Ensemble Kalman guidance (EnKG; Zheng et al. 2024, "Ensemble Kalman Diffusion Guidance: A Derivative-free
Method for Inverse Problems"): the MMPS correction with every derivative replaced by ensemble statistics.

The particles x_1..x_M of one sampler run (all conditioned on the same y) are each other's perturbations.
With f = G ∘ D (forward model after the denoiser; G may be a black-box numerical solver) the derivative is
replaced by its statistical linearisation on the ensemble (Zheng et al., eq. 9: Cov(x, f(x)) ≈ Cov(x) ∇fᵀ),
fitted in the metric of the diffusion noise C:

    ∇f ≈ Fᵀ (X C⁻¹ Xᵀ)⁺ X C⁻¹,     X (M, N) = x_j - x̄,   F (M, n) = f(x_j) - f̄,                          (1)

exact on span(X) when f is affine. Inserted in the MMPS update (:mod:`funcdiff.guidance.mmps`, eq. 3), the
correction of particle i needs no gradient of the denoiser or of the solver:

    δ_i = ζ σ² C ∇fᵀ K⁻¹ r_i = ζ σ² Xᵀ Γ⁺ F K⁻¹ r_i,     Γ = X C⁻¹ Xᵀ (M × M),                               (2)
    K = Σ_y + σ² ∇f C ∇Gᵀ ≈ Σ_y + σ² Fᵀ Γ⁺ H,   H = A X for a linear G = A·decode; H = F otherwise.

C⁻¹X (one FFT per particle) is the only operation on full fields besides the denoiser and G; everything else is
M × M or sensor-sized (K⁻¹ by the Woodbury identity). For a linear-Gaussian problem with the exact denoiser
(2) is the exact MMPS correction whenever the particle deviations span the state (M > N); with fewer
particles it is its C⁻¹-orthogonal projection onto the ensemble's span.

**Hybrid (default for a linear G).** Off the ensemble's span the derivative is taken from the covariance model
of :class:`~funcdiff.guidance.ObservationGuidance` (σ² J_m C = r²(σ) C / a² per channel, no network
derivative): ∇f ≈ Fᵀ Γ⁺ X C⁻¹ + A J_m (I - Π), Π = Xᵀ Γ⁺ X C⁻¹, which gives

    δ_i = ζ σ² [Xᵀ Γ⁺ (F - H_m) w_i + J_m C Aᵀ w_i],   K = K_model + σ² Hᵀ Γ⁺ (F - H_m),   H_m = A J_m X,

a low-rank correction of the DPS likelihood (Woodbury around K_model⁻¹): a single particle gives DPS's model,
a spanning ensemble the exact update; the posterior mean converges to the Kalman posterior as the ensemble
grows (``tests/test_enkg.py`` measures the rate). The physics operator (nonlinear G) uses the pure ensemble,
with K = Σ_y + σ² Fᵀ Γ⁺ F (∇G J C ∇Gᵀ approximated by ∇f C ∇fᵀ = ∇G J C Jᵀ ∇Gᵀ: J ≈ I where the likelihood
matters, at small σ) and a small ridge so noise-free sensors stay solvable.

Cost per step: one denoiser call and one evaluation of G per particle (solver calls = particles × NFE), no
backward pass. The whole ensemble must be in one call: do not chunk the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from funcdiff.guidance.covariance import ModelCovariance
from funcdiff.guidance.likelihood import sigma_per_sample
from funcdiff.noise import GaussianRandomField
from funcdiff.sampling import Denoiser


class EnsembleKalmanDenoiser:
    """A denoiser ``(x, sigma) -> denoised`` for a whole ensemble, corrected by EnKG, eq. (2) of the module.

    Args:
        denoiser: the unconditional denoiser D(x, sigma) (called without gradients).
        operator: :class:`~funcdiff.guidance.operators.SparseOperator` or
            :class:`~funcdiff.guidance.operators.SolverOperator` with values shared by the ensemble (B_obs = 1).
        noise: the diffusion noise N(0, C).
        strength: ζ (1 = Bayesian).
        ridge: relative ridge added to Σ_y (pure ensemble) so noise-free sensors stay solvable.
        rcond: relative cut-off of the pseudo-inverse of Γ.
        hybrid: use the model covariance off the ensemble's span (linear operators; module docstring).

    Shapes: x (M, C, *S) — the ensemble, M ≥ 2 — sigma (M,) or scalar -> (M, C, *S).
    """

    def __init__(self, denoiser: Denoiser, operator, noise: GaussianRandomField, *, strength: float = 1.0,
                 ridge: float = 1e-8, rcond: float = 1e-10, hybrid: bool = True) -> None:
        if operator.values.shape[0] != 1:
            raise ValueError("ensemble Kalman guidance needs one observation shared by the ensemble (B_obs = 1)")
        if not strength >= 0:
            raise ValueError(f"strength must be >= 0, got {strength}")
        self.denoiser, self.operator, self.noise = denoiser, operator, noise
        self.strength, self.ridge, self.rcond = float(strength), float(ridge), float(rcond)
        self.hybrid = hybrid
        self.calls = 0

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        if x.shape[0] < 2:
            raise ValueError("ensemble Kalman guidance needs an ensemble of at least 2 particles in one call")
        self.calls += x.shape[0]
        with torch.no_grad():
            denoised = self.denoiser(x, sigma)
            if self.strength == 0:
                return denoised
            op = self.operator
            pred = op.predict(denoised).double()  # (M, n)
            r = op.constants_on(pred.device)[0] - pred
            sig = float(sigma_per_sample(torch.as_tensor(sigma, dtype=x.dtype, device=x.device), x).max())
            xd = (x - x.mean(dim=0, keepdim=True)).double()
            fd = pred - pred.mean(dim=0, keepdim=True)
            gram = xd.flatten(1) @ self.noise.apply_cov_power(xd, -1.0).flatten(1).T  # Γ = X C⁻¹ Xᵀ
            gram_pinv = torch.linalg.pinv(0.5 * (gram + gram.T), rtol=self.rcond, hermitian=True)
            hybrid = self.hybrid and op.is_linear
            j_model = self._model_jacobian(sig, x) if hybrid else None  # (C,) per state channel
            h = op.linear(xd.to(x.dtype)).double() if op.is_linear else fd  # A X (linear) or F
            v = fd - op.linear((xd * j_model.reshape(1, -1, *[1] * (x.ndim - 2))).to(x.dtype)).double() \
                if hybrid else fd  # F - A J_m X
            u = sig**2 * h.T @ gram_pinv  # (n, M): K = K_base + U V
            kinv = self._base_inverse(op, sig, x, hybrid)
            w = self._woodbury(kinv, u, v, r)  # (M, n): K⁻¹ r_i
            delta = sig**2 * ((w @ v.T) @ gram_pinv @ xd.flatten(1)).reshape(x.shape)
            if hybrid:
                delta = delta + sig**2 * j_model.reshape(1, -1, *[1] * (x.ndim - 2)) * self._cov_adjoint(op, w, x)
        return (denoised.double() + self.strength * delta).to(x.dtype)

    def _model_jacobian(self, sig: float, x: Tensor) -> Tensor:
        """J_m per state channel: σ² J_m C = r²(σ) C / a², the covariance model of ObservationGuidance."""
        return ModelCovariance(self.noise, self.operator.sigma_data).jacobian(sig, x.shape[1], x.device)

    def _base_inverse(self, op, sig: float, x: Tensor, hybrid: bool):
        """K_base⁻¹ on rows (k, n): the model covariance's inverse (hybrid) or (Σ_y + ridge)⁻¹."""
        if hybrid:
            like = x[:1]
            return lambda rows: op.model_inverse(rows, torch.full((rows.shape[0],), sig, dtype=torch.float64,
                                                                  device=rows.device), like)
        s2 = op.constants_on(x.device)[1]
        return lambda rows: rows / (s2 + self.ridge * float(s2.max().clamp(min=1.0)))

    @staticmethod
    def _woodbury(kinv, u: Tensor, v: Tensor, r: Tensor) -> Tensor:
        """Rows K⁻¹ r_i for K = K_base + U V (U (n, M), V (M, n)), K_base⁻¹ given by ``kinv`` on rows."""
        z = kinv(r)  # (M', n)
        ku = kinv(u.T.contiguous())  # rows of (K_base⁻¹ U)ᵀ, (M, n)
        core = torch.eye(v.shape[0], dtype=u.dtype, device=u.device) + v @ ku.T
        return z - (torch.linalg.solve(core, v @ z.T)).T @ ku

    @staticmethod
    def _cov_adjoint(op, w: Tensor, x: Tensor) -> Tensor:
        """C Aᵀ w_i (Aᵀ: the adjoint of the operator's linear part, by autograd). Shapes: w (M, n) -> like x."""
        with torch.enable_grad():
            z = torch.zeros_like(x, dtype=torch.float64).requires_grad_(True)
            adj, = torch.autograd.grad(op.linear(z), z, w)
        return op.noise.apply_cov_power(adj, 1.0)

