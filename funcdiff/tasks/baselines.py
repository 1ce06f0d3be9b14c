"""Baselines for sparse-observation tasks: interpolation (+ numerical solver) and a deterministic FNO regressor.

* ``interpolation``: scipy ``griddata`` (piecewise-linear on a Delaunay triangulation of the sensors, nearest
  neighbour outside their convex hull) of the observed values onto the grid. For a forward task the
  interpolated input channel is handed to the task's numerical solver (e.g. Darcy: threshold the interpolated
  coefficient at 7.5, solve -div(a grad u) = 1); a channel that is both observed and reported is just
  interpolated. Inverse tasks have no interpolation baseline (it would need the inverse of the PDE).
* ``fno-regression``: the models' FNO backbone with a fixed noise level, trained to map masked observations
  (observed values scattered on the grid, zeros elsewhere, plus one mask channel per observed channel) to the
  full target channels in normalised units — a deterministic point estimate conditioned on nothing else.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from scipy.interpolate import griddata
from torch import Tensor, nn

from funcdiff.guidance.observations import SparseObservation
from funcdiff.models.registry import build_backbone
from funcdiff.tasks.problems import Task, get_task


def grid_points(spatial: Sequence[int], grid: str) -> np.ndarray:
    """Coordinates of every grid point, row-major. Shapes: returns (prod(S), d) float64 in domain units."""
    axes = [np.arange(n) / (n if grid == "periodic" else max(n - 1, 1)) for n in spatial]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def _with_periodic_images(coords: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sensors plus their shifted copies by ±1 along each axis, so interpolation wraps around the torus."""
    d = coords.shape[1]
    shifts = np.stack(np.meshgrid(*[[-1.0, 0.0, 1.0]] * d, indexing="ij"), axis=-1).reshape(-1, d)
    pts = np.concatenate([coords + s for s in shifts])
    return pts, np.concatenate([values] * len(shifts), axis=-1)


def interpolate_observations(coords: Tensor, values: Tensor, spatial: Sequence[int], grid: str) -> Tensor:
    """Piecewise-linear interpolation of scattered sensor values onto a grid, nearest-neighbour fill outside.

    Args:
        coords: sensor coordinates (N, d) in domain units; values: (B, C, N) in any units.
        spatial: grid shape S; grid: ``"periodic"`` (x_i = i/n, wraps around) or ``"node"`` (x_i = i/(n-1)).
    Shapes: returns (B, C, *S), float32, in the units of ``values``.
    """
    coords_np = coords.detach().double().cpu().numpy()
    vals = values.detach().double().cpu().numpy()
    if coords_np.ndim != 2 or vals.ndim != 3 or vals.shape[2] != coords_np.shape[0]:
        raise ValueError(f"need coords (N, d) and values (B, C, N); got {tuple(coords.shape)}, {tuple(values.shape)}")
    if coords_np.shape[1] != len(spatial):
        raise ValueError(f"sensors have d={coords_np.shape[1]} coordinates but the grid is {tuple(spatial)}")
    targets = grid_points(spatial, grid)
    pts = coords_np
    if grid == "periodic":
        pts, vals = _with_periodic_images(coords_np, vals)
    out = np.empty((*vals.shape[:2], targets.shape[0]))
    for b in range(vals.shape[0]):
        for c in range(vals.shape[1]):
            out[b, c] = _interp_one(pts, vals[b, c], targets)
    return torch.from_numpy(out.reshape(*vals.shape[:2], *spatial)).float()


def _interp_one(points: np.ndarray, values: np.ndarray, targets: np.ndarray) -> np.ndarray:
    if points.shape[1] == 1:
        order = np.argsort(points[:, 0])
        return np.interp(targets[:, 0], points[order, 0], values[order])
    linear = griddata(points, values, targets, method="linear")
    holes = np.isnan(linear)
    if holes.any():
        linear[holes] = griddata(points, values, targets[holes], method="nearest")
    return linear


def interpolation_baseline(task: str | Task, observation: SparseObservation, spatial: Sequence[int]) -> Tensor:
    """The interpolation baseline's estimate of the task's target channels (physical units).

    Shapes: observation values (B, C_obs, N) -> (B, len(task.target), *S).
    Raises ValueError for inverse tasks (no interpolation baseline) and missing values.
    """
    task = get_task(task)
    if observation.values is None:
        raise ValueError("the interpolation baseline needs observation values")
    interp = interpolate_observations(observation.coords, observation.values, spatial, task.grid)
    names = observation.channel_names or tuple(task.channels[i] for i in observation.channels)
    if set(task.target) <= set(names):
        return interp[:, [list(names).index(c) for c in task.target]]
    if task.direction == "forward" and task.forward_solver is not None:
        return task.forward_solver(interp[:, [list(names).index(task.observed[0])]])
    raise ValueError(f"task {task.name!r} ({task.direction}) has no interpolation baseline")


def scatter_to_grid(observation: SparseObservation, values: Tensor, spatial: Sequence[int]) -> Tensor:
    """Observed values at their nearest grid node plus a 0/1 mask per observed channel.

    Shapes: values (B, C_obs, N) -> (B, 2·C_obs, *S) = [values on the grid, masks].
    """
    scale = torch.tensor([n if observation.grid == "periodic" else n - 1 for n in spatial], dtype=torch.float64)
    idx = torch.round(observation.coords * scale).long()
    idx = torch.minimum(idx, torch.tensor(spatial) - 1) if observation.grid == "node" else idx % torch.tensor(spatial)
    strides = [math.prod(spatial[k + 1:]) for k in range(len(spatial))]
    flat = sum(idx[:, k] * strides[k] for k in range(len(spatial)))
    b, c = values.shape[:2]
    grid_vals = torch.zeros(b, c, math.prod(spatial), dtype=values.dtype, device=values.device)
    grid_vals[:, :, flat.to(values.device)] = values
    mask = torch.zeros_like(grid_vals)
    mask[:, :, flat.to(values.device)] = 1.0
    return torch.cat([grid_vals, mask], dim=1).reshape(b, 2 * c, *spatial)


class FNORegression(nn.Module):
    """Deterministic FNO from masked observations to target channels (normalised units).

    The backbone is :class:`funcdiff.models.fno.NoiseConditionedFNO` evaluated at a fixed noise code 0.
    Shapes: forward (B, 2·C_obs, *S) -> (B, C_target, *S).
    """

    def __init__(self, num_observed: int, num_target: int, n_modes: Sequence[int], hidden_channels: int = 32,
                 n_layers: int = 4) -> None:
        super().__init__()
        self.backbone = build_backbone("fno", in_channels=2 * num_observed, out_channels=num_target,
                                       n_modes=list(n_modes), hidden_channels=hidden_channels, n_layers=n_layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device))


def random_masked_inputs(fields: Tensor, observed: Sequence[int], fraction: float,
                         generator: torch.Generator) -> Tensor:
    """Training inputs: each sample keeps a random ``fraction`` of grid points of the observed channels.

    Shapes: fields (B, C, *S) -> (B, 2·len(observed), *S) = [masked values, masks] (same mask for all
    observed channels of a sample).
    """
    b, spatial = fields.shape[0], fields.shape[2:]
    keep = torch.rand((b, 1, *spatial), generator=generator) < fraction
    mask = keep.to(fields.dtype).expand(b, len(observed), *spatial)
    return torch.cat([fields[:, list(observed)] * mask, mask], dim=1)


def train_fno_regression(task: str | Task, fields: Tensor, *, fraction: float, n_modes: Sequence[int],
                         steps: int = 500, batch_size: int = 16, lr: float = 2e-3, hidden_channels: int = 32,
                         n_layers: int = 4, seed: int = 0, device: str | torch.device = "cpu") -> FNORegression:
    """Train :class:`FNORegression` on normalised joint fields with random sensor masks (relative-L2 loss).

    Args:
        fields: normalised training fields (N, C, *S) in the task's channel order.
        fraction: fraction of grid points observed per sample (fresh random mask each step).
    """
    task = get_task(task)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # parameter initialisation; the data order uses ``gen``
    model = FNORegression(len(task.observed), len(task.target), n_modes, hidden_channels, n_layers).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    target = list(task.target_index)
    for _ in range(steps):
        idx = torch.randint(0, fields.shape[0], (batch_size,), generator=gen)
        batch = fields[idx]
        inputs = random_masked_inputs(batch, task.observed_index, fraction, gen).to(device)
        truth = batch[:, target].to(device)
        err = (model(inputs) - truth).flatten(1).norm(dim=1) / truth.flatten(1).norm(dim=1).clamp_min(1e-6)
        opt.zero_grad(set_to_none=True)
        err.mean().backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def fno_regression_predict(model: FNORegression, observation: SparseObservation, spatial: Sequence[int],
                           encode_observed: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
    """Apply a trained regressor to observations (values already in normalised units unless ``encode_observed``
    maps them there). Shapes: values (B, C_obs, N) -> (B, C_target, *S) normalised."""
    values = observation.values.float()
    if encode_observed is not None:
        values = encode_observed(values)
    return model(scatter_to_grid(observation, values, spatial))
