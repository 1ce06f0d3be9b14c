"""EDM denoising loss with function-space (Gaussian-random-field) noise."""

from __future__ import annotations

import torch
from torch import nn

from typing import Callable, Optional

from funcdiff.noise import GaussianRandomField
from funcdiff.utils import append_dims

SigmaSampler = Callable[[int, torch.Generator], torch.Tensor]

SigmaSampler = Callable[[int, torch.Generator], torch.Tensor]


def unwrap(module: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel / DataParallel wrapper (or the module itself)."""
    return getattr(module, "module", module)


class EDMLoss:
    """Denoising score-matching loss of Karras et al. (2022), eq. (2) with Table 1's training choices.

    Per sample: ``ln sigma ~ N(P_mean, P_std²)``, ``x_noisy = x + sigma·ε`` with ε drawn from the GRF
    ``noise`` at the data's resolution, and the loss ``λ(sigma)·mean_{c, grid}(D(x_noisy; sigma) − x)²``,
    ``λ = denoiser.loss_weight`` (EDM: (σ²+σ_d²)/(σσ_d)²). The squared error is a *mean* over channels and
    grid points (a quadrature of the L² norm on [0,1)^d), so the loss means the same at every resolution.
    Returns the batch mean (dimensionless for normalised data).

    Conditional (forecasting) form: with ``cond_channels = h`` the first h channels of each training item are
    clean conditioning (a forecaster's history frames, see :mod:`funcdiff.data.windows`), passed as
    ``denoiser(x_noisy, sigma, cond=...)``; only the remaining channels are noised and scored. A
    ``sigma_sampler(B, generator) -> (B,) | (B, C_state)`` replaces the log-normal draw, e.g. the per-frame levels
    of rolling diffusion (:class:`funcdiff.training.forecast.RollingSigmas`).

    ``spatial_weights`` (attribute, default None): weights broadcastable to ``*S`` with mean 1 multiply the squared
    error point by point -- the cell areas of a lat-lon grid (``train.latitude_weighted``), so the loss is the
    area integral over the sphere rather than the plain grid mean.

    Shapes: x (B, C, *S) (normalised, dimensionless); returns a scalar.
    """

    def __init__(self, noise: GaussianRandomField, P_mean: float = -1.2, P_std: float = 1.2, *,
                 cond_channels: int = 0, sigma_sampler: Optional[SigmaSampler] = None) -> None:
        if P_std <= 0:
            raise ValueError(f"P_std must be positive, got {P_std}")
        self.noise, self.P_mean, self.P_std = noise, float(P_mean), float(P_std)
        self.cond_channels, self.sigma_sampler = int(cond_channels), sigma_sampler
        self.spatial_weights: Optional[torch.Tensor] = None  # quadrature weights over *S, mean 1 (e.g. cell areas)

    def __call__(self, denoiser: nn.Module, x: torch.Tensor, generator: Optional[torch.Generator] = None, *,
                 draws: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        """The loss of batch ``x`` with sigma and noise drawn on ``generator``, or the given ``draws``
        ``(sigma, eps)`` of :meth:`draw_batch` (the trainer draws a global batch once and splits it)."""
        cond, x = (None, x) if not self.cond_channels else (x[:, :self.cond_channels], x[:, self.cond_channels:])
        sigma, eps = draws if draws is not None else self.draw(x, generator)
        x_noisy = x + append_dims(sigma, x.ndim) * eps
        denoised = (denoiser(x_noisy, sigma) if sigma.ndim == 1 and cond is None
                    else denoiser(x_noisy, append_dims(sigma, x.ndim), cond=cond)).float()
        weight = unwrap(denoiser).loss_weight(append_dims(sigma, x.ndim)).to(x.dtype)
        per_point = weight * (denoised - x.float()) ** 2
        if self.spatial_weights is not None:
            per_point = per_point * self.spatial_weights
        return per_point.mean()

    def draw(self, x: torch.Tensor, generator: torch.Generator, rows: Optional[slice] = None,
             total: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sigma (B,) (or the sampler's (B, C)) and GRF noise ε shaped like x, drawn on ``generator``'s device and
        moved to x's. With ``total``: drawn for a batch of ``total`` items (x's item shape) and cut to ``rows``
        (length B), so every rank of a data-parallel run draws the same global batch and keeps its own rows."""
        n = x.shape[0] if total is None else int(total)
        if self.sigma_sampler is not None:
            sigma = self.sigma_sampler(n, generator)
        else:
            rnd = torch.randn(n, generator=generator, device=generator.device, dtype=torch.float32)
            sigma = (rnd * self.P_std + self.P_mean).exp()
        eps = self.noise.sample((n, *x.shape[1:]), generator=generator, device=generator.device, dtype=x.dtype)
        if rows is not None:
            sigma, eps = sigma[rows], eps[rows]
        return sigma.to(device=x.device, dtype=x.dtype), eps.to(x.device)

    def draw_batch(self, x: torch.Tensor, generator: torch.Generator, rows: Optional[slice] = None,
                   total: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`draw` for the noised (non-conditioning) channels of training items ``x`` (B, C, *S); pass the
        result as ``draws=`` to the call."""
        return self.draw(x[:, self.cond_channels:], generator, rows, total)
