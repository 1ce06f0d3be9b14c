"""A tiny wavelet-domain trajectory model, trained in the test, places Burgers shocks better than the baseline.

Data: ``burgers_shock`` (nu = 1e-3) solved at 1024 points, subsampled to 64, frames from t = 0.3 (the shocks have
formed) every 0.08 time units; a block is 8 frames (0.64 time units) after an initial frame. The model: db2 over
(time, x), one level, diffusing the change from the initial frame (``transform.residual``), white noise on the
normalised coefficients, a 2-layer FNO of width 16, 800 steps.

Baseline (stated, honest): the initial state advected by its mean velocity, u0(x - ū t) -- ū is conserved by
Burgers' equation, so this is the exact solution of the linear part of the dynamics; it is what a forecaster that
does not know the nonlinearity would say. Score: the periodic distance between the positions of the steepest
descent (the shock) of each generated member and of the truth, averaged over frames 1..8, members and held-out
cases. The mean squared error must be lower too.
"""

from __future__ import annotations

import torch

from funcdiff.config import config_from_dict
from funcdiff.pde import get_problem
from funcdiff.tasks.forecast import forecast, load_forecaster
from funcdiff.tasks.trajectory import advected_initial_state, shock_error
from funcdiff.training.forecast import trajectory_split
from funcdiff.training.trainer import Trainer

FRAME_STEP, HORIZON, FILE_DT = 8, 8, 0.01


def test_tiny_wavelet_model_places_shocks_closer_than_the_advected_initial_state(tmp_path):
    out = get_problem("burgers_shock").generate(24, 1024, generator=torch.Generator().manual_seed(0), dt=FILE_DT,
                                                num_frames=161)
    traj = out["u"][:, 30:, ::16].unsqueeze(1).float()  # (24, 1, 131, 64), t from 0.3
    config = config_from_dict({
        "data": {"channels": ["u"], "dim": 1, "test_fraction": 0.25},
        "noise": {"smoothness": 2.0, "length_scale": 0.05},
        "model": {"n_modes": [3, 16], "hidden_channels": 16, "n_layers": 2, "emb_dim": 32, "norm_groups": 4},
        "train": {"steps": 800, "batch_size": 8, "lr": 2e-3, "warmup_steps": 20, "ema_decay": 0.99, "eval_every": 0,
                  "checkpoint_every": 0, "log_every": 100, "out_dir": str(tmp_path / "run"), "seed": 0},
        "forecast": {"kind": "trajectory", "history": 1, "horizon": HORIZON, "frame_step": FRAME_STEP, "stride": 2,
                     "steps_per_frame": 2},
        "transform": {"kind": "wavelet", "wavelet": "db2", "levels": 1, "axes": ["time", "x"], "noise": "white",
                      "residual": True}})
    trainer = Trainer.from_config(config, fields=traj, progress=False)
    trainer.fit()
    trainer.save_checkpoint()

    _, test_idx = trajectory_split(traj.shape[0], config)
    span = FRAME_STEP * HORIZON + 1
    windows = torch.stack([traj[i, :, s:s + span:FRAME_STEP] for i in test_idx.tolist() for s in (0, 20, 40)])
    initial, truth = windows[:, :, :1], windows[:, :, 1:]  # (n, 1, 1, 64), (n, 1, 8, 64)
    members = forecast(load_forecaster(tmp_path / "run"), initial, HORIZON, members=4, seed=0).to_tensor()
    assert members.shape == (len(windows), 4, 1, HORIZON, 64)

    times = torch.arange(1, HORIZON + 1, dtype=torch.float64) * FILE_DT * FRAME_STEP
    advected = advected_initial_state(initial[:, :, 0], times)  # (n, 1, 8, 64)
    model_error = float(shock_error(members, truth.unsqueeze(1)))
    baseline_error = float(shock_error(advected, truth))
    # measured: 0.0145 vs 0.0163 (one grid cell is 0.0156); MSE 0.0035 vs 0.0058
    assert model_error < baseline_error, (model_error, baseline_error)
    model_mse = float((members - truth.unsqueeze(1)).pow(2).mean())
    baseline_mse = float((advected - truth).pow(2).mean())
    assert model_mse < 0.8 * baseline_mse, (model_mse, baseline_mse)
