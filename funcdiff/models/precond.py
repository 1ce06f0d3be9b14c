"""EDM preconditioning: wrap any noise-conditioned backbone ``F`` into a denoiser ``D(x; sigma)``.

Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based Generative Models"
(NeurIPS 2022), eq. (7) and Table 1 ("Ours" column):

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))
    c_skip = sigma_d^2 / (sigma^2 + sigma_d^2)      c_out = sigma sigma_d / sqrt(sigma^2 + sigma_d^2)
    c_in   = 1 / sqrt(sigma^2 + sigma_d^2)           c_noise = ln(sigma) / 4
    lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2     (loss weight, eq. (8) and Table 1)

sigma and sigma_data are in the units of the diffused state x. sigma_data may be one float or one value
per channel (C,) -- useful when joint fields (e.g. a coefficient and a solution) have different scales;
every coefficient is then per channel.
"""

from __future__ import annotations

import torch
from torch import nn

from funcdiff.models.backbone import Backbone
from funcdiff.utils import expand_sigma

SIGMA_MIN_FOR_LOG = 1e-20  # sigma = 0 is allowed: c_out = 0 there, and c_noise uses this floor to stay finite


class EDMPrecond(nn.Module):
    """EDM-preconditioned denoiser around ``backbone(x, c_noise)`` (Karras et al. 2022, eq. (7), Table 1).

    ``sigma`` may be a float, per sample (B,), or broadcastable to x with x's number of dims (per channel,
    per frame (B, 1, T, 1, 1), per element). A per-sample sigma reaches the backbone as c_noise (B,);
    anything finer is passed as the full c_noise tensor (the FNO backbone needs ``noise_channel=True`` to
    see more than its per-sample mean).

    ``cond`` (optional) is clean conditioning passed to the backbone unscaled beside c_in·x, e.g. the history
    frames of a forecaster (normalised data); it is not part of the diffused state (as class labels in EDM).

    Shapes: x (B, C, *S), sigma float | (B,) | broadcastable to x, cond (B, C_cond, *S) -> denoised (B, C, *S).
    """

    def __init__(self, backbone: nn.Module, sigma_data: float | list[float] | torch.Tensor = 1.0) -> None:
        super().__init__()
        sigma_data = torch.as_tensor(sigma_data, dtype=torch.float32).clone()
        if sigma_data.ndim > 1 or sigma_data.numel() == 0 or not bool((sigma_data > 0).all()):
            raise ValueError(f"sigma_data must be a positive float or a 1-D per-channel tensor, got {sigma_data}")
        self.backbone = backbone
        self.register_buffer("sigma_data", sigma_data)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: torch.Tensor | None = None) -> torch.Tensor:
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma, x)
        c_noise = _compact_noise(c_noise, x.shape[0])
        F_x = self.backbone(c_in * x, c_noise) if cond is None else self.backbone(c_in * x, c_noise, cond=cond)
        if F_x.shape != x.shape:
            raise ValueError(f"backbone output shape {tuple(F_x.shape)} differs from input shape {tuple(x.shape)}")
        return torch.addcmul(c_skip * x, c_out, F_x)

    def coefficients(
        self, sigma: torch.Tensor | float, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """c_skip, c_out, c_in, c_noise of Table 1 (Karras et al. 2022), each broadcastable to x.

        Shapes: sigma float | (B,) | broadcastable to x (B, C, *S) -> four tensors with x.ndim dims
        (per channel where sigma_data is per channel; c_noise has sigma's shape).
        """
        sigma = expand_sigma(sigma, x)
        sigma_data = self._sigma_data_like(x.ndim, x.shape[1]).to(x.dtype)
        # the same formulas in fewer tensor operations (each is a kernel launch on a GPU, issue 20)
        sd2 = sigma_data * sigma_data
        total = torch.addcmul(sd2, sigma, sigma)  # sigma^2 + sigma_d^2
        c_in = total.rsqrt()
        c_out = sigma * sigma_data * c_in
        c_skip = sd2 / total
        c_noise = sigma.clamp_min(SIGMA_MIN_FOR_LOG).log() * 0.25
        return c_skip, c_out, c_in, c_noise

    def loss_weight(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """EDM loss weight lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2 (Karras et al. 2022, Table 1).

        Shapes: sigma float | (B,) | (B, 1 or C, *1 or *S) -> sigma's shape, or (B, C, 1, ...) when
        sigma_data is per channel (then sigma must have at least 2 dims, e.g. (B, 1, 1, 1)).
        """
        sigma = torch.as_tensor(sigma, dtype=self.sigma_data.dtype, device=self.sigma_data.device)
        if self.sigma_data.ndim == 0:
            sigma_data = self.sigma_data
        elif sigma.ndim >= 2:
            sigma_data = self._sigma_data_like(sigma.ndim, None)
        else:
            raise ValueError(
                f"per-channel sigma_data needs sigma with a channel axis, e.g. (B, 1, 1, 1); got shape {tuple(sigma.shape)}"
            )
        return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2

    @property
    def config(self) -> dict:
        """Plain dict describing how this denoiser was built; ``build_denoiser(config)`` rebuilds it."""
        if isinstance(self.backbone, Backbone):
            out: dict = {"backbone": self.backbone.name, **self.backbone.config.to_dict()}
        else:
            out = {"backbone": type(self.backbone).__name__}
        sd = self.sigma_data
        out["sigma_data"] = sd.item() if sd.ndim == 0 else sd.tolist()
        return out

    def extra_repr(self) -> str:
        sd = self.sigma_data
        return f"sigma_data={sd.item() if sd.ndim == 0 else sd.tolist()}"

    def _sigma_data_like(self, ndim: int, channels: int | None) -> torch.Tensor:
        sd = self.sigma_data
        if sd.ndim == 0:
            return sd
        if channels is not None and sd.shape[0] != channels:
            raise ValueError(f"sigma_data has {sd.shape[0]} channels but x has {channels}")
        return sd.reshape(1, -1, *([1] * (ndim - 2)))


def _compact_noise(c_noise: torch.Tensor, batch: int) -> torch.Tensor:
    """Return c_noise as (B,) when it is constant over all non-batch dims' shape (size 1), else unchanged."""
    c_noise = c_noise.expand(batch, *c_noise.shape[1:])
    if c_noise[0].numel() == 1:
        return c_noise.reshape(batch)
    return c_noise
