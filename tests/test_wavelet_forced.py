"""Whole-trajectory models conditioned on a time-independent forcing (``forecast.forcing``, burgers_shock_forced)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from funcdiff.config import config_from_dict
from funcdiff.pde import get_problem
from funcdiff.tasks.forecast import forecast, load_forecaster
from funcdiff.training.forecast import trajectory_split
from funcdiff.training.trainer import Trainer
from funcdiff.kinds.trajectory import TrajectoryCoder

T, X = 8, 32


def _data(n: int = 6) -> torch.Tensor:
    """Forced Burgers trajectories (n, 2, 1 + T, X): channels u, f (f repeated over the frames)."""
    out = get_problem("burgers_shock_forced").generate(n, X, generator=torch.Generator().manual_seed(0), nu=1e-2,
                                                      dt=0.02, num_frames=1 + T, forcing_amplitude=1.0)
    return torch.stack([out["u"], out["f"]], dim=1)


def _config(tmp_path, kind: str = "wavelet", channels=("u", "f"), forcing=("f",), name: str = "m"):
    return config_from_dict({
        "data": {"channels": list(channels), "dim": 1, "test_fraction": 0.34, "seed": 0},
        "noise": {"smoothness": 2.0, "length_scale": 0.1},
        "model": {"backbone": "fno", "n_modes": [2, 6], "hidden_channels": 8, "n_layers": 1, "emb_dim": 16,
                  "norm_groups": 4},
        "train": {"steps": 3, "batch_size": 2, "warmup_steps": 1, "eval_every": 0, "checkpoint_every": 0,
                  "log_every": 1, "out_dir": str(tmp_path / name)},
        "forecast": {"kind": "trajectory", "history": 1, "horizon": T, "stride": T, "forcing": list(forcing)},
        "transform": {"kind": kind, "wavelet": "db2", "levels": 1, "axes": ["time", "x"]}})


@pytest.mark.parametrize("kind", ["wavelet", "identity"])
def test_forcing_is_a_clean_conditioning_channel_and_the_state_is_the_unforced_one(tmp_path, kind):
    data = _data()
    forced = Trainer.from_config(_config(tmp_path, kind), fields=data, progress=False)
    plain = Trainer.from_config(_config(tmp_path, kind, channels=("u",), forcing=(), name="p"), fields=data[:, :1],
                                progress=False)
    ks, k = (2, 4) if kind == "wavelet" else (1, 1)
    mc = forced.model_config
    assert (mc["in_channels"], mc["out_channels"], mc["cond_channels"]) == (k, k, 2 * ks)
    assert forced.kind.coder.state_channels == k and forced.kind.coder.cond_channels == 2 * ks
    a, b = forced.train_x, plain.train_x
    assert a.shape[1] == b.shape[1] + ks
    # u's conditioning channels and the diffused state are exactly those of the model without forcing
    assert torch.equal(a[:, :ks], b[:, :ks]) and torch.equal(a[:, 2 * ks:], b[:, ks:])
    # the forcing channels are the forcing's own (spatial) transform, the same on every coarse frame
    f0 = forced.normalizer.encode(data[:, :, :1])[:, 1:, 0].float()
    coder = forced.kind.coder
    if kind == "wavelet":
        expected = coder.cond_transform.forward(torch.cat([torch.zeros_like(f0), f0], 1))[:, ks:]
        train_idx, _ = trajectory_split(data.shape[0], _config(tmp_path, kind))
        assert torch.allclose(a[:, ks:2 * ks, 0], expected[train_idx], atol=1e-6)
    assert torch.equal(a[:, ks:2 * ks, :1].expand_as(a[:, ks:2 * ks]), a[:, ks:2 * ks])


def test_decode_returns_the_forcing_on_every_frame_and_undoes_encode(tmp_path):
    data = _data()
    trainer = Trainer.from_config(_config(tmp_path, "wavelet"), fields=data, progress=False)
    coder: TrajectoryCoder = trainer.kind.coder
    windows = trainer.normalizer.encode(data).float()
    z = coder.encode_state(windows[:, :, 1:], windows[:, :, 0])
    assert z.shape[1] == 4
    back = coder.decode_state(z, windows[:, :, 0])
    assert back.shape == windows[:, :, 1:].shape
    assert torch.allclose(back, windows[:, :, 1:], atol=1e-5)
    assert torch.equal(back[:, 1], windows[:, 1, :1].expand(-1, T, -1))
    again = TrajectoryCoder.from_state_dict(coder.state_dict())
    assert again.forcing == 1 and torch.equal(again.decode_state(z, windows[:, :, 0]), back)


def test_trained_checkpoint_forecasts_with_the_initial_files_forcing(tmp_path):
    data = _data()
    cfg = _config(tmp_path)
    trainer = Trainer.from_config(cfg, fields=data, progress=False)
    trainer.fit()
    trainer.save_checkpoint()
    fc = load_forecaster(cfg.train.out_dir)
    initial = data[:2, :, :1]  # (2, C=2, 1, X): u0 and f
    run = forecast(fc, initial, T, members=2, seed=0, steps_per_frame=1)
    pred = run.to_tensor()  # (n, M, C, T, X)
    assert pred.shape == (2, 2, 2, T, X)
    assert torch.allclose(pred[:, :, 1], initial[:, None, 1].expand(-1, 2, T, -1), atol=1e-5)  # f carried exactly
    again = forecast(fc, initial, T, members=2, seed=0, steps_per_frame=1).to_tensor()
    assert torch.equal(again, pred)
    # the model reads the forcing: another forcing, same u0 and seed, gives another u trajectory
    other = initial.clone()
    other[:, 1] = -other[:, 1]
    moved = forecast(fc, other, T, members=2, seed=0, steps_per_frame=1).to_tensor()
    assert float((moved[:, :, 0] - pred[:, :, 0]).abs().max()) > 1e-4


def test_forcing_config_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="last data.channels"):
        _config(tmp_path, channels=("f", "u"))
    with pytest.raises(ValueError, match="last data.channels"):
        _config(tmp_path, channels=("f",))
    with pytest.raises(ValueError, match="trajectory only"):
        config_from_dict({"data": {"channels": ["u", "f"]}, "forecast": {"kind": "autoregressive", "forcing": ["f"]}})


def test_cli_generate_train_forecast_reads_the_forcing_from_the_initial_file(tmp_path):
    """`funcdiff data generate burgers_shock_forced` -> `funcdiff train` of the shipped config (tiny overrides) ->
    `funcdiff forecast` from the data file: the netCDF carries u and the file's own forcing f on every lead."""
    import h5py
    import numpy as np
    import xarray as xr

    from funcdiff.cli import main

    data = tmp_path / "forced.h5"
    assert main(["data", "generate", "burgers_shock_forced", "--num-samples", "6", "--resolution", str(X), "--set",
                 "nu=0.01", "--set", "dt=0.02", "--set", f"num_frames={1 + T}", "--out", str(data), "--no-progress",
                 "--threads", "1"]) == 0
    shipped = Path(__file__).resolve().parents[1] / "configs" / "wavelet" / "burgers-shock-forced-wavelet.yaml"
    small = ["train.steps=3", "train.batch_size=2", "model.n_modes=[2, 6]", "model.hidden_channels=8",
             "model.n_layers=1", "model.emb_dim=16", "model.norm_groups=4", f"forecast.horizon={T}",
             f"forecast.stride={T}", "forecast.frame_step=1", "transform.levels=1", "transform.wavelet=db2",
             f"data.path={data}", "data.test_fraction=0.34"]
    argv = ["train", "--config", str(shipped), "--out-dir", str(tmp_path / "m"), "--seed", "1", "--device", "cpu",
            "--no-progress"]
    for item in small:
        argv += ["--set", item]
    assert main(argv) == 0
    out = tmp_path / "fc.nc"
    assert main(["forecast", "--checkpoint", str(tmp_path / "m"), "--initial", str(data), "--index", "5",
                 "--lead-steps", str(T), "--members", "2", "--out", str(out), "--no-progress", "--no-plot"]) == 0
    with h5py.File(data) as h5, xr.open_dataset(out) as ds:
        assert set(ds.data_vars) >= {"u", "f"} and ds["u"].shape == (1, 2, T, X)
        assert np.allclose(ds["f"].values, h5["f"][5, 0], atol=1e-6)
        assert np.isfinite(ds["u"].values).all()
