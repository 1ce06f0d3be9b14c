"""ERA5 readers (CDS netCDF and WeatherBench 2 zarr), their quirks, regridding, statistics and `data era5`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

dask = pytest.importorskip("dask")
pytest.importorskip("zarr")

from funcdiff.data import Normalizer, era5  # noqa: E402
from funcdiff.errors import UserError  # noqa: E402

LAT = np.linspace(-78.75, 78.75, 8)  # 8 x 16 grid, 22.5° spacing, points off the poles
LON = np.arange(16) * 22.5
TIMES = pd.date_range("2020-01-31T12", periods=6, freq="6h")  # crosses a month boundary
LEVELS = [500, 850]
VARIABLES = "z500,t850,t2m"


@pytest.fixture(autouse=True)
def synchronous_dask():
    with dask.config.set(scheduler="synchronous"):  # tiny data: no thread pool, modest CPU
        yield


def canonical(seed: int = 0) -> xr.Dataset:
    """Hand-built data in the normalised layout (short names, time, level, latitude ascending)."""
    rng = np.random.default_rng(seed)
    shape3, shape2 = (len(TIMES), len(LEVELS), len(LAT), len(LON)), (len(TIMES), len(LAT), len(LON))
    dims3, dims2 = ("time", "level", "latitude", "longitude"), ("time", "latitude", "longitude")
    return xr.Dataset(
        {"z": (dims3, (5e4 + 3e3 * rng.standard_normal(shape3)).astype(np.float32), {"units": "m**2 s**-2"}),
         "t": (dims3, (260 + 10 * rng.standard_normal(shape3)).astype(np.float32), {"units": "K"}),
         "t2m": (dims2, (280 + 5 * rng.standard_normal(shape2)).astype(np.float32), {"units": "K"})},
        coords={"time": TIMES, "level": LEVELS, "latitude": LAT, "longitude": LON})


def cds(ds: xr.Dataset, expver: bool = True, number: bool = True) -> xr.Dataset:
    """CDS 2024 layout: valid_time, pressure_level (float hPa), latitude 90 -> -90, expver, number."""
    out = ds.rename({k: v for k, v in (("time", "valid_time"), ("level", "pressure_level")) if k in ds.variables})
    out = out.isel(latitude=slice(None, None, -1))
    if "pressure_level" in out.coords:
        out = out.assign_coords(pressure_level=out["pressure_level"].astype(np.float64))
    if expver:
        n = out.sizes["valid_time"]  # the last two times are ERA5T
        out = out.assign_coords(expver=("valid_time", np.array(["0001"] * max(n - 2, 0) + ["0005"] * min(n, 2))))
    if number:
        out = out.assign_coords(number=0)
    return out


def wb2(ds: xr.Dataset) -> xr.Dataset:
    """WeatherBench 2 layout: long names, dims (time, level, longitude, latitude)."""
    out = ds.rename(z="geopotential", t="temperature", t2m="2m_temperature")
    return out.transpose("time", "level", "longitude", "latitude")


def write_cds_files(ds: xr.Dataset, folder, **quirks) -> list:
    """One netCDF file per variable group and month (4 files), as CDS requests are usually split."""
    paths = []
    for group, names in (("pressure", ["z", "t"]), ("single", ["t2m"])):
        for month, times in ds.time.groupby("time.month"):
            path = folder / f"era5_{group}_{month:02d}.nc"
            cds(ds[names].sel(time=times.values), **quirks).to_netcdf(path)
            paths.append(path)
    return paths


def write_wb2(ds: xr.Dataset, folder):
    path = folder / "wb2.zarr"
    wb2(ds).to_zarr(path, zarr_format=2)
    return path


def test_cds_and_wb2_read_to_identical_values(tmp_path):
    truth = canonical()
    from_cds = era5.read_era5(write_cds_files(truth, tmp_path), VARIABLES).compute()
    from_wb2 = era5.read_era5(write_wb2(truth, tmp_path), VARIABLES).compute()
    assert from_cds.dims == from_wb2.dims == era5.DIMS
    assert list(from_cds["channel"].values) == ["z500", "t850", "t2m"]
    np.testing.assert_array_equal(from_cds.values, from_wb2.values)
    xr.testing.assert_identical(from_cds.drop_vars("units"), from_wb2.drop_vars("units"))
    expected = np.stack([truth.z.sel(level=500), truth.t.sel(level=850), truth.t2m], axis=1)
    np.testing.assert_array_equal(from_cds.values, expected)
    assert list(from_wb2["units"].values) == ["m**2 s**-2", "K", "K"]


def test_descending_latitude_ends_ascending(tmp_path):
    truth = canonical()
    cds(truth).to_netcdf(tmp_path / "one.nc")
    assert xr.open_dataset(tmp_path / "one.nc").latitude.values[0] == LAT[-1]  # written 90 -> -90
    state = era5.read_era5(tmp_path / "one.nc", "t2m")
    assert np.all(np.diff(state.latitude.values) > 0)
    np.testing.assert_array_equal(state.sel(latitude=LAT[0], channel="t2m").values,
                                  truth.t2m.sel(latitude=LAT[0]).values)


def test_valid_time_becomes_time_and_selects(tmp_path):
    cds(canonical()).to_netcdf(tmp_path / "one.nc")
    state = era5.read_era5(tmp_path / "one.nc", "z500", start="2020-02-01", end="2020-02-01T06", step="6h")
    assert "valid_time" not in state.coords
    assert list(state.indexes["time"]) == list(pd.date_range("2020-02-01", periods=2, freq="6h"))


@pytest.mark.parametrize("expver", [True, False])
@pytest.mark.parametrize("number", [True, False])
def test_expver_and_number_coordinates_present_or_not(tmp_path, expver, number):
    truth = canonical()
    cds(truth, expver=expver, number=number).to_netcdf(tmp_path / "one.nc")
    state = era5.read_era5(tmp_path / "one.nc", VARIABLES)
    assert set(state.coords) == {"time", "channel", "latitude", "longitude", "units"}
    np.testing.assert_array_equal(state.sel(channel="t850").values, truth.t.sel(level=850).values)


def test_old_expver_dimension_is_merged(tmp_path):
    """Pre-2024 CDS files: ERA5 (expver 1) and ERA5T (expver 5) side by side, NaN where the other holds it."""
    truth = canonical()
    late = truth.time >= TIMES[4]
    old = xr.concat([truth.where(~late), truth.where(late)], dim=pd.Index([1, 5], name="expver"))
    cds(old, expver=False).to_netcdf(tmp_path / "old.nc")
    state = era5.read_era5(tmp_path / "old.nc", "t2m")
    era5.check_missing(state)
    np.testing.assert_array_equal(state.sel(channel="t2m").values, truth.t2m.values)


def test_number_dimension_of_one_member_is_dropped_and_of_several_rejected(tmp_path):
    cds(canonical(), number=False).expand_dims(number=[0]).to_netcdf(tmp_path / "one.nc")
    assert era5.read_era5(tmp_path / "one.nc", "z500").shape == (6, 1, 8, 16)
    cds(canonical(), number=False).expand_dims(number=[0, 1]).to_netcdf(tmp_path / "two.nc")
    with pytest.raises(UserError, match="2 ensemble members"):
        era5.read_era5(tmp_path / "two.nc", "z500")


def test_multiple_files_by_group_and_month_combine(tmp_path):
    truth = canonical()
    paths = write_cds_files(truth, tmp_path)
    assert len(paths) == 4
    state = era5.read_era5(str(tmp_path / "era5_*.nc"), VARIABLES)  # a glob pattern works as well
    assert state.sizes["time"] == len(TIMES)
    np.testing.assert_array_equal(state.sel(channel="z500").values, truth.z.sel(level=500).values)


def test_missing_variable_names_what_is_there(tmp_path):
    cds(canonical()).to_netcdf(tmp_path / "one.nc")
    with pytest.raises(UserError) as info:
        era5.read_era5(tmp_path / "one.nc", "z500,q700,u10")
    message = str(info.value)
    assert "q700, u10 not in the data" in message and "it holds: z500, z850, t500, t850, t2m" in message
    assert "\n" not in message


def test_unknown_name_and_duplicates_are_user_errors():
    with pytest.raises(UserError, match="unknown variable 'zz500'"):
        era5.parse_channels("zz500")
    with pytest.raises(UserError, match="twice: t2m"):
        era5.parse_channels("t2m,z500,t2m")
    assert era5.parse_channel("u10") == era5.Channel("u10", "u10", None)  # 10 m wind, not u at 10 hPa
    assert era5.parse_channel("u10".replace("10", "100")) == era5.Channel("u100", "u", 100)


def test_nan_is_flagged_with_variable_and_count(tmp_path):
    truth = canonical()
    truth["t"][2, 1, 3, 4] = np.nan
    truth["t"][3, 1, 0, :3] = np.nan
    write_wb2(truth, tmp_path)
    state = era5.read_era5(tmp_path / "wb2.zarr", VARIABLES)
    with pytest.raises(UserError) as info:
        era5.check_missing(state)
    assert str(info.value).startswith("missing values (NaN) in the data: t850 has 4;")
    era5.check_missing(state.sel(channel=["z500", "t2m"]))  # the other channels are clean


def test_times_missing_from_the_requested_steps(tmp_path):
    write_wb2(canonical().drop_sel(time=TIMES[2]), tmp_path)
    with pytest.raises(UserError, match="1 of 6 times every 6h"):
        era5.read_era5(tmp_path / "wb2.zarr", "t2m", step="6h")
    assert era5.read_era5(tmp_path / "wb2.zarr", "t2m", start=str(TIMES[3]), step="6h").sizes["time"] == 3


def area_mean(field: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Cell-area-weighted mean over the last two axes (lat, lon), by hand."""
    return (field * era5.cell_area_weights(lat)[:, None]).mean((-2, -1))


@pytest.mark.parametrize("src_lat", [LAT, np.linspace(-90, 90, 9)], ids=["offset", "with-poles"])
@pytest.mark.parametrize("res", [45.0, 30.0], ids=["45deg", "30deg"])
def test_regridding_preserves_area_weighted_mean(src_lat, res):
    rng = np.random.default_rng(1)
    values = rng.standard_normal((3, 2, len(src_lat), len(LON)))
    state = xr.DataArray(values, dims=era5.DIMS, coords={"latitude": src_lat, "longitude": LON})
    coarse = era5.regrid_conservative(state.chunk({"time": 1}), res).compute()
    assert coarse.shape == (3, 2, round(180 / res), round(360 / res))
    np.testing.assert_allclose(area_mean(coarse.values, coarse.latitude.values), area_mean(values, src_lat),
                               rtol=0, atol=1e-12)
    ones = era5.regrid_conservative(xr.ones_like(state), res).values
    np.testing.assert_allclose(ones, 1.0, atol=1e-12)


def test_regridding_weights_by_overlap_area():
    values = np.random.default_rng(2).standard_normal((1, 1, 8, 16))
    state = xr.DataArray(values, dims=era5.DIMS, coords={"latitude": LAT, "longitude": LON})
    coarse = era5.regrid_conservative(state, 45.0).values
    # target row 1 spans [-45°, 0°] = source rows 2 and 3 (area weights w); target column 0 spans
    # [-22.5°, 22.5°] = source column 0 [-11.25°, 11.25°] and halves of columns 15 and 1 (periodic)
    w = era5.cell_area_weights(LAT)[2:4, None]
    rows = (values[0, 0, 2:4] * w).sum(0) / w.sum()
    expected = (0.5 * rows[15] + rows[0] + 0.5 * rows[1]) / 2
    np.testing.assert_allclose(coarse[0, 0, 1, 0], expected, rtol=1e-12)


def test_cell_area_weights_are_cos_latitude_off_the_poles():
    np.testing.assert_allclose(era5.cell_area_weights(LAT), np.cos(np.deg2rad(LAT)) / np.cos(np.deg2rad(LAT)).mean(),
                               rtol=1e-12)


def test_statistics_of_states_and_six_hour_tendencies(tmp_path):
    truth = canonical()
    write_wb2(truth, tmp_path)
    state = era5.read_era5(tmp_path / "wb2.zarr", VARIABLES)
    stats = era5.era5_statistics(state)
    w = era5.cell_area_weights(LAT)[:, None]
    x = truth.t2m.values.astype(np.float64)
    dx = x[1:] - x[:-1]
    for kind, values in (("state", x), ("tendency", dx)):
        mean = (values * w).mean() / w.mean()
        std = np.sqrt(((values - mean) ** 2 * w).mean() / w.mean())
        assert stats[kind]["t2m"]["mean"] == pytest.approx(mean, rel=1e-10)
        assert stats[kind]["t2m"]["std"] == pytest.approx(std, rel=1e-8)
    hourly = era5.tendency_lag(pd.date_range("2020", periods=13, freq="1h"))
    assert hourly == (6, pd.Timedelta("6h"))  # hourly data: tendencies over 6 steps


def test_cli_writes_zarr_that_reopens(tmp_path, capsys):
    from funcdiff.cli import main

    truth = canonical()
    paths = [str(p) for p in write_cds_files(truth, tmp_path)]
    out = tmp_path / "datasets" / "era5.zarr"
    args = ["data", "era5", "--source", *paths, "--variables", VARIABLES, "--start", "2020-01-31T18",
            "--end", "2020-02-01T18", "--step", "6h", "--grid", "45deg", "--out", str(out)]
    assert main(args) == 0
    ds = xr.open_zarr(out)
    assert ds["state"].dims == era5.DIMS and ds["state"].shape == (5, 3, 4, 8)
    assert list(ds["channel"].values) == ["z500", "t850", "t2m"]
    np.testing.assert_allclose(ds.latitude.values, [-67.5, -22.5, 22.5, 67.5])
    assert ds.time.values[0] == np.datetime64("2020-01-31T18")
    assert set(ds.attrs["state_stats"]) == {"z500", "t850", "t2m"}
    assert pd.Timedelta(ds.attrs["tendency_interval"]) == pd.Timedelta("6h")
    assert ds.attrs["tendency_stats"]["t2m"]["std"] > 0 and ds["state"].dtype == np.float32
    normalizer = Normalizer.from_field_stats(ds.attrs["state_stats"], ["z500", "t2m"])
    assert normalizer.mean[0].item() == pytest.approx(ds.attrs["state_stats"]["z500"]["mean"])
    assert sorted(p.name for p in out.parent.iterdir()) == ["era5.zarr"]  # no partial directory left
    assert main(args) == 2 and "exists (use --overwrite)" in capsys.readouterr().err


def test_cli_nan_leaves_nothing_behind(tmp_path, capsys):
    from funcdiff.cli import main

    truth = canonical()
    truth["t2m"][1, 2, 3] = np.nan
    path = write_wb2(truth, tmp_path)
    out = tmp_path / "out" / "era5.zarr"
    assert main(["data", "era5", "--source", str(path), "--variables", "t2m", "--out", str(out)]) == 2
    assert "t2m has 1" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []
