"""A noise-conditioned U-shaped neural operator (UNO) backbone.

Rahman, Ross, Azizzadenesheli, "U-NO: U-shaped Neural Operators" (TMLR 2023), the backbone family of FunDPS
(Yao et al., NeurIPS 2025, SongUNO), as neuraloperator's ``UNO`` builds it: Fourier blocks on a sequence of grids
that shrink by a factor along the way down and grow back on the way up, with skip connections between the levels
of the same grid. Every grid is a *factor of the input grid* (n, n // 2, n // 4, ...), never a fixed size, and the
resampling between levels is done in the Fourier domain (truncation down, zero-padding up), so the same weights
define the same operator on every input grid, as for the FNO. neuraloperator's ``UNO`` itself is not used because
its blocks take no per-sample noise conditioning; ours are :class:`~funcdiff.models.fno.FNOBlock` (per-sample
FiLM from the noise embedding, GroupNorm, channel MLP), optionally with the local kernels of
:mod:`funcdiff.models.local_fno` beside each spectral convolution.

Layout with ``levels = L`` (widths w_l = hidden_channels * 2^l, modes m_l = (m_(l-1) - 1) // 2 per axis; an axis
is halved only while its modes stay >= 2, so short axes such as a trajectory's time axis keep their grid)::

    lift -> [n_layers blocks at level 0] -> down -> [blocks at level 1] -> ... -> [blocks at level L]
         -> up -> concat(skip of level L-1) -> 1x1 -> [blocks at level L-1] -> ... -> [blocks at level 0] -> project

Shapes: x (B, C, *S) on a periodic grid of [0, 1)^d, any d; the grid must exceed ``n_modes`` along every axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from funcdiff.models.backbone import Backbone
from funcdiff.models.conditioning import NoiseEmbedding, PointwiseLinear
from funcdiff.models.fno import FNOBlock, NoiseConditionedFNO, split_noise
from funcdiff.models.local_fno import LocalFNOConfig, LocalSpectralConv, block_config
from funcdiff.models.spectral import RowLayoutSpectral, from_rows, to_rows
from funcdiff.utils import eager_autograd, keep_freed_memory, transform_dtype


@dataclass(frozen=True)
class UNOConfig(LocalFNOConfig):
    """How to build a :class:`NoiseConditionedUNO`: the fields of :class:`~funcdiff.models.local_fno.LocalFNOConfig`
    (``local_kernels`` defaults to none: spectral blocks only), with

    Attributes:
        levels: how many times the grid is halved (0 gives a plain FNO with ``2 n_layers`` blocks).
        n_layers: blocks per level on the way down, and again on the way up.
    """

    local_kernels: tuple[str, ...] = ()
    levels: int = 2
    n_layers: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.levels) < 0:
            raise ValueError(f"levels must be >= 0, got {self.levels}")

    def level_modes(self) -> list[tuple[int, ...]]:
        """The Fourier modes per axis at each level 0..levels, and (see :meth:`factors`) which axes are halved."""
        modes = [tuple(self.n_modes)]
        for _ in range(self.levels):
            prev = modes[-1]
            modes.append(tuple((m - 1) // 2 if (m - 1) // 2 >= 2 else m for m in prev))
        return modes

    def factors(self) -> list[tuple[int, ...]]:
        """Per level 1..levels, the factor (2 or 1) by which each axis is divided from the level above."""
        modes = self.level_modes()
        return [tuple(2 if b < a else 1 for a, b in zip(modes[i], modes[i + 1])) for i in range(self.levels)]

    def widths(self) -> list[int]:
        return [self.hidden_channels * 2 ** level for level in range(self.levels + 1)]


def fourier_rescale(x: torch.Tensor, size: tuple[int, ...], rows: bool = False) -> torch.Tensor:
    """Resample a periodic field (B, C, *S) onto the grid ``size`` by truncating or zero-padding its Fourier modes
    (modes strictly below both grids' Nyquist frequency are kept, as in :func:`funcdiff.utils.fourier_resample`);
    with ``rows`` the field is on the row layout (B, n_1, .., C, n_d) of :func:`~funcdiff.models.spectral.to_rows`.

    Under autograd the backward pass is the adjoint resampling (:class:`_FourierRescale`), two real FFTs, where
    torch's ``rfftn`` backward runs a complex FFT over a zero-filled full spectrum of the input grid.

    Shapes: x (B, C, *S_in) -> (B, C, *size), or the row layouts; float16/bfloat16 are transformed in float32."""
    size = tuple(int(n) for n in size)
    if tuple(x.shape[a] for a in _grid_axes(x, len(size), rows)) == size:
        return x
    if eager_autograd() and x.requires_grad:
        return _FourierRescale.apply(x, size, rows)
    return _rescale(x, size, rows, "forward")


def _grid_axes(x: torch.Tensor, dims: int, rows: bool) -> tuple[int, ...]:
    """The axes of a field's grid, the last one last: (B, C, *S) or the row layout (B, n_1, .., C, n_d)."""
    return (*range(1, dims), x.ndim - 1) if rows else tuple(range(2, 2 + dims))


def _rescale(x: torch.Tensor, size: tuple[int, ...], rows: bool, norm: str) -> torch.Tensor:
    """:func:`fourier_rescale` with the FFTs' normalisation ``norm``: "forward" resamples; "backward" (the analysis
    unscaled, the synthesis over the output's points) is the adjoint of resampling from ``size`` onto x's grid."""
    axes = _grid_axes(x, len(size), rows)
    dtype, work = x.dtype, transform_dtype(x.dtype)
    with torch.autocast(x.device.type, enabled=False):
        x_hat = torch.fft.rfftn(x.to(work), dim=axes, norm=norm)
        for axis, n_out in zip(axes[:-1], size[:-1]):
            n_in = x.shape[axis]
            keep = (min(n_in, n_out) - 1) // 2
            low, high = x_hat.narrow(axis, 0, keep + 1), x_hat.narrow(axis, n_in - keep, keep)
            zeros = x_hat.new_zeros(*x_hat.shape[:axis], n_out - 2 * keep - 1, *x_hat.shape[axis + 1:])
            x_hat = torch.cat([low, zeros, high], dim=axis)
        keep = (min(x.shape[-1], size[-1]) - 1) // 2
        x_hat = x_hat[..., : keep + 1]
        return torch.fft.irfftn(x_hat, s=size, dim=axes, norm=norm).to(dtype)


class _FourierRescale(torch.autograd.Function):
    """:func:`fourier_rescale` with its adjoint as backward pass. Resampling R = F_out⁻¹ P F_in keeps the same
    symmetric set of modes (below both grids' Nyquist frequencies) on both grids, so Rᵀ = (N_out / N_in) R', R' the
    resampling from the output grid back onto the input grid: ``_rescale(grad, input grid, norm="backward")``, whose
    FFT normalisation carries the factor (N = points of a grid). Tested against autograd's gradient to 1e-15 in
    float64."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: tuple[int, ...], rows: bool) -> torch.Tensor:
        ctx.grid, ctx.rows = tuple(x.shape[a] for a in _grid_axes(x, len(size), rows)), rows
        return _rescale(x, size, rows, "forward")

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return _rescale(grad, ctx.grid, ctx.rows, "backward"), None, None


ROWS_MIN_SIDE_UNDER_AUTOGRAD = 64  # see NoiseConditionedUNO.on_rows


class NoiseConditionedUNO(NoiseConditionedFNO):
    """``F(x, c_noise, cond)``: a U-shaped stack of noise-conditioned Fourier blocks (see the module docstring).

    Input features (positional, noise and conditioning channels), the noise embedding, lifting and projection are
    the FNO backbone's. Shapes: x (B, in_channels, *S), c_noise (B,) or broadcastable to x,
    cond (B, cond_channels, *S) -> (B, out_channels, *S).
    """

    name = "uno"

    def __init__(self, config: UNOConfig) -> None:
        Backbone.__init__(self)  # the FNO's input/output layers are rebuilt here; its block stack is not used
        keep_freed_memory()
        self.config = config
        extra = (self._positional_channels(config) + int(config.noise_channel)
                 + config.in_channels * int(config.noise_per_channel) + config.cond_channels)
        widths, modes = config.widths(), config.level_modes()
        self.embedding = NoiseEmbedding(config.emb_dim)
        self.lifting = PointwiseLinear(config.in_channels + extra, widths[0])
        self.down = nn.ModuleList(self._level(config, widths[lv], modes[lv]) for lv in range(config.levels + 1))
        self.up = nn.ModuleList(self._level(config, widths[lv], modes[lv]) for lv in range(config.levels))
        self.widen = nn.ModuleList(PointwiseLinear(widths[lv], widths[lv + 1]) for lv in range(config.levels))
        self.narrow = nn.ModuleList(PointwiseLinear(widths[lv + 1], widths[lv]) for lv in range(config.levels))
        self.merge = nn.ModuleList(PointwiseLinear(2 * widths[lv], widths[lv]) for lv in range(config.levels))
        hidden = config.mlp_ratio * widths[0]
        self.projection = nn.Sequential(PointwiseLinear(widths[0], hidden), nn.GELU(),
                                        PointwiseLinear(hidden, config.out_channels))

    @staticmethod
    def _level(config: UNOConfig, width: int, modes: tuple[int, ...]) -> nn.ModuleList:
        cfg = block_config(config, width, modes)
        return nn.ModuleList(
            FNOBlock(cfg, LocalSpectralConv(width, modes, cfg) if config.local_kernels else None)
            for _ in range(config.n_layers))

    def grids(self, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The grid of every level for an input grid ``shape``: level l divides each halved axis by 2^l (floor)."""
        grids = [tuple(shape)]
        for factor in self.config.factors():
            grids.append(tuple(n // f for n, f in zip(grids[-1], factor)))
        return grids

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor | float, cond: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input(x, cond)
        c_sample, c_field = split_noise(c_noise, x)
        emb = self.embedding(c_sample)
        features = self._input_features(x, c_noise, c_field, cond)
        grids = self.grids(tuple(x.shape[2:]))
        if not self.on_rows(grids[0]):
            return self._project(self._levels(self.lifting(features), emb, grids, rows=False))
        h = self._levels(self.lifting.forward_rows(to_rows(features)), emb, grids, rows=True)
        return from_rows(self._project_rows(h))

    def on_rows(self, shape: tuple[int, ...] | None = None) -> bool:
        """Whether the blocks run on the row layout, as the FNO's: every global layer is a
        :class:`~funcdiff.models.spectral.RowLayoutSpectral` (the spectral layers, with or without local kernels),
        and, under autograd (training, guidance), the coarsest level of the input grid ``shape`` keeps at least
        :data:`ROWS_MIN_SIDE_UNDER_AUTOGRAD` points along its last axis: on shorter rows the row layout's per-row
        GEMMs and fused training paths cost more than the channels-first GEMMs, while inference is faster on the row
        layout at every grid (measured on a CPU core by ``benchmarks/row_layout_speed.py``, which times both)."""
        if not all(isinstance(block.spectral, RowLayoutSpectral) for level in (*self.down, *self.up) for block in level):
            return False
        if shape is None or not torch.is_grad_enabled():
            return True
        return self.grids(tuple(shape))[-1][-1] >= ROWS_MIN_SIDE_UNDER_AUTOGRAD

    def _levels(self, h: torch.Tensor, emb: torch.Tensor, grids: list[tuple[int, ...]], rows: bool) -> torch.Tensor:
        """The U: blocks and resampling from the lifted field to the field before the projection, channels first
        (B, C, *S) or on the row layout (B, n_1, .., C, n_d)."""
        channels = -2 if rows else 1

        def linear(layer: PointwiseLinear, y: torch.Tensor) -> torch.Tensor:
            return layer.forward_rows(y) if rows else layer(y)

        skips = []
        for level, blocks in enumerate(self.down):
            if level:
                h = linear(self.widen[level - 1], fourier_rescale(h, grids[level], rows))
            for block in blocks:
                h = block(h, emb, rows=rows)
            skips.append(h)
        for level in reversed(range(self.config.levels)):
            h = linear(self.narrow[level], fourier_rescale(h, grids[level], rows))
            h = linear(self.merge[level], torch.cat([h, skips[level]], dim=channels))
            for block in self.up[level]:
                h = block(h, emb, rows=rows)
        return h

    def _check_resolution(self, resolution: tuple[int, ...]) -> None:
        for level, (grid, modes) in enumerate(zip(self.grids(resolution), self.config.level_modes())):
            if any(n <= m for n, m in zip(grid, modes)):
                raise ValueError(
                    f"resolution {resolution} is too small for the uno backbone: level {level} has the grid {grid} "
                    f"and keeps {modes} Fourier modes; every spatial size must exceed n_modes {self.config.n_modes}")
