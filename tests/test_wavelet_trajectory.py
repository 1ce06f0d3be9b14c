"""Whole-trajectory diffusion through the wavelet transform (forecast.kind: trajectory): oracle, identity path,
checkpoint round trip, errors.

Oracle: Gaussian trajectories that are *diagonal in the wavelet basis* (independent raw coefficients with a
variance per subband). In the normalised coefficient space the coder fits, a band with raw variance v and fitted
(mean m, std s) is N(-m/s, v/s²) per coefficient, and with white coefficient noise the exact denoiser is
E[z | z + σε] = μ + w/(w + σ²)(z - μ) per coefficient. Sampling through the forecast loop (the trajectory step:
noise on the coefficient grid, the shared solver, the inverse transform) must give trajectories whose raw
coefficients have the variances v again -- for every solver.
"""

from __future__ import annotations

import math

import pytest
import torch

from funcdiff.config import ForecastConfig, SampleConfig, config_from_dict
from funcdiff.errors import UserError
from funcdiff.noise import GaussianRandomField
from funcdiff.sampling import get_solver, sigmas_karras
from funcdiff.tasks.forecast import Forecaster, load_forecaster, rollout
from funcdiff.kinds.trajectory import TrajectoryDiffusion
from funcdiff.training.forecast import trajectory_split
from funcdiff.training.loss import EDMLoss
from funcdiff.training.trainer import Trainer
from funcdiff.kinds.trajectory import CoefficientNoise, TrajectoryCoder, trajectory_noise
from funcdiff.transforms import WaveletTransform

T, X, LEVELS = 8, 16, 1
BAND_VAR = torch.tensor([4.0, 1.0, 0.25, 0.0625], dtype=torch.float64)  # a1, d1:ad, d1:da, d1:dd


def _diagonal_gaussian(n: int, seed: int) -> torch.Tensor:
    """Trajectories (n, 1, T, X) whose raw db2 coefficients are independent N(0, BAND_VAR[band])."""
    t = WaveletTransform("db2", LEVELS, ("time", "x"))
    band = t.band_ids((T, X))
    std = BAND_VAR.sqrt()[band].reshape(1, 1, -1, 1, 1)
    coarse = (T >> LEVELS, X >> LEVELS)
    z = torch.randn(n, 1, len(band), *coarse, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return t.raw_inverse(z * std, (T, X))


def _band_variance(traj: torch.Tensor) -> torch.Tensor:
    """Per-band variance of the raw db2 coefficients of (n, 1, T, X) trajectories."""
    t = WaveletTransform("db2", LEVELS, ("time", "x"))
    raw = t.raw_forward(traj.double())  # (n, 1, K, T', X')
    band = t.band_ids((T, X))
    return torch.stack([raw[:, :, band == b].var() for b in range(len(BAND_VAR))])


class ExactCoefficientDenoiser:
    """E[z | z + σ ε] for independent Gaussian normalised coefficients (mean mu, variance w per channel)."""

    def __init__(self, mu: torch.Tensor, w: torch.Tensor) -> None:
        self.mu, self.w = mu.reshape(1, -1, 1, 1), w.reshape(1, -1, 1, 1)

    def __call__(self, z: torch.Tensor, sigma, cond=None) -> torch.Tensor:
        s2 = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1, 1) ** 2
        out = self.mu + self.w / (self.w + s2) * (z.double() - self.mu)
        return out.to(z.dtype)


def _oracle_model() -> tuple[TrajectoryDiffusion, torch.Tensor]:
    coder = TrajectoryCoder(WaveletTransform("db2", LEVELS, ("time", "x")), WaveletTransform("db2", LEVELS, ("x",)), 1)
    train = _diagonal_gaussian(4000, seed=1).float()
    windows = torch.cat([torch.zeros(train.shape[0], 1, 1, X), train], dim=2)  # frame 0 first
    coder.fit(windows)
    stats, band = coder.transform.stats, coder.transform.band_ids((T, X))
    mean, std = torch.tensor(stats.mean[0], dtype=torch.float64), torch.tensor(stats.std[0], dtype=torch.float64)
    mu, w = (-mean / std)[band], (BAND_VAR / std**2)[band]
    noise = CoefficientNoise(GaussianRandomField(dim=2, smoothness=0.0), coder.transform, mapped=False)
    return TrajectoryDiffusion(ExactCoefficientDenoiser(mu, w), coder, noise), w


def _forecaster(model: TrajectoryDiffusion) -> Forecaster:
    return Forecaster(denoiser=model, noise=GaussianRandomField(dim=1), channel_names=("u",),
                      forecast=ForecastConfig(kind="trajectory", history=1, horizon=T, steps_per_frame=4),
                      sample=SampleConfig(sigma_min=0.002, sigma_max=40.0, rho=7.0))


@pytest.mark.parametrize("solver, steps_per_frame", [("euler", 32), ("heun", 4)])
def test_every_solver_reproduces_the_coefficient_variances_through_the_forecast_loop(solver, steps_per_frame):
    model, _ = _oracle_model()
    fc = _forecaster(model)
    initial = torch.zeros(1, 1, X)  # (C, frames, X): the oracle ignores the condition
    leads, frames, _ = next(rollout(fc, initial, T, members=600, seed=3, solver=solver,
                                    steps_per_frame=steps_per_frame))
    assert leads == list(range(1, T + 1)) and frames.shape == (600, 1, T, X)
    ratio = _band_variance(frames) / BAND_VAR
    # 600 samples x 32 coefficients per band: sampling error of a variance ~ 1 %; the discretisation error is
    # ~ 3 % for Heun with 32 steps and ~ 1 % for Euler with 256 (Euler with 32 steps: -13 %)
    assert torch.allclose(ratio, torch.ones(4, dtype=torch.float64), atol=0.06), ratio


def test_stochastic_solver_reproduces_the_coefficient_variances():
    model, _ = _oracle_model()
    shape = (600, model.coder.state_channels, *model.coder.coarse_grid(T, (X,)))
    gen = torch.Generator().manual_seed(4)
    x = 40.0 * model.noise.sample(shape, generator=gen)
    draw = lambda like: model.noise.sample(like.shape, generator=gen)  # noqa: E731
    # s_noise = 1: EDM's 1.003 inflates the variance on purpose (to offset a learned denoiser's bias)
    z = get_solver("stochastic")(lambda z, s: model(z, s), x, sigmas_karras(96, 0.002, 40.0, 7.0), noise=draw,
                                 s_noise=1.0)
    ratio = _band_variance(model.coder.decode_state(z, torch.zeros(600, 1, X))) / BAND_VAR
    assert torch.allclose(ratio, torch.ones(4, dtype=torch.float64), atol=0.06), ratio


def test_mapped_noise_is_the_physical_field_in_coefficients_and_its_covariance_is_consistent():
    coder = TrajectoryCoder(WaveletTransform("db4", 1, ("time", "x")), WaveletTransform("db4", 1, ("x",)), 1)
    windows = torch.randn(64, 1, 1 + T, X, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.5, 2, X)
    coder.fit(windows)
    grf = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.1)
    noise = CoefficientNoise(grf, coder.transform, mapped=True)
    shape = (2, 4, T // 2, X // 2)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    z = noise.sample(shape, generator=gens)
    phys = grf.sample((2, 1, T, X), generator=[torch.Generator().manual_seed(i) for i in range(2)])
    assert torch.allclose(z, coder.transform.linear_forward(phys))
    # <u, C_z v> = <u, D W C W^T D v> is symmetric and positive
    u, v = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    cu, cv = noise.apply_cov_power(u.float(), 1.0).double(), noise.apply_cov_power(v.float(), 1.0).double()
    assert math.isclose(float((u * cv).sum()), float((cu * v).sum()), rel_tol=1e-4)
    assert float((u * cu).sum()) > 0


# ------------------------------------------------------------------------------------------ training
def _trajectories(n: int = 12, frames: int = 9, x: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(n, 1, 1, x, generator=g).cumsum(-1)
    drift = torch.linspace(0, 1, frames).reshape(1, 1, frames, 1)
    return (base.roll(1, -1) * drift + base * (1 - drift)).float()  # (n, 1, frames, x)


def _config(tmp_path, kind: str = "wavelet", **extra) -> object:
    raw = {"data": {"channels": ["u"], "dim": 1, "test_fraction": 0.25},
           "noise": {"smoothness": 2.0, "length_scale": 0.1},
           "model": {"n_modes": [3, 6], "hidden_channels": 8, "n_layers": 1, "emb_dim": 16, "norm_groups": 4},
           "train": {"steps": 3, "batch_size": 3, "warmup_steps": 1, "eval_every": 0, "checkpoint_every": 0,
                     "log_every": 1, "out_dir": str(tmp_path / kind)},
           "forecast": {"kind": "trajectory", "history": 1, "horizon": 8, "stride": 8},
           "transform": {"kind": kind, "wavelet": "db2", "levels": 1, "axes": ["time", "x"]}}
    for key, value in extra.items():
        raw[key] = {**raw.get(key, {}), **value}
    return config_from_dict(raw)


def test_identity_transform_leaves_the_field_training_path_bit_identical(tmp_path):
    """A field model with `transform: identity` spelled out trains exactly as without the section."""
    base = {"data": {"source": "synthetic", "resolution": 16, "num_samples": 8, "dim": 2},
            "model": {"n_modes": [4, 4], "hidden_channels": 8, "n_layers": 1, "emb_dim": 16, "norm_groups": 4},
            "train": {"steps": 3, "batch_size": 4, "warmup_steps": 1, "eval_every": 0, "checkpoint_every": 0}}
    plain = config_from_dict({**base, "train": {**base["train"], "out_dir": str(tmp_path / "a")}})
    ident = config_from_dict({**base, "train": {**base["train"], "out_dir": str(tmp_path / "b")},
                              "transform": {"kind": "identity"}})
    runs = []
    for cfg in (plain, ident):
        trainer = Trainer.from_config(cfg, progress=False)
        assert trainer.kind.checkpoint_extra() == {}  # a field model: no transform state
        trainer.fit()
        runs.append(trainer.model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_identity_trajectory_model_is_the_physical_space_diffusion(tmp_path):
    """With `transform: identity` the items are [frame 0 repeated, frames 1..T] on the physical (T, X) grid, the
    noise is the `noise:` GRF on the space-time torus, and the loss is EDMLoss on those tensors, bit for bit."""
    traj = _trajectories()
    cfg = _config(tmp_path, "identity")
    trainer = Trainer.from_config(cfg, fields=traj, progress=False)
    train_idx, _ = trajectory_split(traj.shape[0], cfg)
    windows = trainer.normalizer.encode(traj[train_idx]).float()  # one 9-frame window per trajectory
    expected = torch.cat([windows[:, :, :1].expand(-1, -1, 8, -1), windows[:, :, 1:]], dim=1)
    assert torch.equal(trainer.train_x, expected)
    grf = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.1)
    assert trainer.noise.base == grf and not trainer.noise.mapped
    x = trainer.train_x[:3]
    reference = EDMLoss(grf, cond_channels=1)(trainer.model, x, torch.Generator().manual_seed(5))
    ours = trainer.loss_fn(trainer.model, x, torch.Generator().manual_seed(5))
    assert torch.equal(reference, ours)


def test_wavelet_checkpoint_round_trip_and_forecast_shapes(tmp_path):
    traj = _trajectories()
    cfg = _config(tmp_path, "wavelet", transform={"noise": "grf"})
    trainer = Trainer.from_config(cfg, fields=traj, progress=False)
    assert trainer.train_x.shape[1:] == (2 + 4, 4, 16)  # cond C·2 + state C·4 on (T/2, X/2)
    assert trainer.model_config["in_channels"] == 4 and trainer.model_config["cond_channels"] == 2
    trainer.fit()
    trainer.save_checkpoint()
    fc = load_forecaster(cfg.train.out_dir)
    assert isinstance(fc.denoiser, TrajectoryDiffusion) and fc.denoiser.noise.mapped
    assert fc.denoiser.coder.transform.stats == trainer.kind.coder.transform.stats
    # the stored transform maps the training trajectories to the trainer's items exactly
    windows = trainer.normalizer.encode(traj[:2]).float()
    items = fc.denoiser.coder.encode(windows)
    assert torch.allclose(fc.denoiser.coder.decode_state(items[:, 2:], windows[:, :, 0]), windows[:, :, 1:], atol=1e-5)
    # a forecast of 12 leads is two blocks of 8 frames (the second from the first block's last frame)
    blocks = list(rollout(fc, traj[0, :, :1], 12, members=2, seed=0, steps_per_frame=1))
    assert [b[0] for b in blocks] == [list(range(1, 9)), list(range(9, 13))]
    first_again = next(rollout(fc, traj[0, :, :1], 12, members=2, seed=0, steps_per_frame=1))[1]
    assert torch.equal(first_again, blocks[0][1])  # same seed, same trajectory
    # the kind wraps the network inside its TrajectoryDiffusion for CUDA graphs; off a GPU the wrapper calls it eagerly
    from funcdiff.models.graphs import GraphedDenoiser

    graphed = fc.model_kind.graphed(fc)
    assert isinstance(graphed.denoiser.denoiser, GraphedDenoiser) and graphed.denoiser.coder is fc.denoiser.coder
    assert torch.equal(next(rollout(graphed, traj[0, :, :1], 12, members=2, seed=0, steps_per_frame=1))[1],
                       blocks[0][1])


def test_trajectory_errors_are_clear(tmp_path):
    traj = _trajectories()
    with pytest.raises(UserError, match="divisible by 2"):
        Trainer.from_config(_config(tmp_path, forecast={"horizon": 7}, model={"n_modes": [2, 6]}), fields=traj,
                            progress=False)
    with pytest.raises(UserError, match="transform.axes"):
        Trainer.from_config(_config(tmp_path, transform={"axes": ["x", "time"]}), fields=traj, progress=False)
    with pytest.raises(UserError, match="forecast.kind: trajectory"):
        cfg = config_from_dict({"data": {"resolution": 16, "num_samples": 8}, "train": {"batch_size": 2},
                                "transform": {"kind": "wavelet", "axes": ["x", "y"]}})
        Trainer.from_config(cfg, progress=False)
    with pytest.raises(ValueError, match="history must be 1"):
        _config(tmp_path, forecast={"history": 2})


def test_trajectory_noise_choice_follows_the_config(tmp_path):
    coder = TrajectoryCoder.from_config(_config(tmp_path))
    white = trajectory_noise(_config(tmp_path), coder)
    assert white.is_white and white.dim == 2
    mapped = trajectory_noise(_config(tmp_path, transform={"noise": "grf"}), coder)
    assert mapped.mapped and mapped.base.smoothness == 2.0


def test_sensors_guide_the_trajectory_through_the_inverse_transform():
    """Sparse space-time sensors (a quarter of the points at leads 2 and 6) pull the oracle's samples onto the
    observed values: the guidance term reads the physical frames after the inverse transform, the correction is
    applied to the coefficients by the unchanged GuidedDenoiser."""
    from funcdiff.guidance.timed import make_timed_observation

    model, _ = _oracle_model()
    fc = _forecaster(model)
    truth = _diagonal_gaussian(1, seed=9)[0].float()  # (1, T, X)
    frames = torch.cat([torch.zeros(1, 1, X), truth], dim=1)  # lead 0 = the (ignored) initial frame
    obs = make_timed_observation(frames, [2, 6], fc.dt, fraction=0.25, noise_std=0.05, seed=0)
    initial = torch.zeros(1, 1, X)
    kwargs = dict(members=16, seed=1, steps_per_frame=2)
    plain = next(rollout(fc, initial, T, **kwargs))[1]
    guided = next(rollout(fc, initial, T, observations=obs, **kwargs))[1]
    assert torch.isfinite(guided).all()

    def misfit(samples: torch.Tensor) -> float:
        values = torch.stack([obs.at(k).observe(samples[:, :, lead - 1].double())
                              for k, lead in enumerate([2, 6])])
        return float((values - obs.sensors.values.unsqueeze(1)).pow(2).mean())

    assert misfit(guided) < 0.2 * misfit(plain)
    # unobserved frames stay samples of the prior (their variance is not collapsed by the guidance)
    ratio = _band_variance(guided[:, :, [0, 3, 4, 7]].repeat(1, 1, 2, 1)) / _band_variance(plain)
    assert bool((ratio > 0.3).all())
