"""A noise-conditioned FNO whose blocks add local kernels beside the global spectral convolution.

Liu-Schiaffini, Berner, Bonev, Kurth, Azizzadenesheli, Anandkumar, "Neural Operators with Localized Integral and
Differential Kernels" (ICML 2024): an FNO keeps only the Fourier modes below ``n_modes``; everything above them
passes through pointwise maps only, so the operator cannot build small-scale structure from its neighbours. Two
local operators that converge as the grid is refined fill that gap, and each block of
:class:`~funcdiff.models.fno.NoiseConditionedFNO` becomes::

    h = SpectralConv(x) + D x + K_r x + W x      # global + differential + local integral + pointwise
    h = GELU(FiLM(GroupNorm(h), emb)); x = x + ChannelMLP(h)

* ``D x = sum_i A_i (L / 2 pi) d_i x``: a first-order differential operator with one channel-mixing matrix per
  axis, by fourth-order central differences divided by the grid spacing h_i = 1 / n_i (so it converges to the
  derivative at rate h^4 and is the same operator on every grid; L = 1 is the domain length). A learnable
  convolution stencil whose weights sum to zero, divided by h (neuraloperator's ``FiniteDifferenceConvolution``),
  converges to the same family ``sum_i A_i d_i``: only the first moments of the stencil survive the limit. Ours is
  written on torch because neuraloperator's layer divides by one scalar grid width, which is wrong on the
  anisotropic (time, space) grids of the trajectory kind, and is only first-order accurate.
* ``K_r x = sum_j B_j (kappa_j * x)``: a DISCO-style local integral (Ocampo, Price, McEwen 2023; the paper above)
  over the ball of physical radius ``radius`` on the unit periodic domain, with a fixed basis kappa_j (piecewise
  linear rings in |y| / r, and the first moments y_i / r times a hat) evaluated at the grid offsets and normalised
  by the quadrature sum (as DISCO normalises its filter matrix), so the stencil covers more points as the grid
  refines and the discrete operator converges to the integral. neuraloperator's
  ``EquidistantDiscreteContinuousConv2d`` precomputes its filter for one fixed input shape and is 2-D only, so
  ours builds the stencil per grid (cached) and applies it in the Fourier domain (one FFT pair per block, cost
  independent of the radius), in any number of dimensions.

The rest (noise embedding, FiLM, GroupNorm, lifting, projection, conditioning channels, EDM preconditioning) is
the FNO backbone's, unchanged. Shapes: x (B, C, *S) on a periodic grid of [0, 1)^d, any d.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from funcdiff.models.conditioning import PointwiseLinear
from funcdiff.models.fno import FNOConfig, NoiseConditionedFNO
from funcdiff.models.spectral import PeriodicSpectralConv, RowLayoutSpectral, from_rows, to_rows
from funcdiff.utils import grid_constant, rfftn, transform_dtype

LOCAL_KERNELS = ("differential", "integral")


@dataclass(frozen=True)
class LocalFNOConfig(FNOConfig):
    """How to build a :class:`NoiseConditionedLocalFNO`: the fields of :class:`~funcdiff.models.fno.FNOConfig`, and

    Attributes:
        local_kernels: which local operators each block adds to its spectral convolution, a subset of
            ("differential", "integral"); () gives the FNO block.
        radius: physical radius r of the local integral kernel on the unit periodic domain (0 < r < 0.5); a grid
            of n points per axis covers it with about 2 r n + 1 points per axis.
        n_rings: piecewise-linear radial basis functions of the integral kernel (each also gets the d first-moment
            kernels y_i / r times a hat, so the kernel has n_rings + d basis functions).
    """

    local_kernels: tuple[str, ...] = LOCAL_KERNELS
    radius: float = 0.0625
    n_rings: int = 2
    LOCAL_KERNELS: ClassVar[tuple] = LOCAL_KERNELS

    def __post_init__(self) -> None:
        super().__post_init__()
        kernels = (self.local_kernels,) if isinstance(self.local_kernels, str) else tuple(self.local_kernels)
        object.__setattr__(self, "local_kernels", kernels)
        unknown = sorted(set(kernels) - set(self.LOCAL_KERNELS))
        if unknown or len(set(kernels)) != len(kernels):
            raise ValueError(f"local_kernels must be distinct names from {self.LOCAL_KERNELS}, got {kernels}")
        if not 0.0 < float(self.radius) < 0.5:
            raise ValueError(f"radius must lie in (0, 0.5) (a fraction of the unit domain), got {self.radius}")
        if int(self.n_rings) < 1:
            raise ValueError(f"n_rings must be a positive integer, got {self.n_rings}")

    def to_dict(self) -> dict:
        """Plain JSON-friendly dict that ``LocalFNOConfig(**d)`` accepts back."""
        out = super().to_dict()
        out["local_kernels"] = list(self.local_kernels)
        return out


class GridDifferential(nn.Module):
    """``D x = sum_i A_i (1 / 2 pi) d_i x`` by fourth-order central differences on a periodic grid of [0, 1)^d.

    d_i x ~ (-x(+2h) + 8 x(+h) - 8 x(-h) + x(-2h)) / (12 h), h = 1 / n_i: the local differential kernel of
    Liu-Schiaffini et al. (ICML 2024), scaled with the grid spacing so that it converges (error O(h^4)) to the
    same differential operator on every grid. The 1 / 2 pi makes mode k's derivative k in size.

    Shapes: x (B, C_in, *S) -> (B, C_out, *S), d = len(S) >= 1.
    """

    def __init__(self, in_channels: int, out_channels: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.mix = PointwiseLinear(dim * in_channels, out_channels, bias=False)
        self._symbols: dict = {}  # the stencil's Fourier symbols per grid, dtype and device (fourier_basis)
        with torch.no_grad():
            self.mix.linear.weight.mul_(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(transform_dtype(x.dtype))
        grads = []
        for axis in range(x.ndim - self.dim, x.ndim):
            n = x.shape[axis]
            plus1, minus1 = torch.roll(x, -1, axis), torch.roll(x, 1, axis)
            plus2, minus2 = torch.roll(x, -2, axis), torch.roll(x, 2, axis)
            grads.append((8 * (plus1 - minus1) - (plus2 - minus2)) * (n / (12 * 2 * math.pi)))
        with torch.autocast(x.device.type, enabled=False):
            return self.mix(torch.cat(grads, dim=1)).to(dtype)

    def fourier_basis(self, x_hat: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """The differences in the Fourier domain, for :func:`fourier_local`: x̂ times the stencil's symbol along each
        axis, ``i (8 sin θ - sin 2θ) n / (12·2π)`` at θ = 2π k / n (the DFT of the stencil of :meth:`forward`).
        Shapes: x_hat (B, C, *K) (the ``rfftn`` of a (B, C, *shape) field) -> (B, d·C, *K), axis-major as
        :meth:`forward` concatenates."""
        def make() -> torch.Tensor:  # (d, *K)
            symbols = []
            for axis, n in enumerate(shape):
                k = torch.arange(n // 2 + 1) if axis == len(shape) - 1 else _integer_frequencies(n)
                theta = 2 * math.pi * k.double() / n
                symbol = 1j * (8 * theta.sin() - (2 * theta).sin()) * (n / (12 * math.pi))
                view = [1] * len(shape)
                view[axis] = -1
                symbols.append(symbol.view(view).expand(*x_hat.shape[2:]))
            return torch.stack(symbols).to(device=x_hat.device, dtype=x_hat.dtype)

        symbols = grid_constant(self._symbols, (shape, x_hat.dtype, str(x_hat.device)), make)
        return (symbols[None, :, None] * x_hat[:, None]).flatten(1, 2)


def _integer_frequencies(n: int) -> torch.Tensor:
    """``torch.fft.fftfreq(n, 1 / n)`` as integers (0, 1, .., -2, -1), made from ``n`` by integer arithmetic: under
    ``torch.compile(dynamic=True)`` fftfreq's float spacing fixed the graph to one grid."""
    return torch.remainder(torch.arange(n) + n // 2, n) - n // 2


class LocalIntegral(nn.Module):
    """``K_r x = sum_j B_j (kappa_j * x)``: a local integral kernel of physical radius r (DISCO-style).

    The basis on the ball |y| < r: ``n_rings`` piecewise-linear hats in rho = |y| / r (nodes j / n_rings) and, per
    axis, (y_i / r)(1 - rho). Each basis is evaluated at the grid offsets y = m / n (periodic) and normalised by
    its quadrature sum of |kappa_j| (the discrete filter normalisation of DISCO convolutions, Ocampo et al. 2023),
    so that the discrete operator converges to the integral operator as the grid refines. The periodic convolution
    is applied in the Fourier domain, and so is the mix B_j, which commutes with the inverse FFT: one inverse FFT
    per output channel rather than one per (channel, basis function), and the forward FFT's backward pass is one
    inverse real FFT (:func:`funcdiff.utils.rfftn`); a block's local integral 0.45-0.58x the time of transforming
    every basis function back first, forward and backward 0.58-0.66x (64²-256², measured on a CPU core). The
    stencil spectra are cached per grid, dtype and device.

    Shapes: x (B, C_in, *S) -> (B, C_out, *S).
    """

    def __init__(self, in_channels: int, out_channels: int, dim: int, radius: float, n_rings: int) -> None:
        super().__init__()
        self.dim, self.radius, self.n_rings = dim, float(radius), int(n_rings)
        self.n_basis = self.n_rings + dim
        self.mix = PointwiseLinear(self.n_basis * in_channels, out_channels, bias=False)
        self._cache: dict = {}

    def stencils(self, shape: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
        """The normalised basis kernels on a grid, (J, *shape) with offsets in FFT order (0 first), float64."""
        axes = [_integer_frequencies(n).double() / n for n in shape]  # offsets m / n
        y = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # (d, *shape)
        rho = torch.linalg.vector_norm(y, dim=0) / self.radius
        width = 1.0 / self.n_rings
        rings = [(1 - (rho - j * width).abs() / width).clamp(min=0) * (rho < 1) for j in range(self.n_rings)]
        hat = (1 - rho).clamp(min=0)
        moments = [y[i] / self.radius * hat for i in range(len(shape))]
        basis = torch.stack(rings + moments)
        norm = basis.abs().flatten(1).sum(1).clamp(min=1e-12)
        return basis / norm.view(-1, *[1] * len(shape))

    def _spectra(self, shape: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
        """The stencils' ``rfftn`` (J, *K), made in float64 and cached in the complex dtype of the real ``dtype``."""
        def make() -> torch.Tensor:
            kernel = self.stencils(shape, dtype, device)
            spectra = torch.fft.rfftn(kernel, dim=tuple(range(1, kernel.ndim)))
            return spectra.to(device=device, dtype=torch.promote_types(dtype, torch.complex64))

        return grid_constant(self._cache, (shape, dtype, str(device)), make)

    def fourier_basis(self, x_hat: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """The convolutions with the basis kernels in the Fourier domain, for :func:`fourier_local`: x_hat (B, C, *K)
        (the ``rfftn`` of a (B, C, *shape) field) -> (B, C·J, *K), channel-major, κ_j * x for each channel."""
        return (x_hat.unsqueeze(2) * self._spectra(shape, x_hat.real.dtype, x_hat.device)).flatten(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fourier_local([self], x)


def fourier_local(layers, x: torch.Tensor) -> torch.Tensor:
    """The sum of local kernels (:class:`LocalIntegral`, :class:`GridDifferential`) evaluated together in the
    Fourier domain: one ``rfftn`` of x, each layer's basis products (``fourier_basis``) mixed by its pointwise map
    there (a real linear map over channels commutes with the inverse FFT), one inverse FFT of the sum. The backward
    pass of the forward FFT is one inverse real FFT (:func:`funcdiff.utils.rfftn`). Shapes: x (B, C, *S) ->
    (B, C_out, *S); float16/bfloat16 transformed in float32."""
    dtype, work = x.dtype, transform_dtype(x.dtype)
    shape = tuple(x.shape[2:])
    dims = tuple(range(-len(shape), 0))
    with torch.autocast(x.device.type, enabled=False):
        x_hat = rfftn(x.to(work), dims)
        mixed = None
        for layer in layers:  # (B, C_out, *K, 2): the real and imaginary parts mixed alike
            term = layer.mix(torch.view_as_real(layer.fourier_basis(x_hat, shape)))
            mixed = term if mixed is None else mixed + term
        return torch.fft.irfftn(torch.view_as_complex(mixed), s=shape, dim=dims).to(dtype)


class LocalSpectralConv(nn.Module, RowLayoutSpectral):
    """The linear map of a local + spectral block: ``SpectralConv(x) + D x + K_r x`` (see the module docstring), also
    on the row layout of the Fourier blocks (:meth:`forward_rows_with_skip`).

    Shapes: x (B, C, *S) -> (B, C, *S)."""

    def __init__(self, width: int, n_modes: tuple[int, ...], config: LocalFNOConfig) -> None:
        super().__init__()
        dim = len(n_modes)
        self.spectral = PeriodicSpectralConv(width, width, n_modes)
        self.local = nn.ModuleList()
        if "differential" in config.local_kernels:
            self.local.append(GridDifferential(width, width, dim))
        if "integral" in config.local_kernels:
            self.local.append(LocalIntegral(width, width, dim, config.radius, config.n_rings))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spectral(x) + self._local(x)

    def _local(self, x: torch.Tensor) -> torch.Tensor:
        """The local kernels' sum on x (B, C, *S): with an integral kernel, whose FFT pair is paid anyway, every
        kernel in the Fourier domain (:func:`fourier_local`; the differences there cost one product instead of a
        dozen passes of shifted copies); the differences alone by shifted copies, without an FFT pair."""
        if any(isinstance(layer, LocalIntegral) for layer in self.local):
            return fourier_local(self.local, x)
        return sum(layer(x) for layer in self.local)

    def forward_rows_with_skip(self, x: torch.Tensor, skip: PointwiseLinear) -> torch.Tensor:
        """``K x + D x + K_r x + skip(x)`` on the row layout (B, n_1, .., C, n_d): the spectral layer and the skip
        there, the local kernels channels first (their rolls and FFTs along contiguous axes: on the row layout
        they were up to 2.3x slower at 64², measured), one transpose each way."""
        return self.spectral.forward_rows_with_skip(x, skip) + to_rows(self._local(from_rows(x)))


class NoiseConditionedLocalFNO(NoiseConditionedFNO):
    """``F(x, c_noise, cond)``: the FNO backbone whose blocks add local differential and integral kernels to the
    spectral convolution (Liu-Schiaffini et al., ICML 2024; see the module docstring).

    Shapes: x (B, in_channels, *S), c_noise (B,) or broadcastable to x, cond (B, cond_channels, *S)
    -> (B, out_channels, *S).
    """

    name = "local_fno"

    def _spectral_layer(self, config: FNOConfig) -> nn.Module | None:
        if not isinstance(config, LocalFNOConfig) or not config.local_kernels:
            return None
        return LocalSpectralConv(config.hidden_channels, config.n_modes, config)


def block_config(config: FNOConfig, width: int, n_modes: tuple[int, ...]) -> FNOConfig:
    """``config`` with another width and modes (one level of a U-shaped backbone)."""
    return dataclasses.replace(config, hidden_channels=width, n_modes=tuple(n_modes))
