"""EDM denoising loss with function-space (Gaussian-random-field) noise."""

from __future__ import annotations

import torch
from torch import nn

from typing import Callable, Optional

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

    Shapes: x (B, C, *S) (normalised, dimensionless); returns a scalar.
    """

    def __init__(self, noise: GaussianRandomField, P_mean: float = -1.2, P_std: float = 1.2, *,
                 cond_channels: int = 0, sigma_sampler: Optional[SigmaSampler] = None) -> None:
        if P_std <= 0:
            raise ValueError(f"P_std must be positive, got {P_std}")
        self.noise, self.P_mean, self.P_std = noise, float(P_mean), float(P_std)
        self.cond_channels, self.sigma_sampler = int(cond_channels), sigma_sampler

    def __call__(self, denoiser: nn.Module, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cond, x = (None, x) if not self.cond_channels else (x[:, :self.cond_channels], x[:, self.cond_channels:])
        sigma, eps = self.draw(x, generator)
        x_noisy = x + append_dims(sigma, x.ndim) * eps
        denoised = (denoiser(x_noisy, sigma) if sigma.ndim == 1 and cond is None
                    else denoiser(x_noisy, append_dims(sigma, x.ndim), cond=cond)).float()
        weight = unwrap(denoiser).loss_weight(append_dims(sigma, x.ndim)).to(x.dtype)
        per_point = weight * (denoised - x.float()) ** 2
        return per_point.mean()

    def draw(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Sigma (B,) (or the sampler's (B, C)) and GRF noise ε shaped like x, drawn on ``generator``'s device and
        moved to x's."""
        if self.sigma_sampler is not None:
            sigma = self.sigma_sampler(x.shape[0], generator)
        else:
            rnd = torch.randn(x.shape[0], generator=generator, device=generator.device, dtype=torch.float32)
            sigma = (rnd * self.P_std + self.P_mean).exp()
        eps = self.noise.sample(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
        return sigma.to(device=x.device, dtype=x.dtype), eps.to(x.device)
