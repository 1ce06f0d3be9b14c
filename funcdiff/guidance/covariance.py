"""The model covariance of the denoised estimate, Cov[x_0 | x_σ] ≈ r_c²(σ) C / a² per channel, shared by every
posterior method (DPS's likelihood, MMPS's preconditioner and trust region, EnKG's off-ensemble derivative).

For x_σ = x_0 + σ ε, ε ~ N(0, C) with pointwise variance a², and data of variance σ_data,c² per channel, the
effective noise level is σ_e = a σ and the error variance of the ideal denoiser is

    r_c²(σ) = σ_e² σ_data,c² / (σ_e² + σ_data,c²)                                                        (1)

(:func:`posterior_variance`; exact when the data covariance is ∝ C). The model P = r_c²(σ) C / a² is used as

- the covariance of the residual of :class:`~funcdiff.guidance.ObservationGuidance` (A P Aᵀ + Σ_y),
- the metric of the **trust region** (:meth:`ModelCovariance.trust_scale`): for the linear-Gaussian problem the
  exact correction δ obeys δᵀP⁻¹δ ≤ χ² (the observations' own misfit), so a learned Jacobian that breaks the
  bound by orders of magnitude is scaled back to it,
- the Jacobian model σ² J_m C = P of EnKG's hybrid update (:meth:`ModelCovariance.jacobian`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from funcdiff.utils import device_constant


def posterior_variance(sigma: Tensor, sigma_data: Tensor | float) -> Tensor:
    """r²(σ) = σ² σ_data² / (σ² + σ_data²): variance of x_0 given x_0 + σ ε for data of variance σ_data².

    The EDM denoiser's error variance (Karras et al. 2022, eq. 7 loss weight inverse). Shapes: broadcasting.
    """
    sigma_data = torch.as_tensor(sigma_data, dtype=sigma.dtype, device=sigma.device)
    return sigma**2 * sigma_data**2 / (sigma**2 + sigma_data**2)


def per_channel(sigma_data: Tensor, num_channels: int) -> Tensor:
    """σ_data as one value per state channel: a single value is repeated; otherwise the count must match.
    Shapes: (1,) or (C,) -> (C,)."""
    if sigma_data.numel() == 1:
        return sigma_data.expand(num_channels)
    if sigma_data.numel() != num_channels:
        raise ValueError(f"sigma_data has {sigma_data.numel()} entries for {num_channels} state channels")
    return sigma_data


class ModelCovariance:
    """Cov[x_0 | x_σ] ≈ r_c²(σ) C / a², eq. (1) of the module, for a noise ``noise`` (C, amplitude a) and the
    data std ``sigma_data`` of the model state (one value, or one per channel).

    Shapes: ``sigma`` (B,) per-sample noise levels; results (B, C) per sample and channel, float64.
    """

    def __init__(self, noise, sigma_data: float | Sequence[float] | Tensor = 1.0) -> None:
        self.noise = noise
        self.sigma_data = torch.as_tensor(sigma_data, dtype=torch.float64).flatten()
        self._on_device: dict = {}

    def variance(self, sigma: Tensor, num_channels: int) -> Tensor:
        """r_c²(σ), the pointwise variance of the model. Shapes: sigma (B,) -> (B, C)."""
        sd = device_constant(self._on_device, num_channels, sigma.device,
                             lambda: per_channel(self.sigma_data, num_channels)[None, :])  # (1, C), float64
        return posterior_variance(sigma.double()[:, None] * self.noise.amplitude, sd)

    def factor(self, sigma: Tensor, num_channels: int) -> Tensor:
        """r_c²(σ) / a²: the model is P = factor · C. Shapes: sigma (B,) -> (B, C)."""
        return self.variance(sigma, num_channels) / self.noise.amplitude**2

    def jacobian(self, sigma: float, num_channels: int, device=None) -> Tensor:
        """J_m per channel with σ² J_m C = P (EnKG's derivative off the ensemble). Shapes: scalar σ -> (C,)."""
        amp = self.noise.amplitude
        r2 = self.variance(torch.tensor([sigma], dtype=torch.float64), num_channels)[0]
        return (r2 / (sigma * amp) ** 2).to(device)

    def trust_scale(self, c_norms: Tensor, sigma: Tensor, bound: Tensor, ndim: int) -> Tensor:
        """Factor t ≤ 1 per sample with (tδ)ᵀ P⁻¹ (tδ) ≤ ``bound``, given δ_cᵀ C⁻¹ δ_c per channel.

        Shapes: c_norms (B, C), sigma (B,), bound (B,) -> (B, 1, ..., 1) with ``ndim`` axes, float64.
        """
        factor = self.factor(sigma, c_norms.shape[1])
        m = (c_norms.clamp(min=0) / factor.clamp(min=1e-300)).sum(dim=1)
        t = torch.sqrt(bound / m.clamp(min=1e-300)).clamp(max=1.0)
        return t.reshape(-1, *[1] * (ndim - 1))
