"""Noise-level conditioning for neural-operator backbones: a sinusoidal embedding of ``c_noise`` and FiLM.

The EDM / DDPM UNet idea (embed the noise level, modulate every block with a per-sample scale and shift)
transplanted to Fourier neural operators. Conditioning is strictly per sample: every operation here acts on
the batch dimension row by row, so one sample's noise level never influences another sample's output.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from funcdiff.utils import append_dims, eager_autograd, grid_coordinates, input_grads_in_use, record_tensor_inputs


class PointwiseLinear(nn.Module):
    """A linear map over the channel axis applied at every grid point (a 1x1 convolution in any dimension).

    Pointwise maps commute with sub-sampling and with band-limited interpolation of the grid, so they keep
    an operator discretisation-agnostic.

    Shapes: x (B, C_in, *S) -> (B, C_out, *S), any number of spatial dims.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one GEMM on the (C_in, prod(S)) view of each sample, bias added by the GEMM: no transposes, no copies
        weight, bias = self.linear.weight, self.linear.bias
        autocast = torch.is_autocast_enabled(x.device.type)
        dtype = torch.get_autocast_dtype(x.device.type) if autocast else x.dtype  # as matmul would
        x3 = x.reshape(x.shape[0], x.shape[1], -1).to(dtype)
        weight = weight.to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            if x.shape[0] == 1:
                out = (torch.mm(weight, x3[0]) if bias is None else torch.addmm(bias.to(dtype)[:, None], weight, x3[0]))[None]
            elif bias is None:
                out = torch.matmul(weight, x3)
            else:
                out = torch.baddbmm(bias.to(dtype)[None, :, None], weight.expand(x.shape[0], -1, -1), x3)
        return out.view(x.shape[0], -1, *x.shape[2:])


    def forward_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The same map on the row layout (..., C_in, n) -> (..., C_out, n) (funcdiff.models.spectral.to_rows):
        one GEMM per contiguous (C_in, n) tile, batched."""
        weight, bias = self.linear.weight, self.linear.bias
        autocast = torch.is_autocast_enabled(x.device.type)
        dtype = torch.get_autocast_dtype(x.device.type) if autocast else x.dtype  # as matmul would
        x3 = x.reshape(-1, x.shape[-2], x.shape[-1]).to(dtype)
        weight = weight.to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            if bias is None:  # bmm on the broadcast weight: matmul would copy x3 into a (T·n, C_in) matrix
                out = torch.bmm(weight.expand(x3.shape[0], -1, -1), x3)
            else:
                out = torch.baddbmm(bias.to(dtype)[None, :, None], weight.expand(x3.shape[0], -1, -1), x3)
        return out.view(*x.shape[:-2], -1, x.shape[-1])


    def forward_rows_gelu(self, z: torch.Tensor) -> torch.Tensor:
        """``forward_rows(gelu(z))`` (exact GELU) on the row layout; under autograd (float32/64, no autocast) the
        GELU output is recomputed in the backward pass instead of being stored: a training step keeps one
        tensor per GELU, not two (issue 20: peak memory)."""
        if (eager_autograd() and (z.requires_grad or self.linear.weight.requires_grad)
                and not torch.is_autocast_enabled(z.device.type) and z.dtype == self.linear.weight.dtype):
            out = _GeluLinearRows.apply(z.reshape(-1, z.shape[-2], z.shape[-1]), self.linear.weight, self.linear.bias)
            return out.view(*z.shape[:-2], -1, z.shape[-1])
        g = torch.nn.functional.gelu(z) if torch.is_grad_enabled() and z.requires_grad else torch.ops.aten.gelu_(z)
        return self.forward_rows(g)


class _GeluLinearRows(torch.autograd.Function):
    """``W gelu(z) + b`` per (C_in, n) tile of the row layout, saving z only (GELU recomputed when differentiating)."""

    @staticmethod
    def forward(ctx, z3: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """z3 (T, C_in, n) -> (T, C_out, n)."""
        g = torch.nn.functional.gelu(z3)
        if bias is None:
            out = torch.bmm(weight.expand(g.shape[0], -1, -1), g)
        else:
            out = torch.baddbmm(bias[None, :, None], weight.expand(g.shape[0], -1, -1), g)
        ctx.save_for_backward(z3, weight)
        ctx.has_bias = bias is not None
        record_tensor_inputs(ctx, z3, weight, bias)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        z3, weight = ctx.saved_tensors
        go3 = grad_out.contiguous()
        grad_z = grad_w = grad_b = None
        need_z, need_w, need_b = input_grads_in_use(ctx)
        # bmm, not matmul: matmul copies a transposed or broadcast operand into a contiguous one first
        if need_w:
            grad_w = torch.bmm(go3, torch.nn.functional.gelu(z3).transpose(1, 2)).sum(0)
        if ctx.has_bias and need_b:
            grad_b = go3.sum(-1).sum(0)  # contiguous axis first: 1.6x faster than sum(dim=(0, 2))
        if need_z:
            grad_z = torch.ops.aten.gelu_backward(torch.bmm(weight.t().expand(go3.shape[0], -1, -1), go3), z3)
        return grad_z, grad_w, grad_b


class NoiseEmbedding(nn.Module):
    """Embed the per-sample noise level ``c_noise`` (EDM: ln(sigma)/4, dimensionless) into a feature vector.

    Sinusoidal features ``[cos(w_k c), sin(w_k c)]`` with fixed, geometrically spaced angular frequencies
    ``w_k`` from 1 to ``max_freq`` (rad per unit of c_noise), followed by a two-layer SiLU MLP. With EDM's
    c_noise in roughly [-1.6, 1.1] the lowest frequency sees the whole range and the highest resolves
    changes of sigma by a few per cent.

    Shapes: c_noise (B,) -> (B, emb_dim).
    """

    def __init__(self, emb_dim: int, max_freq: float = 64.0) -> None:
        super().__init__()
        if emb_dim < 2 or emb_dim % 2:
            raise ValueError(f"emb_dim must be a positive even integer, got {emb_dim}")
        half = emb_dim // 2
        freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), half))
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim), nn.SiLU())

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        if c_noise.ndim != 1:
            raise ValueError(f"c_noise for the embedding must be per sample (B,), got shape {tuple(c_noise.shape)}")
        angles = c_noise[:, None].to(self.freqs.dtype) * self.freqs
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=1))


class FiLM(nn.Module):
    """Feature-wise linear modulation ``h * (1 + scale) + shift`` with scale, shift computed from an embedding.

    The projection is zero-initialised, so at initialisation FiLM is the identity and each block starts
    unconditioned; training grows the conditioning from there.

    Shapes: h (B, C, *S), emb (B, E) -> (B, C, *S); scale and shift are (B, C) broadcast over space.
    """

    def __init__(self, emb_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(emb_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.proj(emb).to(h.dtype).chunk(2, dim=1)
        return h * (1 + append_dims(scale, h.ndim)) + append_dims(shift, h.ndim)


def periodic_grid_features(shape: tuple[int, ...], device=None, dtype=torch.float32) -> torch.Tensor:
    """Periodic positional features ``sin(2 pi x_i), cos(2 pi x_i)`` for each coordinate of [0, 1)^d.

    Band-limited (a single Fourier mode per dim) and periodic, so they are exactly the same function at
    every resolution and agree on shared grid points.

    Shapes: returns (2 d, *shape).
    """
    angles = 2 * math.pi * grid_coordinates(shape, device=device, dtype=torch.float64)
    return torch.cat([angles.sin(), angles.cos()]).to(dtype)


def cached_features(make, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``make(shape, device=device, dtype=dtype)`` (positional features: :func:`periodic_grid_features`, the
    sphere's) made once per function, grid, device and dtype and shared read-only: a backbone's call then makes
    them with no op at all and copies nothing from the host, which also lets a CUDA graph capture it
    (:mod:`funcdiff.models.graphs`). Under ``torch.compile`` they are made in the traced graph instead (dynamo
    ignores an ``lru_cache`` and warns about it on every compile)."""
    if torch.compiler.is_compiling():
        return make(shape, device=device, dtype=dtype)
    return _made_features(make, shape, device, dtype)


@functools.lru_cache(maxsize=16)
def _made_features(make, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return make(shape, device=device, dtype=dtype)
