"""`funcdiff evaluate` and the scoring API on hand-built forecast and truth files with known scores."""

import json
import math

import h5py
import numpy as np
import pytest
import torch
import xarray as xr

from funcdiff.cli import main
from funcdiff.data.hdf5 import FORMAT_NAME
from funcdiff.tasks.evaluate import METHODS, SCORES, lead_scores, score_forecast

N, T, X = 3, 10, 16
DT = 0.5


def write_truth(path, fields: dict, dt: float = DT):
    """A funcdiff HDF5 trajectory file: fields name -> (N, T, *S) on the periodic grid of [0, 1)^d."""
    first = next(iter(fields.values()))
    with h5py.File(path, "w") as f:
        f.attrs.update(funcdiff_format=FORMAT_NAME, fields=json.dumps(list(fields)), num_samples=first.shape[0],
                       num_written=first.shape[0], complete=True)
        for name, value in fields.items():
            f[name] = value
        for axis, n in zip("xy", first.shape[2:]):
            f[axis] = np.arange(n) / n
        f["t"] = dt * np.arange(first.shape[1])
    return path


def random_truth(shape=(N, T, X), seed=0):
    return np.random.default_rng(seed).normal(size=shape)


def make_forecast(members: dict, init_index, init_frame, dt: float = DT, old: bool = False) -> xr.Dataset:
    """Forecast dataset: members name -> (B, M, L, *S), in the layout `funcdiff forecast` writes (``old``: the
    layout of funcdiff <= 0.1, with an ``init_time`` dimension)."""
    first = next(iter(members.values()))
    b, m, leads, *spatial = first.shape
    init = "init_time" if old else "init"
    dims = (init, "member", "lead_time", *"xy"[: len(spatial)])
    coords = {"lead_time": dt * np.arange(1, leads + 1), "lead": ("lead_time", np.arange(1, leads + 1)),
              "init_time": (init, dt * np.asarray(init_frame, dtype=float)), "init_index": (init, init_index),
              "init_frame": (init, init_frame), "member": np.arange(m),
              **({} if old else {"init": np.arange(b)}),
              **{axis: np.arange(n) / n for axis, n in zip("xy", spatial)}}
    return xr.Dataset({name: (dims, value) for name, value in members.items()}, coords=coords,
                      attrs={"channels": json.dumps(list(members)), "dt": dt})


def truth_windows(truth, init_index, init_frame, leads):
    """truth[init_index[i], init_frame[i] + l] for l = 1..leads. Shapes: -> (B, leads, *S)."""
    return np.stack([truth[i, f + 1:f + 1 + leads] for i, f in zip(init_index, init_frame)])


def evaluate(tmp_path, forecast: xr.Dataset, truth_file, *extra):
    forecast.to_netcdf(tmp_path / "forecast.nc")
    argv = ["evaluate", "--forecast", str(tmp_path / "forecast.nc"), "--truth", str(truth_file),
            "--out", str(tmp_path / "scores.nc"), *extra]
    return main(argv)


def test_offset_ensemble_has_the_scores_computed_by_hand(tmp_path, capsys):
    """Members = truth + (d, 2d, 3d): RMSE 2d, fair CRPS 2d - 8d/12 = 4d/3, spread d, SSR sqrt(4/3)/2, the truth
    always ranks first, and a constant shift leaves the spectrum at k >= 1 unchanged."""
    truth = random_truth()
    init_index, init_frame, leads, d = [2, 0], [1, 3], 4, 0.1
    window = truth_windows(truth, init_index, init_frame, leads)
    members = window[:, None] + d * np.arange(1, 4)[None, :, None, None]
    assert evaluate(tmp_path, make_forecast({"u": members}, init_index, init_frame), write_truth(
        tmp_path / "truth.h5", {"u": truth}), "--json", str(tmp_path / "s.json"), "--plot",
        str(tmp_path / "s.png")) == 0
    scores = xr.open_dataset(tmp_path / "scores.nc").sel({"forecast_source": "forecast", "channel": "u"})
    np.testing.assert_allclose(scores["rmse"], 2 * d, rtol=1e-6)
    np.testing.assert_allclose(scores["crps"], 4 * d / 3, rtol=1e-6)
    np.testing.assert_allclose(scores["spread"], d, rtol=1e-6)
    np.testing.assert_allclose(scores["ssr"], math.sqrt(4 / 3) / 2, rtol=1e-6)
    np.testing.assert_allclose(scores["spectrum_error"], 0, atol=1e-5)
    np.testing.assert_allclose(scores["rank_histogram"], [[2 * X, 0, 0, 0]] * leads)
    np.testing.assert_array_equal(scores["lead"], np.arange(1, leads + 1))
    rows = json.loads((tmp_path / "s.json").read_text())
    assert len(rows) == len(METHODS) * leads
    assert set(rows[0]) >= {"method", "channel", "lead", "lead_time", "rmse", "rel_l2", "crps", "ssr", "spread",
                            "spectrum_error"}
    assert {r["method"] for r in rows} == set(METHODS) and rows[-1]["ssr"] is None  # climatology: no spread
    assert (tmp_path / "s.png").stat().st_size > 0
    assert "forecast u leads 1->4" in capsys.readouterr().out


def test_persistence_equal_forecast_matches_the_persistence_row(tmp_path):
    truth = random_truth(seed=1)
    init_index, init_frame, leads = [0, 1, 2], [0, 2, 5], 4
    persistence = np.stack([np.repeat(truth[i, f][None], leads, 0) for i, f in zip(init_index, init_frame)])
    forecast = make_forecast({"u": persistence[:, None]}, init_index, init_frame)
    scores = score_forecast(forecast, write_truth(tmp_path / "truth.h5", {"u": truth}))
    for name in ("rmse", "rel_l2", "crps", "spectrum_error", "max_spectrum_ratio"):
        forecast_row, persistence_row = (scores[name].sel(forecast_source=m) for m in ("forecast", "persistence"))
        np.testing.assert_allclose(forecast_row, persistence_row, rtol=1e-6, err_msg=name)
    error = persistence - truth_windows(truth, init_index, init_frame, leads)  # (B, L, X)
    by_hand = {"rmse": np.sqrt((error**2).mean((0, 2))), "crps": np.abs(error).mean((0, 2))}
    for name, value in by_hand.items():
        np.testing.assert_allclose(scores[name].sel(forecast_source="persistence", channel="u"), value, rtol=1e-6)
    assert np.isnan(scores["ssr"].sel({"forecast_source": "persistence"})).all()
    assert np.isnan(scores["rank_histogram"].sel({"forecast_source": "persistence"})).all()


def test_a_forecast_file_of_the_old_layout_scores_the_same(tmp_path):
    """Files of funcdiff <= 0.1 have an `init_time` dimension (here with a repeated time); evaluate still reads
    them and gives the scores of the current layout."""
    truth = random_truth(seed=6)
    init_index, init_frame, leads = [0, 2], [1, 1], 3
    members = truth_windows(truth, init_index, init_frame, leads)[:, None] + 0.1
    truth_file = write_truth(tmp_path / "truth.h5", {"u": truth})
    new, old = (score_forecast(make_forecast({"u": members}, init_index, init_frame, old=o), truth_file)
                for o in (False, True))
    assert old.identical(new) and old.sizes["forecast_source"] == 3
    assert evaluate(tmp_path, make_forecast({"u": members}, init_index, init_frame, old=True), truth_file) == 0


def test_climatology_row_and_a_separate_climatology_file(tmp_path):
    truth, other = random_truth(seed=2), random_truth(seed=3) + 1.0
    init_index, init_frame, leads = [1], [0], 3
    forecast = make_forecast({"u": truth_windows(truth, init_index, init_frame, leads)[:, None]}, init_index,
                             init_frame)
    truth_file = write_truth(tmp_path / "truth.h5", {"u": truth})
    for source, clim_file in ((truth, None), (other, write_truth(tmp_path / "clim.h5", {"u": other}))):
        scores = score_forecast(forecast, truth_file, clim_file).sel(channel="u")
        error = source.mean((0, 1))[None] - truth[1, 1:1 + leads]
        np.testing.assert_allclose(scores["crps"].sel({"forecast_source": "climatology"}), np.abs(error).mean(1), rtol=1e-6)
        np.testing.assert_allclose(scores["rmse"].sel({"forecast_source": "forecast"}), 0, atol=1e-6)
        np.testing.assert_allclose(scores["crps"].sel({"forecast_source": "forecast"}), 0, atol=1e-6)
        np.testing.assert_allclose(scores["max_spectrum_ratio"].sel({"forecast_source": "forecast"}), 1, rtol=1e-5)


def test_two_channels_in_2d_and_leads_beyond_the_truth(tmp_path, capsys):
    shape = (2, 6, 8, 6)
    fields = {"u": random_truth(shape, seed=4), "v": random_truth(shape, seed=5)}
    init_index, init_frame, leads = [1, 0], [1, 2], 5  # frame 2 + 5 = 7 > 5: leads 4 and 5 have no truth
    members = {c: np.stack([v[i, f + 1:f + 1 + leads] if f + leads < 6 else
                            np.concatenate([v[i, f + 1:], np.zeros((f + leads - 5, 8, 6))])
                            for i, f in zip(init_index, init_frame)])[:, None].repeat(2, 1)
               for c, v in fields.items()}
    assert evaluate(tmp_path, make_forecast(members, init_index, init_frame),
                    write_truth(tmp_path / "truth.h5", fields)) == 0
    assert "warning: leads 4..5 go beyond the truth's 6 frames" in capsys.readouterr().err
    scores = xr.open_dataset(tmp_path / "scores.nc")
    assert scores.sizes == {"forecast_source": 3, "lead_time": 3, "channel": 2, "rank": 3}
    np.testing.assert_allclose(scores["rmse"].sel({"forecast_source": "forecast"}), 0, atol=1e-6)
    assert (scores["rmse"].sel({"forecast_source": "persistence"}) > 0.5).all()


def test_lead_chunks_and_lead_scores_shapes(tmp_path):
    truth = random_truth(seed=6)
    init_index, init_frame, leads = [0, 2], [0, 1], 7
    members = truth_windows(truth, init_index, init_frame, leads)[:, None] + np.random.default_rng(0).normal(
        size=(2, 5, leads, X))
    forecast = make_forecast({"u": members}, init_index, init_frame)
    truth_file = write_truth(tmp_path / "truth.h5", {"u": truth})
    whole = score_forecast(forecast, truth_file, lead_chunk=16)
    chunked = score_forecast(forecast, truth_file, lead_chunk=3)
    xr.testing.assert_allclose(whole, chunked)
    out = lead_scores(torch.randn(2, 4, 3, 5, 8, 6), torch.randn(2, 3, 5, 8, 6), weights=torch.rand(8, 6))
    assert set(out) == {*SCORES, "rank_histogram"}
    assert all(out[k].shape == (3, 5) for k in SCORES) and out["rank_histogram"].shape == (3, 5, 5)


@pytest.mark.parametrize("case, message", [
    ("grid", "grid mismatch"),
    ("channel", "missing field"),
    ("index", "init_index [3] out of range"),
    ("leads", "no forecast lead overlaps the truth"),
    ("file", "no such forecast file"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, case, message):
    truth = random_truth(seed=7)
    truth_file = write_truth(tmp_path / "truth.h5", {"u": truth[..., ::2] if case == "grid" else truth})
    init_index = [3] if case == "index" else [0]
    init_frame = [T - 1] if case == "leads" else [0]
    forecast = make_forecast({"w" if case == "channel" else "u": np.zeros((1, 2, 3, X))}, init_index, init_frame)
    argv = ["--truth", str(truth_file), "--out", str(tmp_path / "scores.nc")]
    if case == "file":
        assert main(["evaluate", "--forecast", str(tmp_path / "none.nc"), *argv]) == 2
    else:
        assert evaluate(tmp_path, forecast, truth_file) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("funcdiff evaluate: error:") and message in err and "\n" not in err
    assert not (tmp_path / "scores.nc").exists()


def test_a_different_frame_spacing_warns(tmp_path):
    truth = random_truth(seed=8)
    forecast = make_forecast({"u": truth_windows(truth, [0], [0], 3)[:, None]}, [0], [0], dt=2 * DT)
    with pytest.warns(UserWarning, match="frame spacing"):
        score_forecast(forecast, write_truth(tmp_path / "truth.h5", {"u": truth}))
