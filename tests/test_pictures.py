"""Pictures a scientist reads at a glance (issue 18): the figures are checked through their matplotlib objects
(axis labels, extents, colour maps and limits, colour-bar labels, titles, legends), without writing PNGs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402

from funcdiff.config import ForecastConfig  # noqa: E402
from funcdiff.guidance.timed import make_timed_observation  # noqa: E402
from funcdiff.noise import GaussianRandomField  # noqa: E402
from funcdiff.sphere import grid_latitudes, grid_longitudes  # noqa: E402

H, W, LEADS = 8, 16, 4


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _sphere_members():
    """z500 (absolute, 38,900..61,300 m² s⁻²) and u850 (signed) on an 8×16 lat-lon grid, 3 members, 4 leads."""
    lat = np.deg2rad(grid_latitudes(H, W))[:, None]
    lon = np.deg2rad(grid_longitudes(W))[None, :]
    z500 = 38900 + 22400 * np.cos(lat) ** 2 + 0 * lon
    u850 = 20 * np.sin(lon) + 0 * lat
    truth = torch.tensor(np.stack([z500, u850]), dtype=torch.float32)[:, None].expand(2, LEADS, H, W)
    members = truth[None] + 0.01 * torch.randn(3, 2, LEADS, H, W, generator=torch.Generator().manual_seed(0))
    return members, truth.clone()


def _map_axes(fig):
    return [ax for ax in fig.axes if ax.get_images() and ax.get_label() != "<colorbar>"]


def _colorbar_labels(fig):
    return [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_sphere_map_has_longitude_across_north_up_degrees_and_a_sequential_scale_for_z500():
    from funcdiff.tasks.forecast_io import forecast_figure

    members, truth = _sphere_members()
    fig = forecast_figure(members, truth=truth, dt=6.0, channel_names=("z500", "u850"),
                          channel_units=("m2 s-2", "m s-1"), grid="latlon",
                          time_units="hours since 2000-01-01 00:00:00", init=(0, 1, 6.0))
    axes = _map_axes(fig)
    titles = " ".join(ax.get_title() for ax in axes)
    assert "z500" in titles and "u850" in titles  # every channel drawn
    assert "+6 h" in titles  # lead times in hours
    assert "2000-01-01 06:00" in fig._suptitle.get_text() and "trajectory 0" in fig._suptitle.get_text()
    first = axes[0]
    im = first.get_images()[0]
    assert im.get_array().shape == (H, W)  # rows = latitude (up), columns = longitude (across)
    assert im.origin == "lower"
    west, east, south, north = im.get_extent()
    assert (south, north) == (-90.0, 90.0) and east - west == pytest.approx(360.0)
    np.testing.assert_allclose(im.get_array()[0], truth[0, 0, 0].numpy())  # row 0 = southernmost latitude
    assert any("longitude" in ax.get_xlabel() for ax in axes) and any("latitude" in ax.get_ylabel() for ax in axes)
    # z500 (absolute, far from 0): sequential over the data range, truth and members on one scale
    z = [a.get_images()[0] for a in axes[:4 * len(_leads(fig))]]
    assert {a.get_cmap().name for a in z} == {"viridis"}
    lo, hi = z[0].get_clim()
    assert lo == pytest.approx(float(members[:, 0].min()), rel=1e-3) and hi == pytest.approx(
        float(members[:, 0].max()), rel=1e-3)
    assert len({a.get_clim() for a in z}) == 1
    # u850 (signed): diverging, centred on 0
    u = [ax.get_images()[0] for ax in axes if ax.get_images()[0].get_cmap().name == "RdBu_r"]
    assert u and all(a.get_clim()[0] == pytest.approx(-a.get_clim()[1]) for a in u)
    labels = _colorbar_labels(fig)
    assert any("z500 [m² s⁻²]" in label for label in labels) and any("u850 [m s⁻¹]" in label for label in labels)
    assert any(label.startswith("spread of z500") for label in labels)


def _leads(fig):
    return sorted({ax.get_title() for ax in _map_axes(fig) if ax.get_title().startswith("z500")})


def test_sphere_map_one_channel_and_north_up_for_descending_latitudes():
    from funcdiff.tasks.forecast_io import forecast_figure

    members, truth = _sphere_members()
    fig = forecast_figure(members.flip(-2), truth=truth.flip(-2), channel_names=("z500", "u850"), channels=["u850"],
                          grid="latlon", lat=grid_latitudes(H, W)[::-1])
    axes = _map_axes(fig)
    assert all(ax.get_title().startswith("u850") for ax in axes if ax.get_title())
    np.testing.assert_allclose(axes[0].get_images()[0].get_array()[0], truth[1, 0, 0].numpy())  # still south first
    from funcdiff.errors import UserError

    with pytest.raises(UserError, match="t2m"):
        forecast_figure(members, channel_names=("z500", "u850"), channels=["t2m"], grid="latlon")


class _Shift:
    """A cheap conditional denoiser: the next frames are shifted copies of the last history frame."""

    def __call__(self, x, sigma, cond):
        return torch.cat([torch.roll(cond[:, -1:], k + 1, dims=-1) for k in range(x.shape[1])], dim=1)


def _torus_forecast(sensors: bool):
    from funcdiff.tasks.forecast import Forecast, Forecaster

    fc = Forecaster(_Shift(), GaussianRandomField(dim=2), ForecastConfig(kind="rolling", horizon=2), ("w",),
                    dt=0.5, channel_units=("1",))
    truth = torch.randn(1, 5, 16, 16, generator=torch.Generator().manual_seed(1))
    obs = make_timed_observation(truth, [2, 4], 0.5, fraction=12, seed=0) if sensors else None
    run = Forecast(fc, truth[:, :1], 4, members=2, seed=0, observations=obs, init_index=[7], init_frame=[3],
                   init_time=[1.5])
    return run, truth[:, 1:], obs


def test_forecast_png_names_the_initial_state_units_and_marks_assimilated_sensors():
    run, truth, obs = _torus_forecast(sensors=True)
    fig = run.figure(truth)
    title = fig._suptitle.get_text()
    assert "trajectory 7" in title and "frame 3" in title and "model time units" in title
    assert "12 sensors" in title and "2, 4" in title
    axes = _map_axes(fig)
    assert all("model time units" in ax.get_title() for ax in axes if ax.get_title())
    assert all(ax.get_xlim() == (0.0, 1.0) for ax in axes)
    assert any("w [dimensionless]" == label for label in _colorbar_labels(fig))
    marked = [c.get_offsets() for ax in axes for c in ax.collections]
    assert marked and all(np.allclose(np.sort(m[:, 0]), np.sort(obs.sensors.coords[:, 0].numpy())) for m in marked)
    plain = _torus_forecast(sensors=False)[0].figure(truth)
    assert not [c for ax in _map_axes(plain) for c in ax.collections] and "sensors" not in plain._suptitle.get_text()


def test_forecast_cli_has_a_channel_flag():
    from funcdiff.cli import build_parser

    args = build_parser().parse_args(["forecast", "--checkpoint", "c", "--initial", "i", "--lead-steps", "2",
                                      "--channel", "z500", "--channel", "t850"])
    assert args.channel == ["z500", "t850"]


def _scores(source_dim="forecast_source", units=True):
    """A scores dataset of two channels in different units (z500 ~ 300 m² s⁻², u850 ~ 2 m s⁻¹)."""
    from funcdiff.tasks.evaluate import METHODS, SCORES

    rng = np.random.default_rng(0)
    leads, ranks = 5, 9
    scale = np.array([300.0, 2.0])
    data = {name: ((source_dim, "lead_time", "channel"), rng.uniform(0.5, 1.5, (3, leads, 2)) *
                   (scale if name in ("rmse", "crps", "spread") else 1.0)) for name in SCORES}
    hist = np.full((3, leads, 2, ranks), np.nan)
    hist[0] = 100 + rng.integers(0, 20, (leads, 2, ranks))
    data["rank_histogram"] = ((source_dim, "lead_time", "channel", "rank"), hist)
    if units:
        data["channel_units"] = (("channel",), ["m2 s-2", "m s-1"])
    return xr.Dataset(data, coords={source_dim: list(METHODS), "lead_time": ("lead_time", 6.0 * np.arange(1, 6),
                                                                             {"units": "hours"}),
                                    "channel": ["z500", "u850"], "rank": np.arange(ranks)})


def _overlaps(fig, texts):
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in texts if t.get_text()]
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]


@pytest.mark.parametrize("source_dim", ["forecast_source", "method"])
def test_scores_png_separates_units_starts_histograms_at_zero_and_titles_do_not_overlap(source_dim):
    from funcdiff.tasks.evaluate import scores_figure

    fig = scores_figure(_scores(source_dim))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert not _overlaps(fig, [ax.title for ax in axes])
    for name in ("rmse", "crps", "spread"):
        panels = [ax for ax in axes if ax.get_ylabel().startswith(f"{name} [")]
        assert len(panels) == 2  # one per unit
        assert {p.get_ylabel() for p in panels} == {f"{name} [m² s⁻²]", f"{name} [m s⁻¹]"}
        for p in panels:  # each panel holds one channel's curves: z500 (~300) and u850 (~2) never share an axis
            tops = [float(np.nanmax(line.get_ydata())) for line in p.get_lines()]
            assert max(tops) / min(tops) < 10
    hist = [ax for ax in axes if ax.get_title().startswith("rank histogram")][0]
    assert hist.get_ylim()[0] == 0
    assert len(fig.legends) == 1
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"forecast", "persistence", "climatology"} <= set(labels)
    assert "z500 [m² s⁻²]" in labels and "u850 [m s⁻¹]" in labels
    assert all("hours" in ax.get_xlabel() for ax in axes if ax is not hist)


def test_scores_png_without_units_keeps_channels_apart():
    from funcdiff.tasks.evaluate import scores_figure

    fig = scores_figure(_scores(units=False))
    assert len([ax for ax in fig.axes if ax.get_ylabel().startswith("rmse")]) == 2


def test_posterior_panels_on_the_sphere_are_maps_with_units_and_one_scale_for_truth_and_estimate():
    from funcdiff.guidance.observations import SparseObservation, random_sensors
    from funcdiff.io import plots
    from funcdiff.tasks.problems import Task
    from funcdiff.tasks.solve import Posterior

    members, truth = _sphere_members()
    z = truth[:1, 0][None]  # (1, 1, H, W) z500
    coords = random_sensors(10, (H, W), grid="latlon", generator=torch.Generator().manual_seed(0))
    obs = SparseObservation(coords, channels=(0,), noise_std=0.0, grid="latlon", channel_names=("z500",))
    obs = obs.with_values(obs.observe(z.double()))
    task = Task(name="z", problem="era5", direction="reconstruct", channels=("z500",), observed=("z500",),
                target=("z500",), grid="latlon")
    post = Posterior(task, ("z500",), members[:, :1, 0], obs, z, ("z500",), units={"z500": "m2 s-2"})
    figures = []
    original = plots.plot_panels
    plots.plot_panels = lambda panels, path, **kw: figures.append(plots.panels_figure(panels, **kw))
    try:
        post.plot("unused.png")
    finally:
        plots.plot_panels = original
    fig = figures[0]
    axes = _map_axes(fig)
    images = [ax.get_images()[0] for ax in axes]
    assert all(im.get_array().shape == (H, W) and tuple(im.get_extent()[2:]) == (-90.0, 90.0) for im in images)
    assert all("longitude" in ax.get_xlabel() for ax in axes)
    shared = [im for ax, im in zip(axes, images) if ax.get_title().startswith(("truth", "observed", "posterior mean"))]
    assert len(shared) == 3 and len({im.get_clim() for im in shared}) == 1
    assert {im.get_cmap().name for im in shared} == {"viridis"}  # z500 is absolute: sequential
    lon, lat = axes[1].collections[0].get_offsets().T  # sensors at (lon, lat) in degrees
    np.testing.assert_allclose(np.sort(lat), np.sort(coords[:, 0].numpy()))
    assert all("[m² s⁻²]" in label for label in _colorbar_labels(fig))


def test_samples_and_super_resolution_pictures_label_units_and_share_a_scale():
    from funcdiff.io import plots
    from funcdiff.tasks.super_resolution import super_resolution_figure

    grf = GaussianRandomField(dim=2, smoothness=2.0)
    rows = {"data": grf.sample((2, 1, 16, 16)).exp(), "samples": grf.sample((2, 1, 16, 16)).exp()}
    saved = []
    original = plots.save_figure
    plots.save_figure = lambda fig, path, dpi=None: saved.append(fig)
    try:
        plots.plot_samples_vs_data(rows, "unused.png", n_show=2, channel_name="a", units="m")
    finally:
        plots.save_figure = original
    fig = saved[0]
    images = [ax.get_images()[0] for ax in _map_axes(fig)]
    assert len(images) == 4 and len({im.get_clim() for im in images}) == 1
    assert {im.get_cmap().name for im in images} == {"viridis"}  # positive data: sequential, not red-blue
    assert set(_colorbar_labels(fig)) == {"a [m]"}
    wave = torch.sin(2 * torch.pi * (torch.arange(32)[None, :] / 32 - 0.05 * torch.arange(16)[:, None]))[None]
    times = 0.5 * torch.arange(16, dtype=torch.float64)
    fig = super_resolution_figure(wave[:, ::4, ::4], wave, channel_name="u", coarse_times=times[::4],
                                  fine_times=times)
    images = [ax.get_images()[0] for ax in _map_axes(fig)]
    assert len({im.get_clim() for im in images}) == 1 and images[0].get_cmap().name == "RdBu_r"
    assert _colorbar_labels(fig) == ["u [dimensionless]"]
    assert all("model time units" in ax.get_ylabel() for ax in _map_axes(fig))


def test_the_truth_sets_the_shared_scale_and_estimates_beyond_it_saturate():
    from funcdiff.io.plots import panels_figure

    truth = torch.linspace(0.0, 1.0, 64).reshape(8, 8)  # positive, like a Darcy pressure
    estimate = truth - 0.4  # an estimate that dips below 0 must not turn the truth into a red-blue picture
    fig = panels_figure([("truth u", truth), ("posterior mean u", estimate)], shared=(0, 1), reference=0)
    images = [ax.get_images()[0] for ax in _map_axes(fig)]
    assert [im.get_cmap().name for im in images] == ["viridis", "viridis"]
    assert all(im.get_clim() == (0.0, 1.0) for im in images)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert [b._colorbar.extend for b in bars] == ["neither", "min"]


def test_sphere_stations_are_marked_at_their_longitude_and_latitude():
    from funcdiff.tasks.forecast_io import forecast_figure

    members, truth = _sphere_members()
    frames = torch.cat([truth[:, :1], truth], dim=1)  # (C, L + 1, H, W): index 0 the initial state
    obs = make_timed_observation(frames, [2], 6.0, fraction=6, grid="latlon", seed=0)
    fig = forecast_figure(members, truth=truth, dt=6.0, channel_names=("z500", "u850"), grid="latlon",
                          time_units="hours since 2000-01-01", observations=obs)
    offsets = [c.get_offsets() for ax in _map_axes(fig) for c in ax.collections]
    lat, lon = obs.sensors.coords[:, 0].numpy(), obs.sensors.coords[:, 1].numpy()
    assert offsets and all(np.allclose(np.sort(o[:, 0]), np.sort(np.mod(lon, 360))) for o in offsets)
    assert all(np.allclose(np.sort(o[:, 1]), np.sort(lat)) for o in offsets)
    assert "6 sensors of z500 assimilated at leads 2" in fig._suptitle.get_text()
