"""A noise-conditioned Fourier neural operator (FNO) backbone for diffusion in function space.

Fourier layers come from ``neuraloperator`` (``SpectralConv`` with dense weights, via
:class:`~funcdiff.models.spectral.PeriodicSpectralConv`, which fixes its odd-grid inverse shift); the per-sample noise
conditioning (embedding + FiLM) is ours, because neuraloperator 2.0.0's AdaIN takes one embedding for the
whole batch. Works for fields (B, C, *S) with any number of periodic spatial dims on [0, 1)^d, including
space-time trajectories (B, C, T, H, W), where time is treated as one more periodic axis.

Block (the DDPM/EDM UNet residual block transplanted to FNO; Li et al. 2021 for the Fourier layer)::

    h = SpectralConv(x) + W x            # global (truncated Fourier) + local (pointwise) linear maps
    h = GELU(FiLM(GroupNorm(h), emb))    # per-sample scale/shift from the noise embedding
    x = x + ChannelMLP(h)                # pointwise two-layer MLP, residual

Every stage is either pointwise, a spectral convolution that only touches modes below ``n_modes``, or a
GroupNorm whose statistics are means over space (quadrature of an integral), so the same weights define
the same operator at every resolution.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from funcdiff.models.backbone import Backbone
from funcdiff.models.conditioning import (FiLM, NoiseEmbedding, PointwiseLinear, cached_features,
                                         periodic_grid_features)
from funcdiff.models.spectral import PeriodicSpectralConv, RowLayoutSpectral, from_rows, to_rows
from funcdiff.utils import (append_dims, eager_autograd, expects_repeated_vjps, input_grads_in_use,
                            keep_freed_memory, record_tensor_inputs)

POSITIONAL_EMBEDDINGS = (None, "grid")


@dataclass(frozen=True)
class FNOConfig:
    """How to build a :class:`NoiseConditionedFNO`.

    Attributes:
        in_channels: channels of the input field (the diffused state).
        out_channels: channels of the output field (equal to ``in_channels`` for a denoiser).
        n_modes: Fourier modes kept per spatial dim (e.g. (16, 16)); frequencies |k| <= n_modes/2. Every
            input grid must be strictly larger than ``n_modes`` along each dim.
        hidden_channels: width of the Fourier blocks.
        n_layers: number of Fourier blocks.
        emb_dim: size of the noise embedding (even).
        positional_embedding: None or "grid" (append sin/cos(2 pi x_i) for each dim).
        noise_channel: append c_noise broadcast to (B, 1, *S) as an input channel, so per-element noise
            levels reach the network pointwise (averaged over channels).
        noise_per_channel: append c_noise broadcast to (B, in_channels, *S), one input channel per state
            channel: with frames stacked as channels (forecasting), each frame's own noise level (rolling
            diffusion, Ruhe et al. 2024) reaches the network.
        cond_channels: clean conditioning channels appended to the input (a forecaster's history frames).
        norm_groups: GroupNorm groups in each block (``hidden_channels`` = instance norm; 0 = no norm).
        mlp_ratio: hidden width of each block's channel MLP, as a multiple of ``hidden_channels``.
    """

    in_channels: int
    out_channels: int
    n_modes: tuple[int, ...]
    hidden_channels: int = 32
    n_layers: int = 4
    emb_dim: int = 64
    positional_embedding: str | None = "grid"
    noise_channel: bool = False
    noise_per_channel: bool = False
    cond_channels: int = 0
    norm_groups: int = 8
    mlp_ratio: int = 2
    POSITIONAL_EMBEDDINGS: ClassVar[tuple] = POSITIONAL_EMBEDDINGS

    def __post_init__(self) -> None:
        modes = (self.n_modes,) if isinstance(self.n_modes, int) else tuple(int(m) for m in self.n_modes)
        object.__setattr__(self, "n_modes", modes)
        if not modes or min(modes) < 1:
            raise ValueError(f"n_modes must be a non-empty tuple of positive ints, got {self.n_modes}")
        for name in ("in_channels", "out_channels", "hidden_channels", "n_layers", "emb_dim", "mlp_ratio"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if int(self.cond_channels) < 0:
            raise ValueError(f"cond_channels must be >= 0, got {self.cond_channels}")
        if self.positional_embedding not in self.POSITIONAL_EMBEDDINGS:
            raise ValueError(
                f"positional_embedding must be one of {self.POSITIONAL_EMBEDDINGS}, got {self.positional_embedding!r}"
            )
        if self.norm_groups < 0 or (self.norm_groups and self.hidden_channels % self.norm_groups):
            raise ValueError(f"norm_groups={self.norm_groups} must be 0 or divide hidden_channels={self.hidden_channels}")

    def to_dict(self) -> dict:
        """Plain JSON-friendly dict (tuples become lists) that ``FNOConfig(**d)`` accepts back."""
        out = dataclasses.asdict(self)
        out["n_modes"] = list(self.n_modes)
        return out


class FNOBlock(nn.Module):
    """One noise-conditioned Fourier block (see the module docstring). Shapes: x (B, W, *S), emb (B, E) -> (B, W, *S)."""

    def __init__(self, config: FNOConfig, spectral: nn.Module | None = None) -> None:
        super().__init__()
        width = config.hidden_channels
        self.spectral = PeriodicSpectralConv(width, width, config.n_modes) if spectral is None else spectral
        self.pointwise = PointwiseLinear(width, width)
        self.norm = nn.GroupNorm(config.norm_groups, width) if config.norm_groups else nn.Identity()
        self.film = FiLM(config.emb_dim, width)
        self.act = nn.GELU()
        hidden = config.mlp_ratio * width
        self.mlp = nn.Sequential(PointwiseLinear(width, hidden), nn.GELU(), PointwiseLinear(hidden, width))

    def forward(self, x: torch.Tensor, emb: torch.Tensor, rows: bool = False) -> torch.Tensor:
        """The block on x (B, W, *S), or with ``rows`` on the row layout (B, n_1, .., W, n_d) of
        :func:`~funcdiff.models.spectral.to_rows` (needs a :class:`~funcdiff.models.spectral.RowLayoutSpectral`)."""
        # The same maths as ``x + mlp(act(film(norm(spectral(x) + pointwise(x)), emb)))``, fused for speed (issue 20):
        # the spectral layer adds its output into the pointwise skip in place; GroupNorm and FiLM become one
        # per-(sample, channel) affine map applied in one pass; GELUs run in place when autograd does not need
        # their input; the residual is added in place into the MLP's output.
        if rows and self._can_chunk(x):
            return self._forward_rows_chunked(x, emb)
        if rows:
            h = self.spectral.forward_rows_with_skip(x, self.pointwise)
            h = self._modulate(h, emb, rows=True)
            if self._can_fuse_mlp(h) and x.dtype == h.dtype:  # with the residual: x + mlp(act(h))
                lin1, lin2 = self.mlp[0].linear, self.mlp[2].linear
                tiles = (-1, h.shape[-2], h.shape[-1])
                return _GeluMLPRows.apply(h.reshape(tiles), lin1.weight, lin1.bias, lin2.weight, lin2.bias, True,
                                          x.reshape(tiles)).view(h.shape)
            else:
                h = (self.mlp[0].forward_rows_gelu(h) if _exact_gelu(self.act)
                     else self.mlp[0].forward_rows(self.act(h)))
                out = (self.mlp[2].forward_rows_gelu(h) if _exact_gelu(self.mlp[1])
                       else self.mlp[2].forward_rows(self.mlp[1](h)))
        else:
            h = self.spectral(x) + self.pointwise(x)
            h = _activate(self.act, self._modulate(h, emb, rows=False))
            out = self.mlp[2](_activate(self.mlp[1], self.mlp[0](h)))
        if out.dtype != torch.promote_types(out.dtype, x.dtype) or (torch.is_grad_enabled() and out.requires_grad):
            return x + out  # (in place on a view, autograd would copy the gradient: CopySlices)
        return out.add_(x)

    def _can_fuse_mlp(self, h: torch.Tensor) -> bool:
        """Training on the row layout: ``mlp(act(h))`` as one autograd function over chunks of rows
        (:class:`_GeluMLPRows`), float32/64 without autocast, exact GELUs, biases."""
        lin1, lin2 = self.mlp[0].linear, self.mlp[2].linear
        return (eager_autograd() and not torch.is_autocast_enabled(h.device.type)
                and h.dtype == lin1.weight.dtype and h.dtype in (torch.float32, torch.float64)
                and _exact_gelu(self.act) and _exact_gelu(self.mlp[1])
                and lin1.bias is not None and lin2.bias is not None)

    def _can_chunk(self, x: torch.Tensor) -> bool:
        return (_chunked_inference() and not torch.is_autocast_enabled(x.device.type) and x.is_contiguous()
                and x.dtype == self.pointwise.linear.weight.dtype and _exact_gelu(self.act) and _exact_gelu(self.mlp[1])
                and isinstance(self.norm, (nn.GroupNorm, nn.Identity)))

    def _forward_rows_chunked(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Inference on the row layout: after the spectral layer, everything up to the residual is pointwise, so it
        runs on chunks of grid rows small enough to stay in cache (normalise+FiLM, GELU, the MLP at 2x width,
        GELU, residual; whole samples per chunk when they fit, :func:`_row_chunks`) and the wide MLP hidden field never
        goes to memory; a chunk's activations go to scratch buffers reused by every chunk. The same maths as the
        unchunked path; on a CPU core about 2x faster from 512² up, where one field (32 MiB) no longer fits the
        cache."""
        h = self.spectral.forward_rows_with_skip(x, self.pointwise)
        batch, channels, n = h.shape[0], h.shape[-2], h.shape[-1]
        h3, x3 = h.view(batch, -1, channels, n), x.view(batch, -1, channels, n)
        scale, shift = self.film.proj(emb).to(h.dtype).chunk(2, dim=1)
        gain, offset = 1 + scale, shift  # (B, C)
        hidden = self.mlp[0].linear.out_features
        step = _rows_per_chunk(h, max(hidden, channels))
        norm = self.norm
        if isinstance(norm, nn.GroupNorm):
            mean, rstd = _group_norm_stats(h3, norm.num_groups, norm.eps, step)
            gain, offset = _fold_group_norm(gain, offset, mean, rstd, norm)
        chunks = _row_chunks(batch, h3.shape[1], step)
        if len(chunks) == 1:  # the whole field is one chunk (small grids; a GPU): one pass, no loop
            y = _scale_shift(h3, gain[:, None, :, None], offset[:, None, :, None]).view(-1, channels, n)
            out = _tile_linear(self.mlp[2].linear, torch.ops.aten.gelu_(
                _tile_linear(self.mlp[0].linear, torch.ops.aten.gelu_(y))))
            return out.add_(x.view(out.shape)).view(x.shape)
        out = torch.empty_like(x3)
        most = max((b.stop - b.start) * (r.stop - r.start) for b, r in chunks)
        act, wide = h3.new_empty(most, channels, n), h3.new_empty(most, hidden, n)  # scratch reused by every chunk
        for b, r in chunks:
            shape = (b.stop - b.start, r.stop - r.start, channels, n)
            tiles = shape[0] * shape[1]
            y = _scale_shift(h3[b, r], gain[b, None, :, None], offset[b, None, :, None], out=act[:tiles].view(shape))
            g = _tile_linear(self.mlp[0].linear, torch.ops.aten.gelu_(y.view(tiles, channels, n)), out=wide[:tiles])
            _tile_linear(self.mlp[2].linear, torch.ops.aten.gelu_(g), out=out[b, r].view(tiles, channels, n)).add_(
                x3[b, r].view(tiles, channels, n))
        return out.view(x.shape)

    def _modulate(self, h: torch.Tensor, emb: torch.Tensor, rows: bool) -> torch.Tensor:
        """``film(norm(h), emb)`` as one affine map per (sample, channel), ``h * a + b``, from GroupNorm's statistics
        (:func:`_group_norm_stats`, float32 under bf16/fp16 autocast) folded into FiLM (:func:`_fold_group_norm`);
        training in float32/64 goes through :class:`_GroupNormAffine`'s hand-written backward pass."""
        stat_dtype = torch.promote_types(h.dtype, torch.float32)  # float32 statistics under bf16/fp16 autocast
        scale, shift = self.film.proj(emb).to(stat_dtype).chunk(2, dim=1)  # (B, C) each
        batch = h.shape[0]
        channels = h.shape[-2] if rows else h.shape[1]
        h4 = h.reshape(batch, -1, channels, h.shape[-1]) if rows else h.reshape(batch, 1, channels, -1)
        gain, offset = 1 + scale, shift
        norm = self.norm
        if (isinstance(norm, nn.GroupNorm) and eager_autograd() and h4.dtype == stat_dtype
                and (h4.requires_grad or scale.requires_grad)):
            gamma = norm.weight.to(stat_dtype) if norm.affine else None
            beta = norm.bias.to(stat_dtype) if norm.affine else None
            a = gain if gamma is None else gain * gamma
            b = offset if beta is None else offset + gain * beta
            return _GroupNormAffine.apply(h4, a, b, norm.num_groups, norm.eps).view(h.shape)
        if isinstance(norm, nn.GroupNorm):
            h4 = h4.to(stat_dtype)
            mean, rstd = _group_norm_stats(h4, norm.num_groups, norm.eps)
            gain, offset = _fold_group_norm(gain, offset, mean, rstd, norm)
        elif not isinstance(norm, nn.Identity):
            if rows:
                raise ValueError("the row layout supports GroupNorm or no norm")
            return self.film(norm(h), emb)
        dtype = h4.dtype
        out = _scale_shift(h4, gain.to(dtype)[:, None, :, None], offset.to(dtype)[:, None, :, None])
        return out.view(h.shape)


class NoiseConditionedFNO(Backbone):
    """Fourier neural operator ``F(x, c_noise)`` conditioned on the noise level, for EDM-style denoisers.

    ``c_noise`` is either per sample (a float or (B,)) or per element (a tensor with x's number of dims,
    broadcastable to x, e.g. (B, 1, T, 1, 1) per frame). The blocks are FiLM-modulated by the embedding
    of the per-sample mean of c_noise; with ``config.noise_channel`` the full c_noise field (averaged over
    channels) is also appended as an input channel, so per-element levels reach the network pointwise.
    Without the noise channel a per-element c_noise only acts through its per-sample mean.

    ``cond`` (B, cond_channels, *S) is appended to the input when ``config.cond_channels`` > 0.

    Shapes: x (B, in_channels, *S), c_noise (B,) or broadcastable to x, cond (B, cond_channels, *S)
    -> (B, out_channels, *S).
    """

    name = "fno"

    def __init__(self, config: FNOConfig) -> None:
        super().__init__()
        keep_freed_memory()  # large fields without page faults on every call (see its docstring)
        self.config = config
        extra = (self._positional_channels(config) + int(config.noise_channel)
                 + config.in_channels * int(config.noise_per_channel) + config.cond_channels)
        self.embedding = NoiseEmbedding(config.emb_dim)
        self.lifting = PointwiseLinear(config.in_channels + extra, config.hidden_channels)
        self.blocks = nn.ModuleList(FNOBlock(config, self._spectral_layer(config)) for _ in range(config.n_layers))
        hidden = config.mlp_ratio * config.hidden_channels
        self.projection = nn.Sequential(
            PointwiseLinear(config.hidden_channels, hidden), nn.GELU(), PointwiseLinear(hidden, config.out_channels)
        )

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor | float, cond: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input(x, cond)
        c_sample, c_field = split_noise(c_noise, x)
        emb = self.embedding(c_sample)
        features = self._input_features(x, c_noise, c_field, cond)
        if not self.on_rows(tuple(x.shape[2:])):
            h = self.lifting(features)
            for block in self.blocks:
                h = block(h, emb)
            return self._project(h)
        # the row layout (see funcdiff.models.spectral.to_rows): every stage a GEMM or pass without copies
        h = self.lifting.forward_rows(to_rows(features))
        for block in self.blocks:
            h = block(h, emb, rows=True)
        return from_rows(self._project_rows(h))

    def on_rows(self, shape: tuple[int, ...] | None = None) -> bool:
        """Whether the blocks run on the row layout of :func:`~funcdiff.models.spectral.to_rows` (for an input grid
        ``shape``): every block's global layer is a :class:`~funcdiff.models.spectral.RowLayoutSpectral` (otherwise
        channels first)."""
        return all(isinstance(block.spectral, RowLayoutSpectral) for block in self.blocks)

    def _project(self, h: torch.Tensor) -> torch.Tensor:
        """The projection ``W2 act(W1 h + b1) + b2`` channels first (B, W, *S) -> (B, out, *S), its GELU by
        :func:`_activate` (in place at inference)."""
        lift, act, project = self.projection
        return project(_activate(act, lift(h)))

    def _project_rows(self, h: torch.Tensor) -> torch.Tensor:
        """The projection ``W2 gelu(W1 h + b1) + b2`` on the row layout (B, n_1, .., W, n_d) -> (B, .., out, n_d):
        chunks of rows (the 2W-wide hidden field never goes to memory) in float32/64 without autocast, training
        (:class:`_GeluMLPRows`) or inference (:func:`_chunked_mlp_rows`); otherwise layer by layer."""
        lift, act, project = self.projection
        tiles = h.reshape(-1, h.shape[-2], h.shape[-1])
        plain = (_exact_gelu(act) and not torch.is_autocast_enabled(h.device.type)
                 and h.dtype == lift.linear.weight.dtype and h.dtype in (torch.float32, torch.float64))
        if plain and _chunked_inference():
            out = _chunked_mlp_rows(tiles, lift.linear, project.linear, gelu_input=False)
        elif plain and eager_autograd() and lift.linear.bias is not None and project.linear.bias is not None:
            out = _GeluMLPRows.apply(tiles, lift.linear.weight, lift.linear.bias, project.linear.weight,
                                     project.linear.bias, False)
        else:
            h = lift.forward_rows(h)
            return project.forward_rows_gelu(h) if _exact_gelu(act) else project.forward_rows(act(h))
        return out.view(*h.shape[:-2], -1, h.shape[-1])

    def _input_features(self, x: torch.Tensor, c_noise: torch.Tensor | float, c_field: torch.Tensor,
                        cond: torch.Tensor | None) -> torch.Tensor:
        parts = [x] if cond is None else [x, cond.to(x.dtype)]
        grid = self._positional_features(tuple(x.shape[2:]), x.device, x.dtype)
        if grid is not None:
            parts.append(grid.expand(x.shape[0], *grid.shape))
        if self.config.noise_channel:
            parts.append(c_field.to(x.dtype))
        if self.config.noise_per_channel:
            c = torch.as_tensor(c_noise, dtype=x.dtype, device=x.device)
            parts.append(append_dims(c.expand(x.shape[0]) if c.ndim == 0 else c, x.ndim).expand_as(x))
        return torch.cat(parts, dim=1)

    def _check_input(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> None:
        cfg = self.config
        given = 0 if cond is None else cond.shape[1]
        if given != cfg.cond_channels or (cond is not None and cond.shape[2:] != x.shape[2:]):
            raise ValueError(f"the backbone expects {cfg.cond_channels} conditioning channels on x's grid, got "
                             f"{None if cond is None else tuple(cond.shape)} for x {tuple(x.shape)}")
        if x.ndim != 2 + len(cfg.n_modes):
            raise ValueError(
                f"x must be (B, C, *S) with {len(cfg.n_modes)} spatial dims (n_modes={cfg.n_modes}), "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[1] != cfg.in_channels:
            raise ValueError(f"expected {cfg.in_channels} input channels, got {x.shape[1]} (x shape {tuple(x.shape)})")
        self._check_resolution(tuple(x.shape[2:]))

    # Hooks a backbone on another domain overrides (see funcdiff.models.sfno): the spectral layer of a block, the
    # positional features (a band-limited function of position, identical at every resolution) and the grids
    # the spectral layer accepts.
    def _spectral_layer(self, config: FNOConfig) -> nn.Module | None:
        """The global linear map of a block (None: neuraloperator's periodic SpectralConv)."""
        return None

    def _positional_channels(self, config: FNOConfig) -> int:
        return 2 * len(config.n_modes) if config.positional_embedding == "grid" else 0

    def _positional_features(self, shape: tuple[int, ...], device, dtype) -> torch.Tensor | None:
        """(P, *shape) features appended to the input, or None."""
        if self.config.positional_embedding == "grid":
            return cached_features(periodic_grid_features, tuple(shape), torch.device(device), dtype)
        return None

    def _check_resolution(self, resolution: tuple[int, ...]) -> None:
        cfg = self.config
        if any(n <= m for n, m in zip(resolution, cfg.n_modes)):
            raise ValueError(
                f"resolution {resolution} is too small for n_modes {cfg.n_modes}: every spatial size must exceed "
                "n_modes so that the kept Fourier modes lie strictly below the grid's Nyquist frequency"
            )


def _chunked_inference() -> bool:
    """Whether inference may run over chunks of rows (:func:`_chunked_mlp_rows`, ``FNOBlock._forward_rows_chunked``):
    no autograd, and not while ``torch.compile`` traces (the compiler fuses the pointwise ops itself, and a loop over
    chunks would fix the graph to one grid size)."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


def _scale_shift(h: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """``h * gain + offset`` with gain and offset broadcast against h (per sample and channel: constant along the
    rows), into ``out`` if given. On a CPU a multiply and an in-place add: torch's ``addcmul`` with a broadcast addend
    leaves its vectorised loop and took 2.3x the time of the two on a 1 MiB field and 2.4x on 8 MiB (measured on an
    AVX2 core); on a GPU one ``addcmul``, one kernel."""
    if not cache_sized(h):
        return torch.addcmul(offset, h, gain, out=out)
    return torch.mul(h, gain, out=out).add_(offset)


def _fold_group_norm(gain: torch.Tensor, offset: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                     norm: nn.GroupNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """``gain * norm(h) + offset`` as one affine map ``gain' * h + offset'`` per (sample, channel), from GroupNorm's
    statistics per group: gain, offset (B, C), mean, rstd (B, G) -> gain', offset' (B, C). Broadcasts over the
    channels of a group instead of repeating the statistics per channel: four small ops (two without the norm's
    affine part), each one kernel on a GPU."""
    batch, channels = gain.shape
    groups = mean.shape[1]
    rstd = rstd[:, :, None]  # (B, G, 1)
    if norm.affine:
        rstd = rstd * norm.weight.view(groups, -1)  # (B, G, C/G)
        offset = torch.addcmul(offset, gain, norm.bias)
    gain = gain.view(batch, groups, -1) * rstd
    offset = torch.addcmul(offset.view(batch, groups, -1), gain, mean[:, :, None], value=-1)
    return gain.view(batch, channels), offset.view(batch, channels)


def _group_norm_stats(h: torch.Tensor, groups: int, eps: float,
                      rows_per_chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """GroupNorm's statistics of h (B, R, C, n) per group: mean and 1/sqrt(var + eps), (B, G) each,
    over (R, C/groups, n) per group. On a CPU two-pass (:func:`_group_norm_stats_two_pass`; under autograd through
    :class:`_GroupStats`); on a GPU one Welford reduction (:func:`_group_norm_stats_welford`)."""
    if not cache_sized(h) or torch.compiler.is_compiling():  # chunked passes are for a CPU core's cache; a GPU
        return _group_norm_stats_welford(h, groups, eps)  # (or a compiled graph) reduces in one kernel
    if torch.is_grad_enabled() and h.requires_grad:
        return _GroupStats.apply(h, groups, eps)
    return _group_norm_stats_two_pass(h, groups, eps, rows_per_chunk)


def _group_norm_stats_two_pass(h: torch.Tensor, groups: int, eps: float,
                               rows_per_chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_group_norm_stats` in two passes (the mean, then the squared norm of the centred field) from
    reductions along contiguous rows, the centred field made ``rows_per_chunk`` rows at a time so that it stays in
    cache (default: chunks of about :func:`chunk_bytes`); ``torch.var_mean`` (Welford) costs 10x more on a CPU at
    512². Shapes as there."""
    batch, rows, channels, n = h.shape
    count = rows * n * (channels // groups)
    mean = h.sum(-1).sum(1).view(batch, groups, -1).sum(-1) / count
    chunks = _row_chunks(batch, rows, rows_per_chunk or _rows_per_chunk(h, channels))
    if len(chunks) == 1:  # the whole batch is one chunk: one pass, no loop
        squares = _centred_squares(h, mean, groups)
    else:
        squares = h.new_zeros(batch, groups)
        for b, r in chunks:
            squares[b] += _centred_squares(h[b, r], mean[b], groups)
    return mean, (squares / count + eps).rsqrt()


def _centred_squares(h: torch.Tensor, mean: torch.Tensor, groups: int) -> torch.Tensor:
    """Σ (h - mean_g)² per sample and group: h (B, R, C, n), mean (B, G) -> (B, G). The field viewed as
    (B, R, G, C/G, n), so that the mean is constant over each contiguous (C/G, n) block and the subtraction and the
    norm run over long contiguous rows (0.76x the time of per-channel (C, n) rows at 64², measured)."""
    batch, rows, channels, n = h.shape
    centred = h.view(batch, rows, groups, channels // groups, n) - mean[:, None, :, None, None]
    return torch.linalg.vector_norm(centred, dim=(-2, -1)).square().sum(1)


class _GroupStats(torch.autograd.Function):
    """:func:`_group_norm_stats_two_pass` under autograd: the same forward pass, and a backward pass of one
    ``addcmul`` over h that saves only h (which the caller's affine map saves anyway). Autograd through the two
    passes would also keep the centred field of every block alive until the backward pass.

    d mean/dh = 1/count and d rstd/dh = -rstd³ (h - mean)/count per group (var is the mean of (h - mean)²; the
    deviations sum to zero). Shapes: h (B, R, C, n) -> mean, rstd (B, G)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, groups: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        mean, rstd = _group_norm_stats_two_pass(h, groups, eps)
        ctx.save_for_backward(h, mean, rstd)
        ctx.groups = groups
        return mean, rstd

    @staticmethod
    def backward(ctx, grad_mean: torch.Tensor, grad_rstd: torch.Tensor):
        h, mean, rstd = ctx.saved_tensors
        per_group = h.shape[2] // ctx.groups
        count = h.shape[1] * h.shape[3] * per_group
        slope = -grad_rstd * rstd**3 / count  # (B, G): the coefficient of h
        const = grad_mean / count - slope * mean
        return (_scale_shift(h, slope.repeat_interleave(per_group, 1)[:, None, :, None],
                             const.repeat_interleave(per_group, 1)[:, None, :, None]), None, None)


def _row_chunks(batch: int, rows: int, step: int) -> list[tuple[slice, slice]]:
    """(samples, rows) slices of a (B, R, ...) field in chunks of at most ``step`` rows, each contiguous: whole
    samples, as many per chunk as fit (one chunk when the batch fits), or, when one sample is larger, its rows
    ``step`` at a time."""
    if rows <= step:
        per_chunk = step // rows
        return [(slice(b, min(b + per_chunk, batch)), slice(0, rows)) for b in range(0, batch, per_chunk)]
    return [(slice(b, b + 1), slice(r, min(r + step, rows))) for b in range(batch) for r in range(0, rows, step)]


def _group_norm_stats_welford(h: torch.Tensor, groups: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_group_norm_stats` by one ``torch.var_mean`` (Welford) over (R, C/groups, n): one reduction kernel on
    a GPU, where the chunked two-pass version costs a dozen small launches per block. Shapes as there."""
    batch, rows, channels, n = h.shape
    var, mean = torch.var_mean(h.reshape(batch, rows, groups, channels // groups, n), dim=(1, 3, 4), correction=0)
    return mean, (var + eps).rsqrt()


class _GroupNormAffine(torch.autograd.Function):
    """``(h - mean_g) * rstd_g * a + b`` on h (B, R, C, n) with GroupNorm statistics over (R, C/G, n) and a, b (B, C).

    The training path of :meth:`FNOBlock._modulate`: one saved tensor (h) and a hand-written backward of four
    passes over h, where autograd through the same ops made about a dozen (the GroupNorm backward formula,
    per-(sample, channel) sums first)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, a: torch.Tensor, b: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
        per_group = h.shape[2] // groups
        mean, rstd = (v.repeat_interleave(per_group, 1) for v in _group_norm_stats(h, groups, eps))  # (B, C) each
        gain = a * rstd
        ctx.save_for_backward(h, a, mean, rstd)
        ctx.groups, ctx.count = groups, h.shape[1] * h.shape[3] * per_group
        return _scale_shift(h, gain[:, None, :, None], (b - gain * mean)[:, None, :, None])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, a, mean, rstd = ctx.saved_tensors
        batch, channels = a.shape
        grad = grad.contiguous()
        sum_g = grad.sum(-1).sum(1)  # (B, C)
        sum_gh = torch.linalg.vecdot(grad, h, dim=-1).sum(1)  # no (grad * h) temporary
        grad_a = rstd * (sum_gh - mean * sum_g)  # sum of grad * xhat
        grad_b = sum_g
        per_group = channels // ctx.groups

        def group_mean(v: torch.Tensor) -> torch.Tensor:
            return (v.view(batch, ctx.groups, per_group).sum(-1) / ctx.count).repeat_interleave(per_group, 1)

        m1, m2 = group_mean(a * sum_g), group_mean(a * grad_a)  # means over a group of dxhat and dxhat * xhat
        k_grad, k_h = rstd * a, -rstd * rstd * m2
        const = -rstd * m1 - k_h * mean
        grad_h = _scale_shift(grad, k_grad[:, None, :, None], const[:, None, :, None])
        grad_h.addcmul_(h, k_h[:, None, :, None])  # in place: vectorised with a broadcast factor
        return grad_h, grad_a, grad_b, None, None


class _GeluMLPRows(torch.autograd.Function):
    """``W2 gelu(W1 a(m) + b1) + b2`` per (C, n) tile of the row layout, m (T, C, n) -> (T, C_out, n), with
    ``a = gelu`` (a block's activation and channel MLP) or the identity (``gelu_input=False``: the projection):
    one function run over chunks of tiles so that the GELU outputs and the gradients at the hidden width are made
    and used while they are in cache (the training step's counterpart of :func:`_chunked_mlp_rows`). Saves m and the
    pre-activation z = W1 a(m) + b1, as the two :class:`~funcdiff.models.conditioning._GeluLinearRows` it replaces
    did; the GELUs are recomputed in the backward pass; weight gradients are one ``bmm`` per chunk summed over its
    tiles (``addbmm`` runs one small GEMM per tile). A chunk's GELU outputs and hidden-width gradients go to scratch
    buffers reused by every chunk, so they stay in cache (fresh ones per chunk cost about 5 % of a guided call at
    128², measured), and the GELU derivative is applied in place. An optional ``residual`` r (T, C_out, n) is added chunk by
    chunk while the output is in cache (a block's ``x + mlp(act(h))``: one pass over memory less each way).

    Built inside :func:`funcdiff.utils.repeated_vjps` (a caller that will differentiate the graph several times:
    MMPS's conjugate-gradient iterations, DPS's damped terms), the first backward pass keeps the GELU derivatives
    (:func:`_gelu_derivative`, made chunk by chunk) and the later passes multiply by them instead of evaluating erf
    and exp again: at 64² the first pass costs about 1.2x, every later one 0.6x (measured per MLP)."""

    @staticmethod
    def _chunks(m: torch.Tensor, hidden: int) -> list[slice]:
        step = _rows_per_chunk(m, max(hidden, m.shape[1]))
        return [slice(t, min(t + step, m.shape[0])) for t in range(0, m.shape[0], step)]

    @staticmethod
    def forward(ctx, m: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                b2: torch.Tensor, gelu_input: bool = True, residual: torch.Tensor | None = None) -> torch.Tensor:
        m = m.contiguous()
        hidden, tiles = w1.shape[0], m.shape[0]
        z = m.new_empty(tiles, hidden, m.shape[2])
        out = m.new_empty(tiles, w2.shape[0], m.shape[2])
        bias1, bias2 = b1[None, :, None], b2[None, :, None]
        chunks = _GeluMLPRows._chunks(m, hidden)
        step = chunks[0].stop
        act1 = m.new_empty(step, *m.shape[1:]) if gelu_input else None  # scratch reused by every chunk: in cache
        act2 = m.new_empty(step, hidden, m.shape[2])
        for c in chunks:
            size = c.stop - c.start
            g1 = torch.ops.aten.gelu.out(m[c], out=act1[:size]) if gelu_input else m[c]
            zc = torch.baddbmm(bias1, w1.expand(size, -1, -1), g1, out=z[c])
            g2 = torch.ops.aten.gelu.out(zc, out=act2[:size])
            out_c = torch.baddbmm(bias2, w2.expand(size, -1, -1), g2, out=out[c])
            if residual is not None:
                out_c.add_(residual[c])
        ctx.save_for_backward(m, z, w1, w2)
        record_tensor_inputs(ctx, m, w1, b1, w2, b2, gelu_input, residual)
        ctx.gelu_input = gelu_input
        ctx.keep_derivatives, ctx.derivatives = expects_repeated_vjps(), None  # see the class docstring
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        needs = input_grads_in_use(ctx)  # guidance's VJPs (x only) skip the weight gradients
        need_residual = len(needs) > 6 and needs[6]
        go = grad_out.contiguous()
        columns = _nonzero_columns(go)
        if columns is not None:  # a VJP seeded at a few sensors (guidance): only their columns
            grads = _GeluMLPRows._backward_columns(ctx, go, *columns, needs[:5])
        else:
            grads = _GeluMLPRows._backward_dense(ctx, go, needs[:5])
        return (*grads, None, grad_out if need_residual else None)[:len(ctx.needs_input_grad)]

    @staticmethod
    def _backward_dense(ctx, go: torch.Tensor, needs: tuple[bool, ...]) -> tuple[torch.Tensor | None, ...]:
        """The backward pass over every column of the output gradient go (T, C_out, n), chunk by chunk; returns the
        gradients of m, W1, b1, W2, b2 (None where not needed)."""
        m, z, w1, w2 = ctx.saved_tensors
        need_m, need_w1, need_b1, need_w2, need_b2 = needs
        grad_m = torch.empty_like(m) if need_m else None
        grad_w1 = torch.zeros_like(w1) if need_w1 else None
        grad_w2 = torch.zeros_like(w2) if need_w2 else None
        grad_b1 = w1.new_zeros(w1.shape[0]) if need_b1 else None
        grad_b2 = w2.new_zeros(w2.shape[0]) if need_b2 else None
        w1t, w2t = w1.t(), w2.t()
        chunks = _GeluMLPRows._chunks(m, w1.shape[0])
        step = chunks[0].stop  # scratch buffers for one chunk, reused by every chunk: they stay in cache
        dz_buf = z.new_empty(step, *z.shape[1:])
        act = z.new_empty(step, *z.shape[1:]) if need_w2 else None
        act_in = m.new_empty(step, *m.shape[1:]) if need_w1 and ctx.gelu_input else None
        da_buf = m.new_empty(step, *m.shape[1:]) if need_m and ctx.gelu_input else None
        keep = ctx.keep_derivatives and ctx.derivatives is None  # the first of several passes keeps GELU'
        if keep:
            ctx.derivatives = (torch.empty_like(z), torch.empty_like(m) if ctx.gelu_input else None)
        d_z, d_m = ctx.derivatives or (None, None)
        for c in chunks:
            go_c, z_c, m_c = go[c], z[c], m[c]
            size = c.stop - c.start
            if need_w2:
                g2 = torch.ops.aten.gelu.out(z_c, out=act[:size])
                grad_w2 += torch.bmm(go_c, g2.transpose(1, 2)).sum(0)
            if need_b2:
                grad_b2 += go_c.sum(-1).sum(0)  # contiguous axis first
            if not (need_m or need_w1 or need_b1):
                continue
            dz = torch.bmm(w2t.expand(size, -1, -1), go_c, out=dz_buf[:size])
            if keep:  # made chunk by chunk, while z's chunk is in cache
                _gelu_derivative(z_c, out=d_z[c])
                if d_m is not None:
                    _gelu_derivative(m_c, out=d_m[c])
            dz = dz.mul_(d_z[c]) if d_z is not None else torch.ops.aten.gelu_backward.grad_input(
                dz, z_c, grad_input=dz)  # in place
            if need_w1:
                g1 = torch.ops.aten.gelu.out(m_c, out=act_in[:size]) if ctx.gelu_input else m_c
                grad_w1 += torch.bmm(dz, g1.transpose(1, 2)).sum(0)
            if need_b1:
                grad_b1 += dz.sum(-1).sum(0)
            if need_m and ctx.gelu_input:
                da = torch.bmm(w1t.expand(size, -1, -1), dz, out=da_buf[:size])
                if d_m is not None:
                    torch.mul(da, d_m[c], out=grad_m[c])
                else:
                    torch.ops.aten.gelu_backward.grad_input(da, m_c, grad_input=grad_m[c])  # written once, in place
            elif need_m:
                torch.bmm(w1t.expand(size, -1, -1), dz, out=grad_m[c])
        return grad_m, grad_w1, grad_b1, grad_w2, grad_b2

    @staticmethod
    def _backward_columns(ctx, go: torch.Tensor, tiles: torch.Tensor, cols: torch.Tensor,
                          needs: tuple[bool, ...]) -> tuple[torch.Tensor | None, ...]:
        """The backward pass on the P columns ``go[tiles, :, cols]`` (P,) holding the nonzeros of the output
        gradient go (T, C_out, n): the layer is pointwise, so every other column's input gradient is zero and adds
        nothing to the weight gradients. Each column a row of a (P, width) matrix, one GEMM per product; returns the
        gradients of m, W1, b1, W2, b2 (None where not needed)."""
        m, z, w1, w2 = ctx.saved_tensors
        need_m, need_w1, need_b1, need_w2, need_b2 = needs
        go_p, z_p, m_p = go[tiles, :, cols], z[tiles, :, cols], m[tiles, :, cols]  # (P, C_out), (P, H), (P, C)
        dz = torch.ops.aten.gelu_backward(go_p @ w2, z_p)  # (P, H)
        grad_w2 = go_p.t() @ torch.nn.functional.gelu(z_p) if need_w2 else None
        grad_w1 = dz.t() @ (torch.nn.functional.gelu(m_p) if ctx.gelu_input else m_p) if need_w1 else None
        grad_m = None
        if need_m:
            da = dz @ w1  # (P, C)
            grad_m = m.new_zeros(m.shape)
            grad_m[tiles, :, cols] = torch.ops.aten.gelu_backward(da, m_p) if ctx.gelu_input else da
        return (grad_m, grad_w1, dz.sum(0) if need_b1 else None, grad_w2, go_p.sum(0) if need_b2 else None)


SPARSE_COLUMNS = 0.3  # the largest fraction of nonzero columns for which _GeluMLPRows's backward goes by columns
# (its time over the dense pass's on one AVX2 core, width 32: at 3 % of the columns 0.28x at 256², 0.34x at 512²;
# at 20 % 0.59x at 64², 0.66x at 256², 0.73x at 512²; at 40 % 0.92x, 1.03x, 1.13x; width 64 at 64²: 0.41x at 20 %,
# 0.69x at 40 %)


def _nonzero_columns(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The (tile, position) indices (P,) each of the columns ``g[t, :, j]`` of tiles g (T, C, n) that hold a nonzero,
    when they are at most ``SPARSE_COLUMNS`` of all columns, else None: the gradient of a guidance loss at a few
    sensors is zero off their interpolation stencils until the first non-pointwise layer. A strided probe of about
    1 % of g rejects a dense gradient (training) without a pass over it. On a CPU only: the count is read on the
    host, which a GPU would wait for (and a CUDA graph cannot record)."""
    if not cache_sized(g) or g.numel() == 0:
        return None
    probe = g.view(-1)[::97]
    if probe.count_nonzero() > SPARSE_COLUMNS * probe.numel():
        return None
    tiles, cols = g.abs().amax(dim=1).ne(0).nonzero(as_tuple=True)  # 0.1x the time of ne(0).any(1), measured
    if tiles.numel() > SPARSE_COLUMNS * g.shape[0] * g.shape[2]:
        return None
    return tiles, cols


def _gelu_derivative(t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """GELU'(t) = Φ(t) + t φ(t) (Hendrycks & Gimpel 2016) written into ``out`` (t's shape, contiguous):
    ``gelu_backward`` of ones, so that ``g * GELU'(t)`` equals ``gelu_backward(g, t)``; the ones are written into
    ``out`` first (a broadcast one is 1.3x slower: it leaves the contiguous vectorised loop, measured)."""
    return torch.ops.aten.gelu_backward.grad_input(out.fill_(1), t, grad_input=out)


def _chunked_mlp_rows(m: torch.Tensor, lin1: nn.Linear, lin2: nn.Linear, gelu_input: bool) -> torch.Tensor:
    """Inference: ``lin2(gelu(lin1(a(m))))`` on tiles m (T, C, n) -> (T, C_out, n), a = gelu or the identity, over
    chunks of tiles so that the hidden-width field never goes to memory: a chunk's activations go to scratch buffers
    reused by every chunk, so they stay in cache."""
    out = m.new_empty(m.shape[0], lin2.out_features, m.shape[2])
    chunks = _GeluMLPRows._chunks(m, lin1.out_features)
    step = chunks[0].stop  # scratch buffers for one chunk, reused by every chunk: they stay in cache
    act = m.new_empty(step, *m.shape[1:]) if gelu_input else None
    wide = m.new_empty(step, lin1.out_features, m.shape[2])
    for c in chunks:
        size = c.stop - c.start
        y = torch.ops.aten.gelu.out(m[c], out=act[:size]) if gelu_input else m[c]
        _tile_linear(lin2, torch.ops.aten.gelu_(_tile_linear(lin1, y, out=wide[:size])), out=out[c])
    return out


CHUNK_BYTES = 1 << 21  # the widest field of a chunk of rows on a CPU (2 MiB: best of 0.25-2 measured at 128²-512²)
# on a GPU each chunk costs kernel launches: 1 GiB (one chunk up to 2048² at width 64) measured best on an H200 from
# 0.5 MiB-1 GiB (benchmarks/chunk_size.py: at 1024² 0.45-0.52x the time of 16 MiB chunks, 2 MiB chunks 5-6x)
CUDA_CHUNK_BYTES = 1 << 30


def chunk_bytes(t: torch.Tensor) -> int:
    """The size in bytes of the widest field of one chunk of rows for the chunked row-layout paths on t's device:
    ``CHUNK_BYTES`` on a CPU, where a chunk must stay in a core's cache, else ``CUDA_CHUNK_BYTES``, where each chunk
    costs kernel launches (``benchmarks/chunk_size.py`` measures both). Read at call time, so a benchmark may set
    either."""
    return CHUNK_BYTES if cache_sized(t) else CUDA_CHUNK_BYTES


def _rows_per_chunk(t: torch.Tensor, width: int) -> int:
    """How many rows (tiles) of ``width`` channels by t's last axis, in t's dtype, make one chunk of about
    :func:`chunk_bytes` (at least one)."""
    return max(1, chunk_bytes(t) // (width * t.shape[-1] * t.element_size()))


def cache_sized(t: torch.Tensor) -> bool:
    """Whether t's device takes the code paths sized for a core's cache (a CPU: chunks of ``CHUNK_BYTES``, two-pass
    GroupNorm statistics) rather than those for a GPU (one chunk of ``CUDA_CHUNK_BYTES``, one Welford reduction).
    One place decides, so that ``benchmarks/profile_call.py --op-counts`` can count the GPU path's operators on a
    CPU by replacing it."""
    return t.device.type == "cpu"


def _tile_linear(linear: nn.Linear, y: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``linear`` on tiles y (T, C_in, n) -> (T, C_out, n), optionally written into ``out``."""
    weight = linear.weight.expand(y.shape[0], -1, -1)
    if linear.bias is None:
        return torch.bmm(weight, y) if out is None else torch.bmm(weight, y, out=out)
    bias = linear.bias[None, :, None]
    return torch.baddbmm(bias, weight, y) if out is None else torch.baddbmm(bias, weight, y, out=out)


def _exact_gelu(act: nn.Module) -> bool:
    return type(act) is nn.GELU and act.approximate == "none"


def _activate(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(x)``; an exact ``nn.GELU`` runs in place when autograd will not need x, and keeps its derivative for the
    backward passes when the graph will be differentiated several times (:class:`_KeptGelu`)."""
    if not _exact_gelu(act):
        return act(x)
    if torch.is_grad_enabled() and x.requires_grad:
        return _KeptGelu.apply(x) if expects_repeated_vjps() else act(x)
    return torch.ops.aten.gelu_(x)


class _KeptGelu(torch.autograd.Function):
    """The exact GELU for a graph built inside :func:`funcdiff.utils.repeated_vjps` (the channels-first paths): saves
    GELU'(x) instead of x, so that every backward pass is one multiplication instead of ``gelu_backward``'s erf and
    exp (the same products: :func:`_gelu_derivative`). Shapes: any -> the same."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(_gelu_derivative(x, out=torch.empty_like(x, memory_format=torch.contiguous_format)))
        return torch.nn.functional.gelu(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        derivative, = ctx.saved_tensors
        return grad * derivative


def split_noise(c_noise: torch.Tensor | float, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``c_noise`` into its per-sample mean (B,) and a channel-averaged field (B, 1, *S).

    Shapes: c_noise float, (B,), or with x.ndim dims broadcastable to x (B, C, *S)
    -> (B,), (B, 1, *S). The mean of a broadcast tensor equals the mean of its stored elements.
    """
    batch, spatial = x.shape[0], tuple(x.shape[2:])
    c = torch.as_tensor(c_noise, device=x.device, dtype=x.dtype)
    if c.ndim == 0:
        c = c.expand(batch)
    if c.ndim == 1:
        if c.shape[0] != 1 and c.shape[0] != batch:  # (not `in`: dynamo misreads it on symbolic sizes)
            raise ValueError(f"c_noise of shape {tuple(c.shape)} does not match batch size {batch}")
        c = c.expand(batch)
        return c, append_dims(c, x.ndim).expand(batch, 1, *spatial)
    if c.ndim != x.ndim or not _broadcasts_to(c.shape, x.shape):
        raise ValueError(f"c_noise of shape {tuple(c.shape)} must be (B,) or broadcastable to x {tuple(x.shape)}")
    c = c.expand(batch, *c.shape[1:])
    c_field = c.mean(dim=1, keepdim=True).expand(batch, 1, *spatial)
    return c.reshape(batch, -1).mean(dim=1), c_field


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False
