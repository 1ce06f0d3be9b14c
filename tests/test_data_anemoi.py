"""anemoi-datasets zarr stores read lazily (funcdiff.data.anemoi), on stores written with zarr to the layout
``anemoi-datasets create`` writes (zarr format 2: ``data`` (time, variable, ensemble, cell), ``dates``,
``latitudes``, ``longitudes``, ``mean``/``stdev``/``minimum``/``maximum``; attributes ``variables``,
``start_date``, ``end_date``, ``frequency``, ``missing_dates``)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from store_checks import check_pickle_and_workers, check_reads

from funcdiff.data import detect_format, load_fields
from funcdiff.data.anemoi import AnemoiStore, is_anemoi_store
from funcdiff.data.datasets import _stored_normalizer
from funcdiff.errors import UserError

NAMES = ("z_500", "t_850", "2t")
DATES = 8


def _array(group, name, values, dims, chunks=None):
    a = group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=chunks or values.shape,
                           fill_value=np.nan if values.dtype.kind == "f" else None)
    a[...] = values
    a.attrs["_ARRAY_DIMENSIONS"] = list(dims)


def write_anemoi(path, lat, lon, members=2, missing=(), zarr_format=2):
    """A store in anemoi's layout (format 2, or 3 as anemoi writes it under zarr 3); returns data (dates,
    variables, ensembles, cells) and the dates."""
    values = np.random.default_rng(0).standard_normal((DATES, len(NAMES), members, lat.size)).astype("f4")
    dates = np.datetime64("2020-01-01T00", "s") + np.arange(DATES) * np.timedelta64(6, "h")
    values[list(missing)] = np.nan
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    _array(group, "data", values, ("time", "variable", "ensemble", "cell"), (1, len(NAMES), members, lat.size))
    _array(group, "dates", dates, ("time",))
    _array(group, "latitudes", np.asarray(lat, "f8"), ("cell",))
    _array(group, "longitudes", np.asarray(lon, "f8"), ("cell",))
    for key, stat in (("mean", np.nanmean), ("stdev", np.nanstd), ("minimum", np.nanmin), ("maximum", np.nanmax)):
        _array(group, key, stat(values, axis=(0, 2, 3)).astype("f8"), ("variable",))
    group.attrs.update({"variables": list(NAMES), "start_date": str(dates[0]), "end_date": str(dates[-1]),
                        "frequency": "6h", "missing_dates": [str(dates[i]) for i in missing],
                        "dimensions": ["dates", "variables", "ensembles", "values"], "resolution": "o96"})
    return values, dates


def _regular(path, **kwargs):
    """A 5 x 8 grid stored as anemoi stores GRIB grids: latitude descending, longitude in [-180, 180)."""
    lat, lon = np.meshgrid([60.0, 30.0, 0.0, -30.0, -60.0], np.arange(-180.0, 180.0, 45.0), indexing="ij")
    values, dates = write_anemoi(path, lat.ravel(), lon.ravel(), **kwargs)
    grid = values.reshape(*values.shape[:3], 5, 8)[..., ::-1, :]  # latitude ascending
    grid = np.concatenate([grid[..., 4:], grid[..., :4]], axis=-1)  # longitude 0, 45, ..., 315
    return grid, dates


def test_regular_grid_is_reshaped_to_latitude_longitude(tmp_path):
    grid, dates = _regular(tmp_path / "reg.zarr")
    store = AnemoiStore(tmp_path / "reg.zarr")
    assert is_anemoi_store(tmp_path / "reg.zarr") and store.channel_names == NAMES
    np.testing.assert_array_equal(store.coords["latitude"], [-60, -30, 0, 30, 60])
    np.testing.assert_array_equal(store.coords["longitude"], np.arange(0, 360, 45))
    np.testing.assert_array_equal(store.coords["time"], dates)
    np.testing.assert_array_equal(store.coords["t"], dates.astype("int64") / 3600.0)  # hours since 1970
    expected = grid[:, :, 0].transpose(1, 0, 2, 3)[None]  # (1, C, T, H, W), member 0
    check_reads(store, expected, frames=slice(2, 7, 2))
    assert store.attrs["grid"] == {"type": "latlon"}
    other = AnemoiStore(tmp_path / "reg.zarr", variables=["2t", "z_500"], member=1)
    np.testing.assert_array_equal(other.read([0]).numpy(), grid[:, [2, 0], 1].transpose(1, 0, 2, 3)[None])
    with pytest.raises(UserError, match="member 2"):
        AnemoiStore(tmp_path / "reg.zarr", member=2)
    with pytest.raises(UserError, match="no variable"):
        AnemoiStore(tmp_path / "reg.zarr", variables=["msl"])


def test_unstructured_cells_stay_one_axis(tmp_path):
    rng = np.random.default_rng(1)
    lat, lon = rng.uniform(-90, 90, 13), rng.uniform(0, 360, 13)
    values, _ = write_anemoi(tmp_path / "o.zarr", lat, lon)
    store = AnemoiStore(tmp_path / "o.zarr")
    assert store.shape == (1, 3, DATES, 13) and "grid" not in store.attrs
    np.testing.assert_array_equal(store.coords["latitude"], lat)
    check_reads(store, values[:, :, 0].transpose(1, 0, 2)[None], frames=slice(1, 3))
    flat = AnemoiStore(tmp_path / "o.zarr", flatten=True)
    assert flat.shape == store.shape
    v3, _ = write_anemoi(tmp_path / "v3.zarr", lat, lon, missing=(1,), zarr_format=3)  # anemoi under zarr 3
    kept = [0, *range(2, DATES)]
    np.testing.assert_array_equal(AnemoiStore(tmp_path / "v3.zarr").read([0]).numpy(),
                                  v3[kept, :, 0].transpose(1, 0, 2)[None])


def test_missing_dates_leave_a_gap_in_the_time_axis(tmp_path):
    grid, dates = _regular(tmp_path / "gap.zarr", missing=(3, 4))
    store = AnemoiStore(tmp_path / "gap.zarr")
    kept = [0, 1, 2, 5, 6, 7]
    np.testing.assert_array_equal(store.coords["time"], dates[kept])
    assert np.diff(store.coords["time"]).max() == np.timedelta64(18, "h")
    assert store.attrs["missing_dates"] == [str(dates[3]), str(dates[4])]
    np.testing.assert_array_equal(store.read([0], frames=slice(2, 4)).numpy()[0],
                                  grid[[2, 5], :, 0].transpose(1, 0, 2, 3))
    kept_all = AnemoiStore(tmp_path / "gap.zarr", drop_missing=False)
    assert kept_all.shape[2] == DATES and not (tmp_path / "gap.zarr" / "data" / "3.0.0.0").exists()
    assert np.isnan(kept_all.read([0], frames=slice(3, 5)).numpy()).all()  # anemoi leaves those chunks unwritten


def test_statistics_feed_the_stored_normaliser_and_load_fields(tmp_path):
    grid, dates = _regular(tmp_path / "reg.zarr")
    assert detect_format(tmp_path / "reg.zarr") == "anemoi_zarr"
    data = load_fields(tmp_path / "reg.zarr", fields=["t_850"])
    assert data.source == "anemoi_zarr" and list(data.fields) == ["t_850"]
    np.testing.assert_array_equal(data.fields["t_850"].numpy()[0], grid[:, 1, 0])
    np.testing.assert_allclose(np.diff(data.coords["t"].numpy()), 6.0)
    normalizer = _stored_normalizer(data, ["t_850", "z_500"])
    state = normalizer.state_dict()
    mean, std = np.mean(grid[:, [1, 0]], axis=(0, 2, 3, 4)), np.std(grid[:, [1, 0]], axis=(0, 2, 3, 4))
    np.testing.assert_allclose(np.ravel(state["mean"]), mean, rtol=1e-5)
    np.testing.assert_allclose(np.ravel(state["std"]), std, rtol=1e-5)


def test_pickled_store_reads_in_workers_and_corrupt_chunk_names_the_store(tmp_path):
    rng = np.random.default_rng(2)
    values, _ = write_anemoi(tmp_path / "w.zarr", rng.uniform(-90, 90, 7), rng.uniform(0, 360, 7))
    store = AnemoiStore(tmp_path / "w.zarr")
    check_pickle_and_workers(store, values[:, :, 0].transpose(1, 0, 2)[None])
    (tmp_path / "w.zarr" / "data" / "2.0.0.0").write_bytes(b"not a blosc chunk")
    with pytest.raises(UserError, match=r"w\.zarr.*item"):
        store.read([0], frames=slice(1, 4))
    assert store.read([0], frames=slice(3, 5)).shape == (1, 3, 2, 7)
    (tmp_path / "w.zarr" / "data" / "6.0.0.0").unlink()  # zarr alone would return NaN
    with pytest.raises(UserError, match=r"w\.zarr.*data/6\.0\.0\.0.*missing"):
        store.read([0], frames=slice(5, 8))
    (tmp_path / "w.zarr" / "dates" / ".zarray").write_text("{truncated")
    with pytest.raises(UserError, match=r"w\.zarr"):
        AnemoiStore(tmp_path / "w.zarr")
    assert not is_anemoi_store(tmp_path) and not is_anemoi_store(tmp_path / "w.zarr")


def test_field_dataset_of_an_anemoi_store_has_one_sample_per_date(tmp_path):
    """An anemoi store is one time axis: every date is a field sample (T, C, H, W), as for an ERA5 store."""
    from funcdiff.data import FieldDataset

    grid, dates = _regular(tmp_path / "reg.zarr")
    dataset = FieldDataset.from_file(tmp_path / "reg.zarr", channels=["t_850", "z_500"])
    assert dataset.fields.shape == (DATES, 2, 5, 8)
    np.testing.assert_array_equal(dataset.fields[3].numpy(), grid[3, [1, 0], 0])


def test_in_memory_forecaster_windows_refuse_a_time_axis_with_gaps(tmp_path):
    """Windows cut in memory would straddle missing dates: a one-line error pointing to data.stream=true."""
    from funcdiff.config import config_from_dict
    from funcdiff.errors import UserError
    from funcdiff.training.forecast import load_trajectories

    _regular(tmp_path / "gap.zarr", missing=(4,))
    config = config_from_dict({"data": {"source": "file", "path": str(tmp_path / "gap.zarr"),
                                        "channels": ["t_850"], "stream": False},
                               "forecast": {"kind": "autoregressive"}})
    with pytest.raises(UserError, match="data.stream=true"):
        load_trajectories(config)
