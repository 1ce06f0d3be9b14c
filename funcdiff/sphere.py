"""Regular latitude-longitude grids on the unit sphere and a spherical-harmonic transform (SHT) on them.

Grids. A field on the sphere is a tensor ``(..., H, W)`` with rows at ascending latitude (south to north, the
layout of :mod:`funcdiff.data.era5`) and columns at longitudes ``2π k / W`` (k = 0..W-1). Two regular grids are
recognised from the shape alone:

* **without poles** (``W == 2 H``): latitudes ``-90 + (i + ½)·180/H`` degrees -- the WeatherBench 2 conservative
  grids (5.625° = 32×64, 2.8125° = 64×128, 1.40625° = 128×256);
* **with poles** (``W == 2 (H - 1)``): latitudes ``-90 + i·180/(H - 1)`` -- ERA5's native 0.25° grid (721×1440), WB2's
  1.5° grid (121×240) and torch-harmonics' "equiangular" grid (33×64, 65×128).

Any other shape is rejected (ValueError naming both rules).

Transform. With the orthonormal spherical harmonics ``Y_l^m(θ, φ) = P̄_l^m(sin lat) e^{imφ}`` (∫|Y|² dΩ = 1) a real
band-limited field is ``f = Σ_{l<L} Σ_{|m|≤l} a_lm Y_l^m`` with ``a_{l,-m} = (-1)^m conj(a_lm)``; only m ≥ 0 is
stored, as an ``(L, M)`` complex array (zero where m > l), the layout of torch-harmonics' ``RealSHT`` with
``norm="ortho"`` so that neuraloperator's ``SphericalConv`` can use it. Analysis integrates over longitude with the
FFT (exact for |m| < W/2) and over latitude with the interpolatory quadrature on the grid's nodes in sin(lat):
Fejér's first rule without poles, Clenshaw–Curtis with poles (both exact for polynomials of degree < H;
Waldvogel 2006, "Fast construction of the Fejér and Clenshaw–Curtis quadrature rules", BIT 46). Synthesis is a
sum over degrees and an inverse FFT, exact at any grid point. So ``isht(sht(f)) = f`` for fields of degree < H/2,
and synthesis of the same coefficients on two grids gives the same function at shared points.

The associated Legendre functions come from the standard three-term recurrence in float64 (Holmes and
Featherstone 2002, J. Geodesy 76, eqs. (11)-(13)); tables of size L·M·H are cached per grid.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from funcdiff.utils import rfftn

GRID_RULES = ("without poles: W = 2H, latitudes -90 + (i + 1/2) 180/H", "with poles: W = 2(H - 1), latitudes -90 + i 180/(H - 1)")


def grid_kind(nlat: int, nlon: int) -> str:
    """``"midpoint"`` (no pole rows, W = 2H) or ``"poles"`` (W = 2(H - 1)); ValueError for other shapes."""
    nlat, nlon = int(nlat), int(nlon)
    if nlat >= 2 and nlon == 2 * nlat:
        return "midpoint"
    if nlat >= 3 and nlon == 2 * (nlat - 1):
        return "poles"
    raise ValueError(f"a {nlat}x{nlon} grid is not a regular lat-lon grid of the sphere ({'; '.join(GRID_RULES)})")


def grid_latitudes(nlat: int, nlon: int) -> np.ndarray:
    """Latitudes of the rows in degrees north, ascending. Shapes: -> (H,) float64."""
    if grid_kind(nlat, nlon) == "midpoint":
        return -90.0 + (np.arange(nlat) + 0.5) * 180.0 / nlat
    return -90.0 + np.arange(nlat) * 180.0 / (nlat - 1)


def grid_longitudes(nlon: int) -> np.ndarray:
    """Longitudes of the columns in degrees east, 0 ... 360 - 360/W. Shapes: -> (W,) float64."""
    return np.arange(nlon) * 360.0 / nlon


def band_limit(nlat: int, nlon: int) -> int:
    """Degrees a grid resolves: L = W/2 (l = 0..L-1 and m < W/2 are all distinct on the grid's longitudes)."""
    grid_kind(nlat, nlon)
    return nlon // 2


@functools.lru_cache(maxsize=32)
def quadrature_weights(nlat: int, nlon: int) -> np.ndarray:
    """Weights w_i of ∫_{-1}^{1} g(x) dx ≈ Σ w_i g(x_i) at x_i = sin(lat_i): exact for polynomials of degree < H
    (Fejér's first rule without poles, Clenshaw–Curtis with them). They sum to 2. Shapes: -> (H,) float64."""
    theta = np.deg2rad(90.0 - grid_latitudes(nlat, nlon))  # colatitude; x = cos(theta) = sin(lat)
    k = np.arange(nlat)
    chebyshev = np.cos(np.outer(k, theta))  # T_k(x_i)
    moments = np.zeros(nlat)
    even = k[k % 2 == 0].astype(np.float64)
    moments[k % 2 == 0] = 2.0 / (1.0 - even**2)
    return np.linalg.solve(chebyshev, moments)


@functools.lru_cache(maxsize=32)
def legendre_table(lmax: int, mmax: int, nlat: int, nlon: int) -> np.ndarray:
    """Orthonormal associated Legendre functions P̄_l^m(sin lat_i), normalised so that 2π ∫ P̄² dx = 1.

    Shapes: -> (mmax, lmax, H) float64, zero where m > l.
    """
    x = np.sin(np.deg2rad(grid_latitudes(nlat, nlon)))
    s = np.sqrt(np.clip(1.0 - x * x, 0.0, None))
    table = np.zeros((mmax, lmax, nlat))
    p_mm = np.full(nlat, math.sqrt(1.0 / (4.0 * math.pi)))
    for m in range(min(mmax, lmax)):
        if m > 0:
            p_mm = -math.sqrt((2 * m + 1) / (2 * m)) * s * p_mm
        table[m, m] = p_mm
        if m + 1 < lmax:
            table[m, m + 1] = math.sqrt(2 * m + 3) * x * p_mm
        for l in range(m + 2, lmax):
            a = math.sqrt((4 * l * l - 1) / (l * l - m * m))
            b = math.sqrt(((l - 1) ** 2 - m * m) / (4 * (l - 1) ** 2 - 1))
            table[m, l] = a * (x * table[m, l - 1] - b * table[m, l - 2])
    return table


@functools.lru_cache(maxsize=16)
def sht_tables(lmax: int, mmax: int, nlat: int, nlon: int, dtype: torch.dtype, device: str
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The Legendre table P̄ (mmax, lmax, H) of :func:`legendre_table` and the same times the quadrature weights,
    in ``dtype`` on ``device``: what :class:`GridSHT` integrates and synthesises with. One copy per key in the
    process (least recently used beyond 16 keys dropped): at ERA5's 0.25° grid with lmax = mmax = 240 the pair is
    332 MB in float32, which every block of an SFNO used to hold on its own."""
    legendre = torch.from_numpy(legendre_table(lmax, mmax, nlat, nlon))
    weighted = legendre * torch.from_numpy(quadrature_weights(nlat, nlon))
    return legendre.to(device=device, dtype=dtype), weighted.to(device=device, dtype=dtype)


@torch.compiler.assume_constant_result
def _sht_constants(lmax: int, mmax: int, nlat: int, nlon: int, dtype: torch.dtype, device: str
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sht_tables` as constants of a ``torch.compile`` graph: dynamo would otherwise trace the Legendre
    recursion in numpy op by op into the graph (inductor's C++ compiler crashed on the kernel at 64x128). The grid
    sizes are specialised here, also under ``dynamic=True`` or the default automatic dynamic shapes: one graph per
    grid, no graph break (``TORCH_LOGS=graph_breaks,recompiles`` on three grids: a recompile per grid)."""
    return sht_tables(lmax, mmax, nlat, nlon, dtype, device)


class GridSHT(nn.Module):
    """Forward and inverse real SHT on the regular grids of this module, for any (lmax, mmax).

    The same call signature as neuraloperator's SHT wrapper (``sht(x, s, norm, grid)``, ``isht(coeffs, s, norm,
    grid)``; ``norm`` must be "ortho", ``grid`` is ignored because the grid is known from the shape), so a
    ``SphericalConv``'s ``sht_handle`` can be replaced by it. Tables are built once per (grid, degrees) in float64,
    cast to the input's dtype and device and shared by every instance (:func:`sht_tables`): the blocks of an SFNO
    and the copies of a model (EMA) hold one set, not one each.

    Shapes: sht (..., H, W) real -> (..., L, M) complex; isht (..., L, M) complex -> (..., H, W) real.
    """

    def _tables(self, lmax: int, mmax: int, nlat: int, nlon: int, dtype: torch.dtype, device) -> tuple:
        if mmax > nlon // 2:
            raise ValueError(f"mmax={mmax} exceeds the {nlon // 2} longitudinal modes of a {nlat}x{nlon} grid")
        if torch.compiler.is_compiling():
            return _sht_constants(lmax, mmax, nlat, nlon, dtype, str(torch.device(device)))
        return sht_tables(lmax, mmax, nlat, nlon, dtype, str(torch.device(device)))

    def sht(self, x: torch.Tensor, s: tuple[int, int] | None = None, norm: str = "ortho",
            grid: str | None = None) -> torch.Tensor:
        """Coefficients a_lm (l < lmax, m < mmax) of a real field; ``s = (lmax, mmax)`` (default: H, W/2)."""
        _check_norm(norm)
        nlat, nlon = x.shape[-2:]
        lmax, mmax = s if s is not None else (nlat, nlon // 2)
        _, weighted = self._tables(int(lmax), int(mmax), nlat, nlon, x.dtype, x.device)
        fourier = longitude_fourier(x, int(mmax)).transpose(-1, -2)  # (..., M, H)
        real = torch.einsum("...mh,mlh->...lm", fourier.real, weighted)
        imag = torch.einsum("...mh,mlh->...lm", fourier.imag, weighted)
        return torch.complex(real, imag)

    def isht(self, coeffs: torch.Tensor, s: tuple[int, int] | None = None, norm: str = "ortho",
             grid: str | None = None) -> torch.Tensor:
        """The real field of coefficients ``coeffs`` (..., L, M) on the grid ``s = (H, W)`` (default: (L, 2L))."""
        _check_norm(norm)
        lmax, mmax = coeffs.shape[-2:]
        nlat, nlon = s if s is not None else (lmax, 2 * lmax)
        dtype = coeffs.real.dtype
        legendre, _ = self._tables(int(lmax), int(mmax), int(nlat), int(nlon), dtype, coeffs.device)
        real = torch.einsum("...lm,mlh->...hm", coeffs.real, legendre)
        imag = torch.einsum("...lm,mlh->...hm", coeffs.imag, legendre)
        fourier = torch.complex(real, imag)
        pad = nlon // 2 + 1 - mmax
        if pad > 0:
            fourier = nn.functional.pad(fourier, (0, pad))
        return torch.fft.irfft(fourier, n=int(nlon), dim=-1, norm="forward")


    def isht_transpose(self, x: torch.Tensor, lmax: int, mmax: int) -> torch.Tensor:
        """The transpose of :meth:`isht` as a real-linear map, in the same complex layout: for a real field v,
        ``g_lm = c_m Σ_i P̄_l^m(x_i) Σ_k v_ik e^{-imφ_k}`` with c_0 = 1, c_m = 2, so that
        ``<v, isht(a)> = Σ_lm Re(conj(g_lm) a_lm)`` (m = 0 counted once, imaginary parts of m = 0 ignored).
        Shapes: (..., H, W) -> (..., lmax, mmax) complex."""
        nlat, nlon = x.shape[-2:]
        legendre, _ = self._tables(int(lmax), int(mmax), nlat, nlon, x.dtype, x.device)
        fourier = torch.fft.rfft(x, dim=-1)[..., :mmax].transpose(-1, -2)  # (..., M, H)
        real = torch.einsum("...mh,mlh->...lm", fourier.real, legendre)
        imag = torch.einsum("...mh,mlh->...lm", fourier.imag, legendre)
        weight = torch.full((int(mmax),), 2.0, dtype=x.dtype, device=x.device)
        weight[0] = 1.0
        return torch.complex(real * weight, imag * weight)


def longitude_fourier(x: torch.Tensor, mmax: int) -> torch.Tensor:
    """2π times the first ``mmax`` Fourier coefficients of x along longitude (the last axis), ``norm="forward"``:
    ``F_m = (2π/W) Σ_k x_k e^{-2πi mk/W}``, m < mmax: the longitude integral of the SHT analysis. Shapes: (..., W) real
    -> (..., mmax) complex. Under autograd its backward pass is one inverse real FFT (:func:`funcdiff.utils.rfftn`)."""
    return rfftn(x, (-1,), norm="forward", keep=int(mmax), scale=2 * math.pi)


def _check_norm(norm: str) -> None:
    if norm != "ortho":
        raise ValueError(f"GridSHT implements the orthonormal SHT only (norm='ortho'), got {norm!r}")


def angular_power(coeffs: torch.Tensor) -> torch.Tensor:
    """Angular power spectrum C_l = Σ_m |a_lm|² / (2l + 1) of a real field's coefficients (m > 0 counted twice).

    Shapes: (..., L, M) complex -> (..., L) real.
    """
    power = coeffs.abs() ** 2
    power = power[..., :1].sum(-1) + 2 * power[..., 1:].sum(-1)
    degrees = torch.arange(coeffs.shape[-2], device=coeffs.device, dtype=power.dtype)
    return power / (2 * degrees + 1)


# ------------------------------------------------------------------------------------- grid cells and area weights
def latitude_bounds(lat: np.ndarray) -> np.ndarray:
    """Cell edges of ascending latitudes in degrees: midpoints between points, ±90 at the ends (as in
    WeatherBench 2's ``_latitude_cell_bounds``; a point at a pole gets a half cell).

    Shapes: lat (H,) -> (H + 1,).
    """
    lat = np.asarray(lat, dtype=np.float64)
    if lat.ndim != 1 or lat.size < 2 or not np.all(np.diff(lat) > 0):
        raise ValueError(f"latitudes must be ascending with at least 2 points, got {lat}")
    return np.concatenate([[-90.0], (lat[:-1] + lat[1:]) / 2, [90.0]])


def cell_area_weights(lat: np.ndarray) -> np.ndarray:
    """Relative cell areas sin(upper edge) - sin(lower edge) of a lat-lon grid, normalised to mean 1
    (WeatherBench 2, Rasp et al. 2024, ``get_lat_weights``). Exactly ∝ cos(lat) on equiangular grids whose
    points avoid the poles (the 5.625° / 1.40625° WB2 grids); pole points get their half cell, not 0.

    Shapes: lat (H,) ascending degrees -> (H,) float64.
    """
    edges = np.deg2rad(latitude_bounds(lat))
    area = np.sin(edges[1:]) - np.sin(edges[:-1])
    return area / area.mean()
