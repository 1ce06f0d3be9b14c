"""Invertible transforms between physical fields and the space the diffusion runs in.

A transform sits between the data and the noise: ``forward`` before noise is added, ``inverse`` after sampling.
:class:`IdentityTransform` is the default (today's physical-space path). :class:`WaveletTransform` is the
multi-level discrete wavelet transform of WDNO (Hu, Wang et al., "Wavelet Diffusion Neural Operator", ICLR 2025),
which diffuses the wavelet coefficients of whole space-time trajectories; here it is multi-level and over any
number of axes.

Each 1-D level is an exact, square (non-redundant) matrix: ``N`` samples give ``N/2`` approximation and ``N/2``
detail coefficients. Spatial axes use periodisation (PyWavelets' ``mode="periodization"``); ptwt's ``periodic``
mode pads and is redundant (16 samples give 11 + 11 coefficients with db4), so it is not used. The time axis is
not periodic; two boundary treatments with an exact inverse at the trajectory's own length are offered:
``time_boundary="periodization"`` (the default: the wrap from the last to the first frame costs detail energy
at the two ends only) and ``"boundary"`` (ptwt's QR-orthogonalised boundary filters, no wrap). Measured with
db4, one level, N = 32 samples of a smooth non-periodic signal (fraction of energy in the detail coefficients):
ramp 7.4e-3 (periodization) vs 2.3e-1 (boundary), cos(2.3t + 0.4) 2.3e-2 vs 1.8e-1, exp(-3t) 1.3e-2 vs 1.4e-3;
ptwt's boundary filters do not keep the vanishing moments, hence periodization as the default.

Orthogonal families (haar, dbN, symN, coifN) give an orthogonal transform: energy is preserved (Parseval) and
white noise stays white. Biorthogonal families (biorN.M, rbioN.M) are exact but not orthogonal: white noise
comes out correlated, with a different variance in every subband; they are allowed on periodic axes only.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from funcdiff.errors import UserError

TIME_AXIS = "time"
SPACE_AXES = ("x", "y", "z")
TIME_BOUNDARIES = ("periodization", "boundary")


class Transform(Protocol):
    """An invertible map from physical fields to the diffusion's coefficient space.

    Shapes: ``forward`` (B, C, *S) -> (B, C', *S'); ``inverse`` undoes it exactly. ``levels``: how many times
    the grid is halved (S' = S / 2^levels; 0 for the identity).
    """

    levels: int

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def inverse(self, z: torch.Tensor) -> torch.Tensor: ...

    def fit(self, x: torch.Tensor) -> Any: ...

    def state_dict(self) -> dict: ...


class IdentityTransform:
    """The physical-space path: ``forward`` and ``inverse`` return their input unchanged (the same tensor)."""

    kind = "identity"
    levels = 0  # no coarsening: coefficients live on the physical grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def fit(self, x: torch.Tensor) -> None:
        """Nothing to estimate."""
        return None

    def state_dict(self) -> dict:
        return {"kind": self.kind}

    def linear_forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def linear_adjoint(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def coefficients_per_channel(self) -> int:
        return 1


@dataclass(frozen=True)
class SubbandStats:
    """Per-subband normalisation, ``mean[c][b]`` and ``std[c][b]`` for channel c and subband b (plain floats)."""

    mean: list
    std: list


@functools.lru_cache(maxsize=64)
def _periodized_matrix(wavelet: str, n: int) -> torch.Tensor:
    """One level of the periodised DWT of length ``n`` as an (n, n) matrix: rows [approximation; detail].

    Column i is ``pywt.dwt(e_i, mode="periodization")``, so the matrix is PyWavelets' transform exactly.
    """
    import pywt

    eye = np.eye(n)
    cols = [np.concatenate(pywt.dwt(eye[i], wavelet, mode="periodization")) for i in range(n)]
    return torch.tensor(np.stack(cols, axis=1), dtype=torch.float64)


@functools.lru_cache(maxsize=64)
def _boundary_matrix(wavelet: str, n: int) -> torch.Tensor:
    """One level with ptwt's QR-orthogonalised boundary filters (no wrap-around) as an (n, n) orthogonal matrix."""
    import warnings

    from ptwt.matmul_transform import construct_boundary_a

    with warnings.catch_warnings():  # torch's sparse-tensor beta warning
        warnings.simplefilter("ignore")
        return construct_boundary_a(wavelet, n, dtype=torch.float64).to_dense()


@functools.lru_cache(maxsize=64)
def _level_matrices(wavelet: str, n: int, boundary: bool, orthogonal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(analysis, synthesis) matrices of one level; synthesis is the transpose (orthogonal) or the inverse."""
    analysis = _boundary_matrix(wavelet, n) if boundary else _periodized_matrix(wavelet, n)
    synthesis = analysis.T.contiguous() if orthogonal else torch.linalg.inv(analysis)
    return analysis, synthesis


def _apply_along(x: torch.Tensor, matrix: torch.Tensor, dim: int) -> torch.Tensor:
    """``matrix @ x`` along dimension ``dim``. Shapes: x (..., n, ...), matrix (n, n) -> same as x."""
    moved = torch.movedim(x, dim, -1)
    return torch.movedim(moved @ matrix.to(x).T, -1, dim)


def _max_level(n: int) -> int:
    """How many times ``n`` can be halved into even lengths: each level needs an even length."""
    level = 0
    while n % 2 == 0 and n >= 2:
        n //= 2
        level += 1
    return level


@functools.lru_cache(maxsize=32)
def _band_layout(sizes: tuple[int, ...], levels: int) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Where each coefficient of the Mallat pyramid goes in the channels-on-a-coarse-grid layout.

    The pyramid holds the approximation in the low corner and the level-j detail bands (j = 1 finest .. levels)
    in the other corners of the level-j block. Band order: approximation, then the details of level ``levels``
    down to level 1; within a level, the 2^d - 1 corners in ``itertools.product`` order. A level-j band has
    N/2^j points per axis; it is folded space-to-depth by f = 2^(levels - j) onto the coarse grid N/2^levels,
    the fine point q = p·f + s landing at coarse point p in channel s (so locality is kept).

    Returns (index (K, prod coarse) into the flattened pyramid, band id of each of the K = 2^(d·levels)
    channels, band names).
    """
    coarse = [n >> levels for n in sizes]
    bands = [(levels, (0,) * len(sizes))]
    for j in range(levels, 0, -1):
        bands += [(j, r) for r in itertools.product((0, 1), repeat=len(sizes)) if any(r)]
    rows, band_of, names = [], [], []
    for b, (j, corner) in enumerate(bands):
        f = 1 << (levels - j)
        for sub in itertools.product(range(f), repeat=len(sizes)):
            axes = [torch.arange(c) * f + s + r * (n >> j) for c, s, r, n in zip(coarse, sub, corner, sizes)]
            grid = torch.meshgrid(*axes, indexing="ij")
            rows.append(sum(g * math.prod(sizes[i + 1:]) for i, g in enumerate(grid)).flatten())
            band_of.append(b)
        names.append(f"a{j}" if not any(corner) else f"d{j}:" + "".join("ad"[r] for r in corner))
    return torch.stack(rows), torch.tensor(band_of), names


class WaveletTransform:
    """Multi-level separable DWT over every axis after (B, C), coefficients as channels on the coarsest grid.

    WDNO (Hu, Wang et al., ICLR 2025) diffuses the wavelet coefficients of whole trajectories with one level;
    here any number of levels and axes. ``axes`` names the dimensions after (B, C) in order: ``"time"`` (not
    periodic, see ``time_boundary``) or a spatial name ``"x"``, ``"y"``, ``"z"`` (periodic). Every length must be
    divisible by 2^levels.

    Layout: with d axes and L levels, ``forward`` gives (B, C·2^(d·L), *[N/2^L]): channel c·2^(d·L) + k holds
    coefficient k of physical channel c; k runs over the approximation, then the detail bands of level L down to
    1, each folded space-to-depth onto the coarse grid (see :func:`_band_layout`; ``band_names`` lists them).
    After :meth:`fit`, ``forward`` also normalises each (channel, band) to zero mean and unit standard
    deviation, and ``inverse`` undoes it.

    Shapes: forward (B, C, *S) -> (B, C·2^(d·L), *[n / 2^L for n in S]); inverse the reverse.
    """

    kind = "wavelet"

    def __init__(self, wavelet: str = "db4", levels: int = 1, axes: Sequence[str] = ("x",),
                 time_boundary: str = "periodization", stats: SubbandStats | None = None):
        import pywt

        if wavelet not in pywt.wavelist(kind="discrete"):
            raise UserError(f"unknown wavelet {wavelet!r}; discrete families: {pywt.wavelist(kind='discrete')}")
        self.wavelet, self.levels, self.axes = wavelet, int(levels), tuple(str(a) for a in axes)
        self.time_boundary, self.stats = time_boundary, stats
        self.orthogonal = bool(pywt.Wavelet(wavelet).orthogonal)
        self._check_options()

    def _check_options(self) -> None:
        if self.levels < 1:
            raise UserError(f"wavelet levels must be >= 1, got {self.levels}")
        bad = [a for a in self.axes if a not in (TIME_AXIS, *SPACE_AXES)]
        if bad or not self.axes or len(set(self.axes)) != len(self.axes):
            raise UserError(f"wavelet axes {list(self.axes)} must be distinct names from "
                            f"{[TIME_AXIS, *SPACE_AXES]}, one per dimension after (batch, channel)")
        if self.time_boundary not in TIME_BOUNDARIES:
            raise UserError(f"unknown time_boundary {self.time_boundary!r}; valid: {list(TIME_BOUNDARIES)}")
        if self._uses_boundary_filters() and not self.orthogonal:
            raise UserError(f"wavelet {self.wavelet!r} is biorthogonal; the non-periodic time boundary needs an "
                            "orthogonal family (haar, dbN, symN, coifN) or time_boundary='periodization'")

    def _uses_boundary_filters(self) -> bool:
        return TIME_AXIS in self.axes and self.time_boundary == "boundary"

    def max_levels(self, sizes: Sequence[int]) -> int:
        """The deepest decomposition the grid ``sizes`` allows: every axis must stay even at every level."""
        return min(_max_level(int(n)) for n in sizes)

    def _check_sizes(self, sizes: Sequence[int]) -> None:
        if len(sizes) != len(self.axes):
            raise UserError(f"wavelet axes {list(self.axes)} name {len(self.axes)} dimension(s) but the field has "
                            f"{len(sizes)} after (batch, channel): shape {tuple(sizes)}")
        deepest = self.max_levels(sizes)
        if self.levels > deepest:
            raise UserError(f"wavelet levels={self.levels} is too deep for the grid {tuple(sizes)} "
                            f"(axes {list(self.axes)}): the maximum level is {deepest}, since every level halves "
                            "each axis and needs an even length")

    def _matrices(self, sizes: Sequence[int], level: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(analysis, synthesis) per axis for the block of size N/2^level."""
        return [_level_matrices(self.wavelet, n >> level, self.time_boundary == "boundary" and a == TIME_AXIS,
                                self.orthogonal) for a, n in zip(self.axes, sizes)]

    def _block(self, sizes: Sequence[int], level: int) -> tuple:
        return (..., *[slice(0, n >> level) for n in sizes])

    def pyramid(self, x: torch.Tensor) -> torch.Tensor:
        """Mallat pyramid in place of the field: level by level, transform the approximation block.

        Shapes: (B, C, *S) -> (B, C, *S).
        """
        sizes = x.shape[2:]
        self._check_sizes(sizes)
        out = x.clone()
        for level in range(self.levels):
            block = out[self._block(sizes, level)]
            for i, (analysis, _) in enumerate(self._matrices(sizes, level)):
                block = _apply_along(block, analysis, 2 + i)
            out[self._block(sizes, level)] = block
        return out

    def inverse_pyramid(self, p: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`pyramid`. Shapes: (B, C, *S) -> (B, C, *S)."""
        sizes = p.shape[2:]
        self._check_sizes(sizes)
        out = p.clone()
        for level in reversed(range(self.levels)):
            block = out[self._block(sizes, level)]
            for i, (_, synthesis) in enumerate(self._matrices(sizes, level)):
                block = _apply_along(block, synthesis, 2 + i)
            out[self._block(sizes, level)] = block
        return out

    def band_names(self, sizes: Sequence[int]) -> list[str]:
        """Subband names in layout order: ``a<L>`` then ``d<j>:<a|d per axis>`` (d = detail along that axis)."""
        return _band_layout(tuple(int(n) for n in sizes), self.levels)[2]

    def band_ids(self, sizes: Sequence[int]) -> torch.Tensor:
        """Band (index into :meth:`band_names`) of each of the K = 2^(d·levels) coefficients per channel.

        Shapes: (K,) long; channel c·K + k of ``forward``'s output belongs to band ``band_ids[k]``.
        """
        return self._layout(sizes)[1]

    def _layout(self, sizes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, band_of, _ = _band_layout(tuple(int(n) for n in sizes), self.levels)
        return index, band_of

    def raw_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised coefficients as (B, C, K, *coarse), K = 2^(d·levels) in layout order."""
        sizes = x.shape[2:]
        index, _ = self._layout(sizes)
        flat = self.pyramid(x).flatten(2)[:, :, index.to(x.device)]
        return flat.reshape(*x.shape[:2], index.shape[0], *[n >> self.levels for n in sizes])

    def raw_inverse(self, coeffs: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
        """Undo :meth:`raw_forward`. Shapes: (B, C, K, *coarse) -> (B, C, *sizes)."""
        index, _ = self._layout(sizes)
        flat = coeffs.new_zeros(*coeffs.shape[:2], math.prod(sizes))
        flat = flat.index_copy(2, index.flatten().to(coeffs.device), coeffs.flatten(2))
        return self.inverse_pyramid(flat.reshape(*coeffs.shape[:2], *sizes))

    def _band_view(self, stats_field: list, sizes: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """A (C, K, 1, ...) tensor of one statistic per channel and layout position."""
        _, band_of = self._layout(sizes)
        table = torch.tensor(stats_field, dtype=like.dtype, device=like.device)[:, band_of.to(like.device)]
        return table.reshape(*table.shape, *[1] * len(sizes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Physical field -> (normalised, if fitted) coefficients as channels. See the class docstring."""
        coeffs = self.raw_forward(x)
        if self.stats is not None:
            sizes = x.shape[2:]
            coeffs = (coeffs - self._band_view(self.stats.mean, sizes, coeffs)) / self._band_view(
                self.stats.std, sizes, coeffs)
        return coeffs.flatten(1, 2)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Coefficients as channels -> physical field, exactly undoing :meth:`forward`."""
        k = 1 << (len(self.axes) * self.levels)
        if z.ndim != 2 + len(self.axes) or z.shape[1] % k:
            raise UserError(f"wavelet coefficients of shape {tuple(z.shape)} do not fit axes {list(self.axes)} "
                            f"with levels={self.levels}: expected (B, C·{k}, *coarse grid)")
        sizes = [n << self.levels for n in z.shape[2:]]
        coeffs = z.reshape(z.shape[0], z.shape[1] // k, k, *z.shape[2:])
        if self.stats is not None:
            coeffs = coeffs * self._band_view(self.stats.std, sizes, coeffs) + self._band_view(
                self.stats.mean, sizes, coeffs)
        return self.raw_inverse(coeffs, sizes)

    def linear_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The linear part of :meth:`forward` (no mean shift): raw coefficients divided by their band's std.

        This is how a zero-mean random field (noise) maps into the normalised coefficient space.
        Shapes: (B, C, *S) -> (B, C·K, *coarse).
        """
        coeffs = self.raw_forward(x)
        if self.stats is not None:
            coeffs = coeffs / self._band_view(self.stats.std, x.shape[2:], coeffs)
        return coeffs.flatten(1, 2)

    def linear_adjoint(self, z: torch.Tensor) -> torch.Tensor:
        """The adjoint of :meth:`linear_forward` (orthogonal families only, where the synthesis is the transpose).

        Shapes: (B, C·K, *coarse) -> (B, C, *S).
        """
        if not self.orthogonal:
            raise UserError(f"the adjoint of the {self.wavelet!r} transform is not implemented: it is biorthogonal; "
                            "use an orthogonal family (haar, dbN, symN, coifN)")
        k = 1 << (len(self.axes) * self.levels)
        sizes = [n << self.levels for n in z.shape[2:]]
        coeffs = z.reshape(z.shape[0], z.shape[1] // k, k, *z.shape[2:])
        if self.stats is not None:
            coeffs = coeffs / self._band_view(self.stats.std, sizes, coeffs)
        return self.raw_inverse(coeffs, sizes)

    def coefficients_per_channel(self) -> int:
        """K = 2^(d·levels): the coefficient channels of one physical channel."""
        return 1 << (len(self.axes) * self.levels)

    def fit(self, x: torch.Tensor, min_std: float = 1e-8) -> SubbandStats:
        """Estimate per-(channel, band) mean and std from training fields, store and return them.

        Bands whose std is below ``min_std`` (e.g. constant data) keep std 1. Shapes: x (B, C, *S).
        """
        coeffs = self.raw_forward(x).double()
        _, band_of = self._layout(x.shape[2:])
        mean, std = [], []
        for b in range(int(band_of.max()) + 1):
            band = coeffs[:, :, band_of == b].transpose(0, 1).flatten(1)  # (C, everything else)
            mean.append(band.mean(1))
            std.append(band.std(1, correction=0))
        mean_t, std_t = torch.stack(mean, 1), torch.stack(std, 1)
        std_t = torch.where(std_t < min_std, torch.ones_like(std_t), std_t)
        self.stats = SubbandStats(mean=mean_t.tolist(), std=std_t.tolist())
        return self.stats

    def state_dict(self) -> dict:
        """Plain JSON: the options and, once fitted, the per-subband statistics."""
        out: dict[str, Any] = {"kind": self.kind, "wavelet": self.wavelet, "levels": self.levels,
                               "axes": list(self.axes), "time_boundary": self.time_boundary}
        if self.stats is not None:
            out["stats"] = {"mean": self.stats.mean, "std": self.stats.std}
        return out


TRANSFORMS = {"identity": IdentityTransform, "wavelet": WaveletTransform}


def build_transform(kind: str = "identity", **options: Any) -> IdentityTransform | WaveletTransform:
    """A transform by name (``identity`` or ``wavelet``) with its keyword options."""
    if kind not in TRANSFORMS:
        raise UserError(f"unknown transform kind {kind!r}; valid: {sorted(TRANSFORMS)}")
    return TRANSFORMS[kind](**options)


def transform_from_state_dict(state: dict) -> IdentityTransform | WaveletTransform:
    """Rebuild a transform (with its fitted statistics) from :meth:`state_dict`'s plain dict."""
    options = {k: v for k, v in state.items() if k not in ("kind", "stats")}
    transform = build_transform(state.get("kind", "identity"), **options)
    if "stats" in state:
        transform.stats = SubbandStats(mean=state["stats"]["mean"], std=state["stats"]["std"])
    return transform
