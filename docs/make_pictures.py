"""Regenerate the pictures of docs/pictures.md (docs/images/*.png) at tiny sizes, in well under a minute on a CPU.

    OMP_NUM_THREADS=1 python docs/make_pictures.py [--out docs/images]

Every picture is drawn by the package's own plotting function, from tiny stand-ins for trained models: a
"forecaster" that advects its last frame eastwards (sphere) or diagonally (torus) plus member perturbations
from a Gaussian random field that grow with the lead time, lat-lon fields shaped like z500 / t850 / u850, and
Gaussian random fields for the sample, posterior and super-resolution pictures.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

import funcdiff.io.plots as plots
from funcdiff.guidance.timed import make_timed_observation
from funcdiff.noise import GaussianRandomField
from funcdiff.sphere import grid_latitudes, grid_longitudes

SPHERE = ("z500", "t850", "u850")
SPHERE_UNITS = ("m2 s-2", "K", "m s-1")
DT_HOURS = 6.0
DPI = 70  # small PNGs for the docs (< 200 KB each)


def sphere_truth(leads: int, nlat: int = 24, nlon: int = 48) -> torch.Tensor:
    """z500, t850, u850-like fields on a lat-lon grid whose waves travel east. Shapes: -> (C, leads + 1, H, W)."""
    lat = np.deg2rad(grid_latitudes(nlat, nlon))[:, None]
    lon = np.deg2rad(grid_longitudes(nlon))[None, :]
    grf = GaussianRandomField(dim=2, smoothness=1.5, length_scale=0.1)
    eddies = grf.sample((1, 3, nlat, nlon), generator=torch.Generator().manual_seed(7))[0].double().numpy()
    frames = []
    for t in range(leads + 1):
        phase = lon - 0.12 * t
        wave = np.cos(lat) ** 2 * np.sin(2 * lat) ** 2 * np.sin(4 * phase)
        small = np.roll(eddies, t, axis=-1) * np.cos(lat)  # small-scale weather, drifting east
        z500 = 39000 + 22000 * np.cos(lat) ** 2 + 1500 * wave + 600 * small[0]
        t850 = 245 + 50 * np.cos(lat) ** 2 + 6 * wave + 2 * small[1]
        u850 = 30 * np.sin(2 * lat) ** 2 - 8 * np.cos(lat) ** 4 + 10 * wave + 4 * small[2]
        frames.append(np.stack([z500, t850, u850]))
    return torch.from_numpy(np.stack(frames, axis=1)).float()


def ensemble(truth: torch.Tensor, members: int, scale: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Members = truth + smooth perturbations growing like sqrt(lead). Shapes: truth (C, L, *S), scale (C,) ->
    (M, C, L, *S)."""
    c, leads, *spatial = truth.shape
    grf = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.15)
    noise = grf.sample((members * leads, c, *spatial), generator=torch.Generator().manual_seed(seed))
    noise = noise.reshape(members, leads, c, *spatial).movedim(1, 2).float()
    growth = torch.arange(1, leads + 1).float().sqrt()[None, None, :, None, None] / math.sqrt(leads)
    return truth[None] + scale[None, :, None, None, None] * growth * noise


def torus_truth(leads: int, n: int = 32) -> torch.Tensor:
    """A vorticity-like GRF advected diagonally on [0, 1)^2. Shapes: -> (1, leads + 1, n, n)."""
    grf = GaussianRandomField(dim=2, smoothness=2.5, length_scale=0.1)
    w0 = grf.sample((1, 1, n, n), generator=torch.Generator().manual_seed(3))[0, 0].float()
    return torch.stack([torch.roll(w0, (t, t), dims=(0, 1)) for t in range(leads + 1)])[None]


def forecast_pictures(out: Path, suffix: str = "") -> list[Path]:
    """The sphere map (every channel, 2000-01-01 06:00 start) and the torus forecast with assimilated sensors."""
    from funcdiff.io.plots import save_figure
    from funcdiff.tasks.forecast_io import forecast_figure

    leads = 12
    truth = sphere_truth(leads)
    members = ensemble(truth[:, 1:], 4, torch.tensor([800.0, 2.0, 3.0]))
    fig = forecast_figure(members, truth=truth[:, 1:], dt=DT_HOURS, channel_names=SPHERE, channel_units=SPHERE_UNITS,
                          grid="latlon", time_units="hours since 2000-01-01 00:00:00", init=(0, 1, 6.0))
    sphere = save_figure(fig, out / f"sphere_forecast{suffix}.png")
    w = torus_truth(leads)
    sensors = make_timed_observation(w, [4, 8, 12], 0.1, fraction=40, channel_names=("w",), seed=1)
    fig = forecast_figure(ensemble(w[:, 1:], 4, torch.tensor([0.5])), truth=w[:, 1:], dt=0.1, channel_names=("w",),
                          channel_units=("1",), init=(3, 0, 0.0), observations=sensors)
    torus = save_figure(fig, out / f"forecast{suffix}.png")
    return [sphere, torus]


def sphere_scores() -> "xr.Dataset":
    """Scores of the sphere ensemble against its truth (the dataset `funcdiff evaluate` writes)."""
    from funcdiff.io.forecast_file import ForecastContents
    from funcdiff.metrics import latitude_weights
    from funcdiff.tasks.evaluate import lead_scores, scores_to_dataset

    leads, (c, h, w) = 12, (len(SPHERE), 24, 48)
    truth = sphere_truth(leads).double()
    members = ensemble(truth[:, 1:].float(), 8, torch.tensor([800.0, 2.0, 3.0]), seed=1)[None].double()
    verifying = truth[None, :, 1:]
    clim = truth.mean(1, keepdim=True)[None]
    weights = torch.as_tensor(latitude_weights(grid_latitudes(h, w)))[:, None]
    refs = {"forecast": members, "persistence": truth[None, None, :, :1].expand(1, 1, c, leads, h, w),
            "climatology": clim[:, None].expand(1, 1, c, leads, h, w)}
    scores = {k: lead_scores(v, verifying, weights, climatology=clim, sphere=True) for k, v in refs.items()}
    layout = ForecastContents(channels=SPHERE, spatial=("latitude", "longitude"), init_index=np.array([0]),
                              init_frame=np.array([0]), lead=np.arange(1, leads + 1),
                              lead_time=DT_HOURS * np.arange(1, leads + 1))
    ds = scores_to_dataset(scores, layout, np.arange(leads), {})
    ds["channel_units"] = ("channel", list(SPHERE_UNITS))
    ds["lead_time"].attrs["units"] = "hours"
    return ds


def score_pictures(out: Path, suffix: str = "") -> list[Path]:
    from funcdiff.io.plots import save_figure
    from funcdiff.tasks.evaluate import scores_figure

    return [save_figure(scores_figure(sphere_scores()), out / f"scores{suffix}.png")]


def other_pictures(out: Path, suffix: str = "") -> list[Path]:
    """`funcdiff sample` (fields and spectra), `funcdiff solve` on the sphere (posterior.png) and `funcdiff
    upsample` (super-resolution of a 1-D trajectory in space and time)."""
    from funcdiff.guidance.observations import SparseObservation, random_sensors
    from funcdiff.io.plots import plot_samples_vs_data
    from funcdiff.tasks.problems import Task
    from funcdiff.tasks.solve import Posterior
    from funcdiff.tasks.super_resolution import plot_super_resolution

    grf = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.1)
    draw = lambda n, seed: 2.0 + grf.sample((3, 1, n, n), generator=torch.Generator().manual_seed(seed)).float().exp()
    rows = {"data": draw(32, 0), "samples 32²": draw(32, 1), "samples 64²": draw(64, 2)}
    samples = plot_samples_vs_data(rows, out / f"samples{suffix}.png", n_show=3, channel_name="a")
    truth = sphere_truth(0)[:1, 0][None]  # z500 (1, 1, H, W)
    task = Task(name="z500-reconstruct", problem="era5", direction="reconstruct", channels=("z500",),
                observed=("z500",), target=("z500",), grid="latlon")
    coords = random_sensors(60, tuple(truth.shape[2:]), grid="latlon", generator=torch.Generator().manual_seed(0))
    obs = SparseObservation(coords, channels=(0,), noise_std=0.0, grid="latlon", channel_names=("z500",))
    obs = obs.with_values(obs.observe(truth.double()))
    noise = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.1).sample(
        (4, 1, *truth.shape[2:]), generator=torch.Generator().manual_seed(5)).float()
    post = Posterior(task, ("z500",), truth + 400 * noise, obs, truth, ("z500",), units={"z500": "m2 s-2"})
    posterior = post.plot(out / f"posterior{suffix}.png")
    g1 = GaussianRandomField(dim=1, smoothness=2.0, length_scale=0.1)
    u0 = g1.sample((1, 1, 64), generator=torch.Generator().manual_seed(4))[0, 0].float()
    fine = torch.stack([torch.roll(u0, t) for t in range(32)])[None]  # (C, T, X): a travelling wave
    times = 0.05 * torch.arange(32, dtype=torch.float64)
    return [samples, posterior, plot_super_resolution(fine[:, ::4, ::4], fine, out / f"super_resolution{suffix}.png",
                                                      channel_name="u", coarse_times=times[::4], fine_times=times)]


def render(out: Path, suffix: str = "") -> list[Path]:
    return forecast_pictures(out, suffix) + score_pictures(out, suffix) + other_pictures(out, suffix)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "images")
    parser.add_argument("--suffix", default="")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    plots.DEFAULT_DPI = DPI
    torch.manual_seed(0)
    for path in render(args.out, args.suffix):
        shrink(path)
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def shrink(path: Path) -> None:
    """Re-save a PNG with a 256-colour palette: a third of the size, no visible change for these plots."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)  # keeps colour bars
    small.save(path, optimize=True)


if __name__ == "__main__":
    main()
