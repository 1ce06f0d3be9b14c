"""ERA5-like shallow-water data: both layouts read to identical tensors with ERA5's conventions; CLI; resume-safe."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch_harmonics", reason="the shallow-water generator needs the sphere extra (torch-harmonics)")
dask = pytest.importorskip("dask")
pytest.importorskip("zarr")

from funcdiff.cli import main  # noqa: E402
from funcdiff.data import era5  # noqa: E402
from funcdiff.tasks.era5_synthetic import CHANNELS, write_shallow_water_era5  # noqa: E402
from funcdiff.errors import UserError  # noqa: E402
from funcdiff.pde.shallow_water import ShallowWaterRun  # noqa: E402

RUN = ShallowWaterRun(nlat=17, spinup_days=1.0, seed=3)  # 17 x 32 grid with poles (11.25 deg)


@pytest.fixture(autouse=True)
def synchronous_dask():
    with dask.config.set(scheduler="synchronous"):
        yield


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("swe")
    return write_shallow_water_era5(out, RUN, start="2001-01-31", days=1.5, layout="both")


def test_cds_and_wb2_layouts_read_to_identical_tensors(written):
    assert len(written["cds"]) == 2  # January and February files, as CDS splits requests
    cds = era5.read_era5(written["cds"], ",".join(CHANNELS)).compute()
    wb2 = era5.read_era5(written["wb2"], ",".join(CHANNELS)).compute()
    assert cds.dims == ("time", "channel", "latitude", "longitude")
    assert cds.shape == (7, 3, 17, 32)
    np.testing.assert_array_equal(cds.values, wb2.values)
    assert np.all(np.diff(cds["latitude"].values) > 0) and cds["latitude"].values[0] == -90.0
    assert (np.diff(cds.indexes["time"].values) == np.timedelta64(6, "h")).all()
    z, u = cds.sel(channel="z500").values, cds.sel(channel="u500").values
    # geopotential near ERA5's z500 (mean depth 5.5 km), jet-scale winds, real weather (varies in time)
    assert 4e4 < z.mean() < 7e4 and 5.0 < np.abs(u).max() < 150.0
    assert np.abs(np.diff(z, axis=0)).mean() > 1.0


def test_same_seed_same_data_other_seed_other_weather(written, tmp_path):
    again = write_shallow_water_era5(tmp_path / "a", RUN, start="2001-01-31", days=1.5, layout="wb2")
    other = write_shallow_water_era5(tmp_path / "b", ShallowWaterRun(nlat=17, spinup_days=1.0, seed=4),
                                     start="2001-01-31", days=1.5, layout="wb2")
    read = [era5.read_era5(p["wb2"], "z500").values for p in (written, again, other)]
    np.testing.assert_array_equal(read[0], read[1])
    assert np.abs(read[0] - read[2]).max() > 1.0


def test_regridded_store_from_the_cli(tmp_path, capsys):
    assert main(["data", "shallow-water", "--out", str(tmp_path / "swe"), "--nlat", "17", "--days", "1",
                 "--spinup-days", "0.5", "--layout", "cds", "--no-progress"]) == 0
    assert main(["data", "era5", "--source", str(tmp_path / "swe" / "cds" / "*.nc"), "--variables",
                 "z500,u500,v500", "--grid", "22.5deg", "--out", str(tmp_path / "swe.zarr")]) == 0
    import xarray as xr

    store = xr.open_zarr(tmp_path / "swe.zarr")
    assert store["state"].shape == (5, 3, 8, 16) and set(store.attrs["state_stats"]) == set(CHANNELS)
    with pytest.raises(UserError, match="exists"):
        write_shallow_water_era5(tmp_path / "swe", RUN, days=1, layout="cds")


def test_bad_grid_is_a_user_error(capsys):
    assert main(["data", "shallow-water", "--nlat", "32", "--out", "unused"]) == 2
    assert "odd" in capsys.readouterr().err
