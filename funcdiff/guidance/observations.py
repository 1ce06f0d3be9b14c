"""Sparse point observations of fields, on or off the grid, at any sampling resolution.

An observation is a set of N sensors with coordinates ``coords`` (N, d) in domain units, the channels of the
field they observe, the observed ``values`` (B, C_obs, N) and the std of the Gaussian measurement noise.
:meth:`SparseObservation.observe` evaluates any field (B, C, *S) at the sensors by multilinear interpolation,
so the same sensors serve every grid resolution (the operator ``A`` of y = A x + noise).

Two grid conventions (an explicit argument, ``grid``):

* ``"periodic"``: cell grid x_i = i / n on the torus [0, 1) (the GRF / Navier–Stokes convention);
  interpolation wraps around, sensors must lie in [0, 1).
* ``"node"``: node grid x_i = i / (n - 1) on [0, 1] including the Dirichlet boundary (Darcy, Poisson,
  Helmholtz); sensors must lie in [0, 1].
* ``"latlon"``: stations on the sphere at (latitude, longitude) in degrees (latitude in [-90, 90], longitude in
  [0, 360)), fields on the regular lat-lon grids of :mod:`funcdiff.sphere` (latitude ascending); interpolation is
  bilinear in latitude and longitude, periodic in longitude, and constant in latitude beyond the outermost rows
  (the polar caps of grids without pole rows).

A sensor that sits on a grid node (to 1e-9 in grid units) reads that node's value exactly.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from torch import Tensor

from funcdiff.utils import device_constant

GRIDS = ("periodic", "node", "latlon")


def resolve_channels(requested: Sequence[str | int], available: Sequence[str] | None, n_channels: int | None = None
                     ) -> tuple[int, ...]:
    """Map channel names (or indices) to indices into ``available``.

    Raises ``ValueError`` listing the valid channel names for an unknown name or an index out of range.
    """
    out = []
    for ch in requested:
        if isinstance(ch, str):
            if available is None or ch not in available:
                raise ValueError(f"unknown channel {ch!r}; valid channel names: {list(available or [])}")
            out.append(list(available).index(ch))
        else:
            limit = len(available) if available is not None else n_channels
            if limit is not None and not 0 <= int(ch) < limit:
                raise ValueError(f"channel index {ch} out of range for {limit} channels "
                                 f"(valid channel names: {list(available or [])})")
            out.append(int(ch))
    if len(set(out)) != len(out):
        raise ValueError(f"channels {list(requested)} repeat a channel")
    return tuple(out)


def check_coords(coords: Tensor, grid: str) -> Tensor:
    """Validate sensor coordinates (N, d) for ``grid``; returns them as float64.

    Raises ``ValueError`` naming how many sensors lie outside the domain and one example coordinate.
    """
    if grid not in GRIDS:
        raise ValueError(f"unknown grid convention {grid!r}; valid: {GRIDS}")
    coords = torch.as_tensor(coords, dtype=torch.float64)
    if coords.ndim != 2 or coords.shape[0] < 1 or coords.shape[1] not in (1, 2, 3):
        raise ValueError(f"coords must have shape (N, d) with N >= 1 and d in 1..3, got {tuple(coords.shape)}")
    if not bool(torch.isfinite(coords).all()):
        raise ValueError("sensor coordinates contain NaN or Inf")
    if grid == "latlon":
        return _check_latlon(coords)
    upper_ok = coords < 1 if grid == "periodic" else coords <= 1
    bad = ~((coords >= 0) & upper_ok).all(dim=1)
    if bool(bad.any()):
        domain = "[0, 1)" if grid == "periodic" else "[0, 1]"
        example = [round(v, 6) for v in coords[bad][0].tolist()]
        raise ValueError(f"{int(bad.sum())} of {len(coords)} sensors lie outside the {grid} domain {domain}^d, "
                         f"e.g. {example}")
    return coords


def _check_latlon(coords: Tensor) -> Tensor:
    """(N, 2) stations as (latitude, longitude) degrees; longitudes wrapped to [0, 360)."""
    if coords.shape[1] != 2:
        raise ValueError(f"stations on the sphere are (latitude, longitude) pairs, got coords of shape "
                         f"{tuple(coords.shape)}")
    bad = coords[:, 0].abs() > 90
    if bool(bad.any()):
        raise ValueError(f"{int(bad.sum())} of {len(coords)} stations have a latitude outside [-90, 90] degrees, "
                         f"e.g. {coords[bad][0].tolist()}")
    return torch.stack([coords[:, 0], coords[:, 1] % 360.0], dim=1)


def _latlon_positions(coords: Tensor, spatial: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Stations (latitude, longitude) in degrees -> fractional row and column indices on the grid ``spatial``."""
    from funcdiff.sphere import grid_latitudes

    nlat, nlon = spatial
    lat = torch.from_numpy(grid_latitudes(nlat, nlon))
    spacing = float(lat[1] - lat[0])
    rows = ((coords[:, 0] - float(lat[0])) / spacing).clamp(0, nlat - 1)
    return rows, coords[:, 1] / 360.0 * nlon


def _axis_stencil(pos: Tensor, n: int, grid: str) -> tuple[Tensor, Tensor, Tensor]:
    """Left/right node indices and the right weight along one axis; ``pos`` in grid units (float64)."""
    snapped = torch.round(pos)
    pos = torch.where((pos - snapped).abs() < 1e-9, snapped, pos)
    if grid == "periodic":
        i0 = torch.floor(pos)
        w = pos - i0
        i0 = i0.long() % n
        return i0, (i0 + 1) % n, w
    if n < 2:
        raise ValueError("a node grid needs at least 2 points per axis")
    i0 = torch.clamp(torch.floor(pos), 0, n - 2)
    return i0.long(), i0.long() + 1, pos - i0


def interpolation_stencil(coords: Tensor, spatial: Sequence[int], grid: str) -> tuple[Tensor, Tensor]:
    """Flat indices and weights of multilinear interpolation at ``coords`` on a grid of shape ``spatial``.

    Shapes: coords (N, d); returns index (2^d, N) into the flattened grid and weights (2^d, N) (float64).
    """
    if len(spatial) != coords.shape[1]:
        raise ValueError(f"sensors have d={coords.shape[1]} coordinates but the field has spatial shape "
                         f"{tuple(spatial)}")
    if grid == "latlon":
        rows, cols = _latlon_positions(coords, spatial)
        stencils = [_axis_stencil(rows, spatial[0], "node"), _axis_stencil(cols, spatial[1], "periodic")]
    else:
        scale = [n if grid == "periodic" else n - 1 for n in spatial]
        stencils = [_axis_stencil(coords[:, k] * scale[k], n, grid) for k, n in enumerate(spatial)]
    strides = [math.prod(spatial[k + 1:]) for k in range(len(spatial))]
    index, weight = [], []
    for corner in itertools.product((0, 1), repeat=len(spatial)):
        idx = torch.zeros(coords.shape[0], dtype=torch.long)
        w = torch.ones(coords.shape[0], dtype=torch.float64)
        for k, side in enumerate(corner):
            i0, i1, wk = stencils[k]
            idx = idx + (i1 if side else i0) * strides[k]
            w = w * (wk if side else 1 - wk)
        index.append(idx)
        weight.append(w)
    return torch.stack(index), torch.stack(weight)


@dataclass(frozen=True, eq=False)
class SparseObservation:
    """Point observations y = A x + noise of some channels of a field.

    Args:
        coords: sensor coordinates (N, d) in domain units ([0, 1)^d periodic, [0, 1]^d node grid).
        channels: indices of the observed channels in the field (C_obs entries), e.g. ``(1,)`` for the
            solution of a joint (coefficient, solution) state. Use :meth:`for_channels` to give names.
        values: observed values (B_obs, C_obs, N) in the units of the field passed to :meth:`observe`
            (physical units if guidance decodes the model state); ``None`` for an operator without data yet.
            B_obs = 1 broadcasts over any batch.
        noise_std: std of the Gaussian measurement noise, one float or one per observed channel (field units).
        grid: ``"periodic"`` or ``"node"`` (see the module docstring).
        channel_names: names of the observed channels (stored in netCDF files), C_obs entries.
    """

    coords: Tensor
    channels: tuple[int, ...] = (0,)
    values: Tensor | None = None
    noise_std: float | tuple[float, ...] = 0.0
    grid: str = "periodic"
    channel_names: tuple[str, ...] | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "coords", check_coords(self.coords, self.grid))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not self.channels or min(self.channels) < 0 or len(set(self.channels)) != len(self.channels):
            raise ValueError(f"channels must be distinct non-negative indices, got {self.channels}")
        std = torch.as_tensor(self.noise_std, dtype=torch.float64).flatten()
        if std.numel() not in (1, self.num_channels) or not bool((std >= 0).all() & torch.isfinite(std).all()):
            raise ValueError(f"noise_std must be one non-negative float or one per observed channel "
                             f"({self.num_channels}), got {self.noise_std}")
        if self.channel_names is not None and len(self.channel_names) != self.num_channels:
            raise ValueError(f"{len(self.channel_names)} channel names for {self.num_channels} observed channels")
        if self.values is not None:
            object.__setattr__(self, "values", self._check_values(self.values))

    def __getstate__(self) -> dict:
        """Pickling leaves out the caches (stencils, copies on devices; remade on first use)."""
        return {**self.__dict__, "_cache": {}}

    @property
    def num_sensors(self) -> int:
        return self.coords.shape[0]

    @property
    def num_channels(self) -> int:
        return len(self.channels)

    @property
    def dim(self) -> int:
        return self.coords.shape[1]

    def noise_std_per_channel(self) -> Tensor:
        """Measurement-noise std per observed channel. Shapes: (C_obs,), float64."""
        std = torch.as_tensor(self.noise_std, dtype=torch.float64).flatten()
        return std.expand(self.num_channels).clone()

    def _check_values(self, values: Tensor) -> Tensor:
        values = torch.as_tensor(values)
        if values.ndim == 2:
            values = values.unsqueeze(0)
        expected = (self.num_channels, self.num_sensors)
        if values.ndim != 3 or tuple(values.shape[1:]) != expected:
            raise ValueError(f"observation values must have shape (B, {expected[0]}, {expected[1]}) "
                             f"(batch, observed channels, sensors), got {tuple(values.shape)}")
        bad = ~torch.isfinite(values)
        if bool(bad.any()):
            raise ValueError(f"observation values contain {int(bad.sum())} NaN/Inf entries")
        return values

    def with_values(self, values: Tensor) -> "SparseObservation":
        """A copy holding ``values`` (B, C_obs, N) (checked for shape and NaN/Inf)."""
        return replace(self, values=values)

    def stencil(self, spatial: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Cached interpolation stencil for grid shape ``spatial`` (see :func:`interpolation_stencil`)."""
        key = tuple(int(n) for n in spatial)
        if key not in self._cache:
            self._cache[key] = interpolation_stencil(self.coords, key, self.grid)
        return self._cache[key]

    def observe(self, x: Tensor) -> Tensor:
        """Evaluate the observed channels of ``x`` at the sensors (multilinear interpolation; differentiable).

        Shapes: x (B, C, *S) with len(S) = d -> (B, C_obs, N), in the units of x.
        """
        if x.ndim != self.dim + 2:
            raise ValueError(f"field must have shape (B, C, *S) with {self.dim} spatial dims, got {tuple(x.shape)}")
        if max(self.channels) >= x.shape[1]:
            names = f" {list(self.channel_names)}" if self.channel_names else ""
            raise ValueError(f"observation reads channels {self.channels}{names} but the field has only "
                             f"{x.shape[1]} channels")
        spatial = tuple(int(n) for n in x.shape[2:])
        index = device_constant(self._cache, ("index", spatial), x.device, lambda: self.stencil(spatial)[0])
        weight = device_constant(self._cache, ("weight", spatial), x.device, lambda: self.stencil(spatial)[1], x.dtype)
        channels = device_constant(self._cache, "channels", x.device, lambda: torch.tensor(self.channels))
        return (x.index_select(1, channels).flatten(2)[..., index] * weight).sum(dim=2)

    def residual(self, x: Tensor) -> Tensor:
        """y - A x. Shapes: x (B, C, *S) -> (B, C_obs, N); the stored values broadcast over B when B_obs = 1."""
        if self.values is None:
            raise ValueError("this observation holds no values; use with_values(...) first")
        obs = self.observe(x)
        if self.values.shape[0] not in (1, obs.shape[0]):
            raise ValueError(f"observation values are for {self.values.shape[0]} samples but the field batch "
                             f"is {obs.shape[0]}")
        return device_constant(self._cache, "values", obs.device, lambda: self.values, obs.dtype) - obs

    def relative_misfit(self, x: Tensor) -> Tensor:
        """‖y - A x‖ / ‖y‖ per sample (all observed channels together). Shapes: x (B, C, *S) -> (B,)."""
        r = self.residual(x).flatten(1)
        y = self.values.to(r).expand(x.shape[0], -1, -1).flatten(1)
        return r.norm(dim=1) / y.norm(dim=1).clamp(min=1e-30)

    @classmethod
    def for_channels(cls, coords: Tensor, channels: Sequence[str | int], model_channels: Sequence[str] | None,
                     **kwargs) -> "SparseObservation":
        """Build with channel *names* checked against the model's channel names (ValueError lists valid ones)."""
        idx = resolve_channels(channels, model_channels)
        names = tuple(model_channels[i] for i in idx) if model_channels is not None else None
        return cls(coords=coords, channels=idx, channel_names=names, **kwargs)


def random_sensors(count: int | float, spatial: Sequence[int] | int, *, grid: str = "periodic",
                   on_grid: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """Random distinct sensor coordinates in the domain.

    Args:
        count: number of sensors (int), or a fraction in (0, 1] of the grid's points (float).
        spatial: grid shape (an int for one axis of a 1-D grid is not allowed: pass a tuple for d > 1).
        on_grid: sensors on grid nodes (drawn without replacement) or uniform in the domain (continuous).
        generator: explicit random source.
    Shapes: returns (N, d), float64, in domain units.
    """
    spatial = (int(spatial),) if isinstance(spatial, int) else tuple(int(n) for n in spatial)
    if grid not in GRIDS:
        raise ValueError(f"unknown grid convention {grid!r}; valid: {GRIDS}")
    total = math.prod(spatial)
    n = round(count * total) if isinstance(count, float) else int(count)
    if not 1 <= n <= total:
        raise ValueError(f"sensor count {count} gives {n} sensors; need 1..{total} for grid {spatial}")
    if grid == "latlon":
        return _random_stations(n, spatial, on_grid, generator)
    if not on_grid:
        u = torch.rand(n, len(spatial), generator=generator, dtype=torch.float64)
        return u if grid == "node" else u.clamp(max=1 - 1e-12)
    flat = torch.randperm(total, generator=generator)[:n]
    idx = torch.stack(torch.unravel_index(flat, spatial), dim=1).double()
    scale = torch.tensor([m if grid == "periodic" else m - 1 for m in spatial], dtype=torch.float64)
    return idx / scale


def _random_stations(n: int, spatial: Sequence[int], on_grid: bool, generator: torch.Generator | None) -> Tensor:
    """``n`` distinct stations (latitude, longitude) in degrees: grid points, or uniform in area on the sphere."""
    from funcdiff.sphere import grid_latitudes, grid_longitudes

    if not on_grid:
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        return torch.stack([torch.rad2deg(torch.asin(2 * u[:, 0] - 1)), 360.0 * u[:, 1].clamp(max=1 - 1e-12)], dim=1)
    flat = torch.randperm(math.prod(spatial), generator=generator)[:n]
    rows, cols = torch.unravel_index(flat, tuple(spatial))
    lat = torch.from_numpy(grid_latitudes(*spatial))
    lon = torch.from_numpy(grid_longitudes(spatial[1]))
    return torch.stack([lat[rows], lon[cols]], dim=1)
