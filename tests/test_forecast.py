"""Forecasting end to end: a tiny trained rolling forecaster, the ``forecast`` CLI (streamed netCDF, resume,
chunking, seeds, errors), memory that does not grow with the lead time."""

from __future__ import annotations

import gc
import json
import weakref

import numpy as np
import pytest
import torch
import xarray as xr

from funcdiff.cli import main
from funcdiff.config import ForecastConfig, config_from_dict
from funcdiff.data import generate_to_hdf5
from funcdiff.data.synthetic import SyntheticProblem
from funcdiff.noise import GaussianRandomField
from funcdiff.tasks import forecast_io
from funcdiff.tasks.forecast import Forecast, Forecaster, forecast, load_forecaster, rollout
from funcdiff.training import train
from funcdiff.training.forecast import trajectory_split

N_TRAJ, RES, FRAMES, SHIFT = 20, 32, 24, 2


def _advection(num_samples, resolution, *, generator, device="cpu", dtype=torch.float32, frames=FRAMES, shift=SHIFT):
    """Smooth periodic GRFs translated by ``shift`` grid points per frame (persistence is poor by lead 5)."""
    grf = GaussianRandomField(dim=1, smoothness=2.0, length_scale=0.08)
    u0 = grf.sample((num_samples, 1, resolution), generator=generator, dtype=torch.float64)[:, 0]
    u = torch.stack([torch.roll(u0, shift * t, dims=-1) for t in range(frames)], dim=1)
    return {"u": u.to(device, dtype), "t": torch.arange(frames, dtype=dtype) * 0.1}


ADVECTION = SyntheticProblem("advection", "trajectory", ("u",), {"frames": FRAMES, "shift": SHIFT}, _advection,
                             "advected periodic GRFs (test data)")


def _config(tmp, **forecast) -> dict:
    return {"name": "advection-rolling",
            "data": {"source": "file", "path": str(tmp / "adv.h5"), "channels": ["u"], "dim": 1, "test_fraction": 0.2},
            "noise": {"smoothness": 1.0, "length_scale": 0.05},
            "model": {"backbone": "fno", "n_modes": [12], "hidden_channels": 16, "n_layers": 2, "emb_dim": 16,
                      "norm_groups": 4},
            "train": {"steps": 300, "batch_size": 16, "lr": 3e-3, "warmup_steps": 20, "out_dir": str(tmp / "run"),
                      "log_every": 0, "eval_every": 0, "checkpoint_every": 0, "device": "cpu"},
            "forecast": {"kind": "rolling", "history": 1, "horizon": 3, "steps_per_frame": 4, **forecast}}


def tiny_forecaster(tmp, **data) -> None:
    """Six 16-point advection trajectories in ``tmp/adv.h5`` and a rolling forecaster trained 2 steps in ``tmp/run``
    (``data`` updates the config's data section): the smallest checkpoint the CLI and batch tests run."""
    generate_to_hdf5(ADVECTION, tmp / "adv.h5", num_samples=6, resolution=16, seed=0, batch_size=6, progress=False)
    config = _config(tmp)
    config["train"].update(steps=2, batch_size=4)
    config["data"].update(data)
    train(config_from_dict(config), progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("forecast")
    generate_to_hdf5(ADVECTION, tmp / "adv.h5", num_samples=N_TRAJ, resolution=RES, seed=0, batch_size=N_TRAJ,
                     progress=False)
    config = config_from_dict(_config(tmp))
    train(config, progress=False)
    test_idx = trajectory_split(N_TRAJ, config)[1]
    assert len(test_idx) == 4  # 20 % of 20
    return tmp, [int(i) for i in test_idx]


def test_trained_forecaster_beats_persistence_in_crps_on_held_out_trajectories(trained):
    tmp, held_out = trained
    starts = [forecast_io.initial_from_file(tmp / "adv.h5", ("u",), i, 0, 1) for i in held_out]
    initial, truth = torch.stack([s[0] for s in starts]), torch.stack([s[1] for s in starts])
    fcst = forecast(tmp / "run", initial, 6, members=8, seed=1)
    crps = fcst.scores(truth)["crps"][0]
    persistence = (truth[:, :, 4] - initial[:, :, -1]).abs().mean()  # CRPS of a one-member forecast = MAE
    assert float(crps[4]) < 0.7 * float(persistence), (crps, persistence)
    assert fcst.nfe_per_frame == 8


def _run_cli(tmp, out, *extra):
    return main(["forecast", "--checkpoint", str(tmp / "run"), "--initial", str(tmp / "adv.h5"), "--index", "3",
                 "--lead-steps", "7", "--members", "3", "--seed", "5", "--out", str(out), "--no-progress",
                 "--no-plot", *extra])


def _values(path):
    with xr.open_dataset(path) as ds:
        return ds.load()


def test_cli_forecast_layout_and_evaluate(trained, tmp_path):
    tmp, _ = trained
    out = tmp_path / "f.nc"
    assert _run_cli(tmp, out, "--no-plot") == 0
    ds = _values(out)
    assert dict(ds.sizes) == {"init": 1, "member": 3, "lead_time": 7, "x": RES}
    assert np.allclose(ds["lead_time"].values, 0.1 * np.arange(1, 8), atol=1e-6)
    assert int(ds["completed_leads"][0]) == 7 and int(ds["init_index"][0]) == 3
    assert isinstance(ds.attrs["seed"], (int, np.integer)) and json.loads(ds.attrs["channels"]) == ["u"]
    assert not (tmp_path / "f.nc.partial").exists() and not (tmp_path / "f.nc.state.pt").exists()
    assert main(["evaluate", "--forecast", str(out), "--truth", str(tmp / "adv.h5"), "--out",
                 str(tmp_path / "s.nc")]) == 0
    with_plot = ["--plot", str(tmp_path / "p.png")]
    assert main(["forecast", "--checkpoint", str(tmp / "run"), "--initial", str(tmp / "adv.h5"), "--lead-steps", "7",
                 "--members", "2", "--out", str(tmp_path / "p.nc"), "--no-progress", *with_plot]) == 0
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_same_seed_same_forecast_and_rerun_is_a_no_op(trained, tmp_path):
    tmp, _ = trained
    a, b = tmp_path / "a.nc", tmp_path / "b.nc"
    assert _run_cli(tmp, a) == 0 and _run_cli(tmp, b) == 0
    assert _values(a)["u"].equals(_values(b)["u"])
    before = a.stat().st_mtime_ns
    assert _run_cli(tmp, a) == 0 and a.stat().st_mtime_ns == before  # complete: nothing redone
    c = tmp_path / "c.nc"
    assert _run_cli(tmp, c, "--seed", "6") == 0
    assert not _values(a)["u"].equals(_values(c)["u"])


class _Killed(BaseException):
    """A process killed mid-write (SIGKILL): nothing in funcdiff handles it."""


@pytest.mark.parametrize("die_in", ["write_leads", "_save_state"])
def test_killed_forecast_resumes_bit_identical(trained, tmp_path, monkeypatch, die_in):
    """A run killed after 3 steps (inside the netCDF write, or between it and the state file) and rerun with the
    same command ends with exactly the values of an uninterrupted run."""
    tmp, _ = trained
    whole = tmp_path / "whole.nc"
    assert _run_cli(tmp, whole) == 0
    original = getattr(forecast_io, die_in)
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise _Killed  # stands in for SIGKILL at that point
        return original(*args, **kwargs)

    monkeypatch.setattr(forecast_io, die_in, dying)
    killed = tmp_path / "killed.nc"
    with pytest.raises(_Killed):
        _run_cli(tmp, killed)
    assert (tmp_path / "killed.nc.partial").exists() and not killed.exists()
    monkeypatch.setattr(forecast_io, die_in, original)
    assert _run_cli(tmp, killed) == 0
    a, b = _values(whole), _values(killed)
    assert a["u"].equals(b["u"]) and a["completed_leads"].equals(b["completed_leads"])


def test_chunked_members_equal_unchunked(trained):
    tmp, _ = trained
    fc = load_forecaster(tmp / "run")
    initial = forecast_io.initial_from_file(tmp / "adv.h5", ("u",), 2, 0, 1)[0]
    whole = Forecast(fc, initial, 5, members=5, seed=2).to_tensor()
    chunked = Forecast(fc, initial, 5, members=5, seed=2, batch_size=2).to_tensor()
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    first_two = Forecast(fc, initial, 5, members=2, seed=2).to_tensor()
    torch.testing.assert_close(first_two, whole[:, :2], rtol=1e-5, atol=1e-5)  # a member never depends on M


class _Shift:
    """A cheap conditional denoiser: the next frames are shifted copies of the last history frame."""

    def __call__(self, x, sigma, cond):
        frames = [torch.roll(cond[:, -1:], k + 1, dims=-1) for k in range(x.shape[1])]
        return torch.cat(frames, dim=1)


def test_rollout_memory_is_flat_in_the_number_of_frames():
    fc = Forecaster(_Shift(), GaussianRandomField(dim=2, smoothness=0.0), ForecastConfig(kind="rolling", horizon=2),
                    ("u",))
    initial = torch.randn(1, 1, 48, 48)
    alive = []
    for leads, frames, state in rollout(fc, initial, 500, members=4, steps_per_frame=1):
        alive.append(weakref.ref(frames))
        del frames
        assert state.history.shape == (4, 1, 48, 48) and state.window.shape == (4, 2, 48, 48)
    gc.collect()
    assert leads == [500] and sum(ref() is not None for ref in alive) == 0  # the loop keeps no emitted frame


def _fails(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_forecast_user_errors_are_one_line(trained, tmp_path, capsys):
    tmp, _ = trained
    base = ["forecast", "--checkpoint", str(tmp / "run"), "--initial", str(tmp / "adv.h5"), "--lead-steps", "3",
            "--out", str(tmp_path / "e.nc"), "--no-progress", "--no-plot"]
    assert "--start-frame 99 must lie in" in _fails(capsys, base + ["--start-frame", "99"])  # the library's
    # CUDA graphs on a CPU: refused before anything loads, for one forecast and for a batch of start states
    assert "--cuda-graphs needs a CUDA --device, got 'cpu'" in _fails(capsys, base + ["--cuda-graphs"])
    batch = [*base[:7], "--indices", "0", "--out-dir", str(tmp_path / "parts"), "--no-progress", "--cuda-graphs"]
    assert "--cuda-graphs needs a CUDA --device" in _fails(capsys, batch)
    assert "--index 99 is out of range" in _fails(capsys, base + ["--index", "99"])  # index=99, as flags
    # a checkpoint that is not a forecaster
    static = config_from_dict({"data": {"num_samples": 8, "resolution": 16}, "model": {"n_modes": [4, 4],
                               "hidden_channels": 8, "n_layers": 1, "norm_groups": 4},
                               "train": {"steps": 1, "batch_size": 4, "out_dir": str(tmp_path / "static"),
                                         "log_every": 0, "eval_every": 0, "device": "cpu"}})
    train(static, progress=False)
    assert "not a forecaster" in _fails(capsys, [*base[:2], str(tmp_path / "static"), *base[3:]])
    # observations outside the forecast (sensors up to lead 6, a forecast of 3 leads)
    held = str(trained[1][0])
    on_held = base + ["--index", held]  # errors found after reading the initial state: no training-data warning
    assert main([*base[:6], "7", *base[7:], "--index", held, "--out", str(tmp_path / "twin.nc"), "--sensor-fraction",
                 "0.1", "--sensor-every", "2"]) == 0
    twin = str(tmp_path / "twin.sensors.nc")
    assert "outside the forecast" in _fails(capsys, on_held + ["--observations", twin])
    # one trajectory's sensors are not another's (they were assimilated into it silently before)
    assert f"not for trajectory {trained[1][1]}" in _fails(capsys, base + ["--index", str(trained[1][1]),
                                                                          "--observations", twin])
    # the initial file lacks the channel, or holds NaN
    import h5py

    bad = tmp_path / "bad.h5"
    generate_to_hdf5(ADVECTION, bad, num_samples=2, resolution=RES, seed=1, batch_size=2, progress=False)
    with h5py.File(bad, "a") as f:
        f["u"][0, 0, 3] = np.nan
    assert "NaN" in _fails(capsys, [*base[:4], str(bad), *base[5:], "--index", "0"])
    small = tmp_path / "small.h5"
    generate_to_hdf5(ADVECTION, small, num_samples=2, resolution=8, seed=1, batch_size=2, progress=False)
    assert "grid" in _fails(capsys, [*base[:4], str(small), *base[5:]])
    assert "--sensor-fraction" in _fails(capsys, base + ["--sensor-fraction", "0.1", "--observations", "x.nc"])
    assert "(0, 1]" in _fails(capsys, base + ["--sensor-fraction", "2.0"])
    assert "--sensor-every 4" in _fails(capsys, on_held + ["--sensor-fraction", "0.1"])  # 3 leads, sensors every 4
    assert "obs_time" in _fails(capsys, on_held + ["--observations", str(tmp / "adv.h5")])


def test_python_api_takes_one_or_several_2d_initial_states():
    fc = Forecaster(_Shift(), GaussianRandomField(dim=2), ForecastConfig(kind="rolling", horizon=2), ("w",))
    one = Forecast(fc, torch.randn(1, 1, 8, 8), 3, members=2, seed=0)  # (C, T0, H, W)
    several = Forecast(fc, torch.randn(3, 1, 1, 8, 8), 3, members=2, seed=0)  # (n_init, C, T0, H, W)
    assert one.to_tensor().shape == (1, 2, 1, 3, 8, 8) and several.to_tensor().shape == (3, 2, 1, 3, 8, 8)
    scores = one.scores(torch.randn(1, 3, 8, 8))
    assert scores["crps"].shape == (1, 3) and scores["rank_histogram"].shape == (1, 3, 3)


def test_twin_sensors_of_each_initial_state_come_from_its_own_trajectory(trained, tmp_path, capsys):
    """Issue 18: with --index 6 --index 7 both rollouts assimilated trajectory 6's sensors. Each initial state now
    observes its own truth, and its sensors equal those of a run that starts from it alone (same seed)."""
    from funcdiff.guidance.timed import load_timed_observations

    tmp, held_out = trained
    a, b = held_out[:2]
    common = ["--lead-steps", "6", "--members", "2", "--seed", "3", "--sensor-fraction", "0.25", "--sensor-every",
              "2", "--sensor-noise", "0.01", "--no-progress", "--no-plot"]
    run = ["forecast", "--checkpoint", str(tmp / "run"), "--initial", str(tmp / "adv.h5")]
    assert main(run + ["--index", str(a), "--index", str(b), "--out", str(tmp_path / "two.nc"), *common]) == 0
    assert main(run + ["--index", str(b), "--out", str(tmp_path / "one.nc"), *common]) == 0
    two = load_timed_observations(tmp_path / "two.sensors.nc")
    one = load_timed_observations(tmp_path / "one.sensors.nc")
    assert two.init_index == (a, b) and one.init_index == (b,)
    starts = {i: forecast_io.initial_from_file(tmp / "adv.h5", ("u",), i, None, 1) for i in (a, b)}
    for k, i in enumerate((a, b)):
        obs = two.observations[k]
        truth = starts[i][1][:, [1, 3, 5]].movedim(1, 0).double()  # leads 2, 4, 6
        noise_free = obs.sensors.observe(truth)
        error = (obs.sensors.values - noise_free).abs().max()
        assert 0 < float(error) < 0.06, (i, float(error))  # its own truth plus 1 % noise
        other = starts[b if i == a else a][1][:, [1, 3, 5]].movedim(1, 0).double()
        assert float((obs.sensors.values - obs.sensors.observe(other)).abs().max()) > 0.2
    # the second state's sensors do not depend on the first sharing the run
    torch.testing.assert_close(two.observations[1].sensors.values, one.observations[0].sensors.values)
    torch.testing.assert_close(two.observations[1].sensors.coords, one.observations[0].sensors.coords)
    # a sensor file serves the run of the same initial states, matched by index, in any order
    assert main(run + ["--index", str(b), "--out", str(tmp_path / "again.nc"), "--observations",
                       str(tmp_path / "two.sensors.nc"), *common[:6], "--no-progress", "--no-plot"]) == 0
    with xr.open_dataset(tmp_path / "again.nc") as again, xr.open_dataset(tmp_path / "one.nc") as ds1:
        np.testing.assert_allclose(again["u"].values, ds1["u"].values, rtol=1e-5, atol=1e-5)


def test_one_observation_for_several_initial_states_is_refused():
    from funcdiff.errors import UserError
    from funcdiff.guidance.timed import make_timed_observation

    fc = Forecaster(_Shift(), GaussianRandomField(dim=1), ForecastConfig(kind="rolling", horizon=2), ("u",))
    truth = torch.randn(1, 5, 16)
    obs = make_timed_observation(truth, [2, 4], fc.dt, fraction=0.25)
    initial = torch.randn(2, 1, 1, 16)
    with pytest.raises(UserError, match="one per initial state"):
        Forecast(fc, initial, 4, members=2, observations=obs)
    run = Forecast(fc, initial, 4, members=2, observations=[None, obs])
    assert run.observations_for(0) is None and run.observations_for(1) is obs


def test_sensor_flags_that_would_be_ignored_are_errors(trained, tmp_path, capsys):
    tmp, held_out = trained
    base = ["forecast", "--checkpoint", str(tmp / "run"), "--initial", str(tmp / "adv.h5"), "--index",
            str(held_out[0]), "--lead-steps", "3", "--out", str(tmp_path / "e.nc"), "--no-progress", "--no-plot"]
    assert "--sensor-fraction" in _fails(capsys, base + ["--sensor-every", "2"])
    assert "--sensor-fraction" in _fails(capsys, base + ["--sensor-noise", "0.1"])
    # sensors that stop where the truth ends: one warning line, the run goes on
    long = [*base[:8], "30", *base[9:], "--members", "1", "--steps-per-frame", "1", "--sensor-fraction", "0.2",
            "--sensor-every", "5"]
    assert main(long) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning" in err[0] and "stop at lead 20 of 30" in err[0], err


def test_held_out_trajectories_are_recorded_printed_and_training_data_warned(trained, tmp_path, capsys):
    """Issue 18: the README forecast trajectories 0 and 1 — training data — and nothing said so."""
    tmp, held_out = trained
    train_idx = [i for i in range(N_TRAJ) if i not in held_out]
    assert main(["data", "info", "--checkpoint", str(tmp / "run")]) == 0
    out = capsys.readouterr().out
    assert f"held out for validation (trajectories of {N_TRAJ}): {held_out}" in out and "adv.h5" in out
    base = ["forecast", "--checkpoint", str(tmp / "run"), "--initial", str(tmp / "adv.h5"), "--lead-steps", "2",
            "--members", "1", "--steps-per-frame", "1", "--no-progress", "--no-plot"]
    assert main(base + ["--index", str(held_out[0]), "--out", str(tmp_path / "held.nc")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(base + ["--index", str(held_out[0]), "--index", str(train_idx[0]), "--out",
                        str(tmp_path / "train.nc")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning" in err[0] and f"trajectory {train_idx[0]} of" in err[0], err
    assert str(held_out) in err[0]
    # evaluate repeats it from the split the forecast file recorded
    assert main(["evaluate", "--forecast", str(tmp_path / "train.nc"), "--truth", str(tmp / "adv.h5"), "--out",
                 str(tmp_path / "scores.nc"), "--plot", str(tmp_path / "scores.png")]) == 0
    err = capsys.readouterr().err
    assert f"trajectory {train_idx[0]} of" in err and "training split" in err



def test_unreadable_initial_files_and_other_channels_are_one_line(trained, tmp_path, capsys):
    tmp, held_out = trained
    base = ["forecast", "--checkpoint", str(tmp / "run"), "--index", str(held_out[0]), "--lead-steps", "2",
            "--out", str(tmp_path / "e.nc"), "--no-progress", "--no-plot"]
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    assert "empty.h5" in _fails(capsys, base + ["--initial", str(empty)])
    other = tmp_path / "other.h5"
    generate_to_hdf5(SyntheticProblem("other", "trajectory", ("w",), {"frames": FRAMES, "shift": SHIFT},
                                      lambda *a, **k: {"w": _advection(*a, **k)["u"], "t": _advection(*a, **k)["t"]},
                                      "other channel"),
                     other, num_samples=2, resolution=RES, seed=1, batch_size=2, progress=False)
    assert "'u'" in _fails(capsys, base[:4] + ["0"] + base[5:] + ["--initial", str(other)])


def test_ctrl_c_in_forecast_says_how_to_resume(trained, tmp_path, capsys, monkeypatch):
    tmp, held_out = trained
    from funcdiff.tasks import forecast_io as fio

    real = fio.write_leads
    calls = []

    def interrupt_after_one(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fio, "write_leads", interrupt_after_one)
    argv = ["forecast", "--checkpoint", str(tmp / "run"), "--initial", str(tmp / "adv.h5"), "--index",
            str(held_out[0]), "--lead-steps", "3", "--members", "2", "--out", str(tmp_path / "k.nc"), "--no-progress",
            "--no-plot"]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and len(err) == 1 and "interrupted" in err[0] and "rerun the same command" in err[0], err
    monkeypatch.setattr(fio, "write_leads", real)
    assert main(argv) == 0 and (tmp_path / "k.nc").exists()


def test_batch_twin_sensors_read_each_case_from_its_own_trajectory(trained, tmp_path):
    """A batch case with twin sensors equals `forecast --index I --seed <case_seed>` with the same sensor flags."""
    tmp, held_out = trained
    a, b = held_out[:2]
    sensor = ["--sensor-fraction", "0.25", "--sensor-every", "2", "--sensor-noise", "0.01"]
    common = ["forecast", "--checkpoint", str(tmp / "run"), "--initial", str(tmp / "adv.h5"), "--lead-steps", "4",
              "--members", "2", "--steps-per-frame", "2", "--no-progress", "--no-plot", *sensor]
    assert main(common + ["--indices", f"{a},{b}", "--seed", "7", "--out-dir", str(tmp_path / "batch")]) == 0
    parts = sorted((tmp_path / "batch" / "parts").glob("*.nc"))
    assert len(parts) == 2
    for part in parts:
        with xr.open_dataset(part) as ds:
            index, seed, batch = int(ds["init_index"].values[0]), int(ds.attrs["case_seed"]), ds["u"].values
        single = tmp_path / f"single_{index}.nc"
        assert main(common + ["--index", str(index), "--seed", str(seed), "--out", str(single)]) == 0
        with xr.open_dataset(single) as ds:
            np.testing.assert_allclose(ds["u"].values, batch, rtol=1e-5, atol=1e-5)


def test_channel_flag_is_checked_before_the_run_and_drawn(trained, tmp_path, capsys):
    tmp, held_out = trained
    base = ["forecast", "--checkpoint", str(tmp / "run"), "--initial", str(tmp / "adv.h5"), "--index",
            str(held_out[0]), "--lead-steps", "2", "--members", "1", "--steps-per-frame", "1", "--no-progress",
            "--out", str(tmp_path / "c.nc")]
    assert "channels are ['u']" in _fails(capsys, base + ["--channel", "w"])
    assert "--no-plot" in _fails(capsys, base + ["--channel", "u", "--no-plot"])
    assert not (tmp_path / "c.nc").exists()
    assert main(base + ["--channel", "u"]) == 0 and (tmp_path / "c.png").exists()
