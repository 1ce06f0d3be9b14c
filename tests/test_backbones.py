"""The uno and local_fno backbones: the same operator on two grids (converging as the grid refines), local kernels
scaled with the grid spacing, exact Fourier resampling between the U's levels, checkpoint round trip, every model
kind builds and trains with every backbone, and a tiny trained forecaster per backbone beats persistence."""

from __future__ import annotations

import io
import math

import pytest
import torch

from funcdiff.config import config_from_dict
from funcdiff.errors import UserError
from funcdiff.models import build_backbone, build_denoiser
from funcdiff.models.local_fno import GridDifferential, LocalIntegral
from funcdiff.models.uno import NoiseConditionedUNO, UNOConfig, fourier_rescale
from funcdiff.training import Trainer
from tests.test_models import band_limited_sampler, randomise, rel_err

NEW = ("uno", "local_fno")
KIND = "deterministic"  # the trained-forecaster test's kind


def small(name: str, n_modes, seed: int = 6, **kwargs):
    base = dict(in_channels=2, out_channels=2, n_modes=n_modes, hidden_channels=8, n_layers=2, emb_dim=16,
                norm_groups=4, noise_channel=True)
    return randomise(build_backbone(name, **{**base, **kwargs}), seed)


@pytest.mark.parametrize("name", NEW)
def test_same_weights_define_one_operator_that_converges_as_the_grid_refines(name):
    """The FNO's test (tests/test_models.py) for the new backbones. Exact sub-grid equality does not hold for them:
    the U's coarse levels are a factor of the input grid and the local kernels are discretisations, so the
    continuous operator is approached as the grid refines. Measured on 2-D (8, 8) modes against 256² on the
    sub-grid: uno 2.9e-2 / 3.6e-3 / 2.5e-4 and local_fno 1.4e-2 / 2.2e-3 / 2.9e-4 at 32² / 64² / 128²."""
    model = small(name, (8, 8))
    sample = band_limited_sampler(2, 2, 2, seed=7)
    with torch.no_grad():
        ref = model(sample((256, 256)), 0.3)
        errs = [rel_err(ref[..., :: 256 // n, :: 256 // n], model(sample((n, n)), 0.3)) for n in (32, 64, 128)]
    assert errs[0] < 6e-2 and errs[1] < 1e-2 and errs[2] < 1e-3, errs
    assert errs[0] > 3 * errs[1] > 9 * errs[2], errs  # at least 3x per halving of h


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("coarse,n_modes", [((48,), (12,)), ((20, 24, 24), (5, 6, 6)), ((47, 49), (8, 7))])
def test_two_grids_in_1d_3d_and_odd(name, coarse, n_modes):
    """Grids n and 2n (odd and anisotropic ones too) give the same function on the coarse grid's points."""
    model = small(name, n_modes, seed=3)
    sample = band_limited_sampler(2, len(coarse), 1, seed=4)
    fine = tuple(2 * n for n in coarse)
    with torch.no_grad():
        y_coarse, y_fine = model(sample(coarse), 0.3), model(sample(fine), 0.3)
    assert rel_err(y_fine[(..., *[slice(None, None, 2)] * len(coarse))], y_coarse) < 3e-2


def test_differential_kernel_is_the_derivative_divided_by_the_grid_spacing():
    """On u = sin(2 pi (k1 x + k2 y)), D u with identity mixing is (k1, k2) cos(.) (derivative / 2 pi), to O(h^4),
    on anisotropic grids too (h differs per axis)."""
    layer = GridDifferential(1, 2, dim=2)
    with torch.no_grad():
        layer.mix.linear.weight.copy_(torch.eye(2))
    k1, k2 = 2, 3
    errs = []
    for shape in ((32, 48), (64, 96), (128, 192)):
        x, y = (torch.arange(n, dtype=torch.float64) / n for n in shape)
        phase = 2 * math.pi * (k1 * x[:, None] + k2 * y[None, :])
        u = phase.sin()[None, None]
        exact = torch.stack([k1 * phase.cos(), k2 * phase.cos()])[None]
        with torch.no_grad():
            errs.append(rel_err(layer.double()(u), exact))
    assert errs[-1] < 1e-5 and errs[0] / errs[1] > 12 and errs[1] / errs[2] > 12, errs  # 4th order: 16x


def test_integral_kernel_has_a_physical_radius():
    """The stencil covers ~2 r n points per axis (more points as the grid refines), its radial kernels average a
    constant to itself and its first-moment kernels give 0 on it, and the discrete operator converges."""
    layer = LocalIntegral(1, 1, dim=2, radius=0.1, n_rings=2)
    for n in (20, 40, 80):
        basis = layer.stencils((n, n), torch.float64, "cpu")
        support = (basis.abs().sum(0) > 0).sum(dim=1).max()
        assert abs(int(support) - 2 * 0.1 * n) <= 1
        assert torch.allclose(basis[:2].flatten(1).sum(1), torch.ones(2, dtype=torch.float64))
        assert torch.allclose(basis[2:].flatten(1).sum(1), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    sample = band_limited_sampler(1, 2, 3, seed=1)
    layer = randomise(LocalIntegral(1, 2, dim=2, radius=0.1, n_rings=2), 2)
    with torch.no_grad():
        ref = layer(sample((320, 320)))
        errs = [rel_err(ref[..., :: 320 // n, :: 320 // n], layer(sample((n, n)))) for n in (40, 80, 160)]
    assert errs[0] > 2.5 * errs[1] > 6 * errs[2], errs


def test_uno_levels_are_factors_of_the_input_grid_and_resampling_is_exact():
    model = build_backbone("uno", in_channels=1, out_channels=1, n_modes=(3, 12), hidden_channels=8, levels=2,
                           norm_groups=4)
    assert isinstance(model, NoiseConditionedUNO) and model.config.level_modes() == [(3, 12), (3, 5), (3, 2)]
    assert model.grids((8, 64)) == [(8, 64), (8, 32), (8, 16)]  # the short axis keeps its grid
    assert model.grids((8, 128)) == [(8, 128), (8, 64), (8, 32)]
    sample = band_limited_sampler(3, 2, 3, seed=0)
    for size in ((9, 12), (16, 16), (40, 33)):
        assert rel_err(fourier_rescale(sample((20, 18)), size), sample(size)) < 1e-5
    # modes (m - 1) // 2 per level: any grid that exceeds n_modes passes every level (what the kinds check)
    uno = build_backbone("uno", in_channels=1, out_channels=1, n_modes=(12, 12), norm_groups=4)
    assert uno(torch.zeros(1, 1, 13, 13), 0.0).shape == (1, 1, 13, 13)
    with pytest.raises(ValueError, match="level 0 has the grid"):
        uno(torch.zeros(1, 1, 12, 12), 0.0)


@pytest.mark.parametrize("config, shape", [
    ({"backbone": "uno", "n_modes": [12, 12], "levels": 2}, (2, 2, 40, 36)),
    ({"backbone": "uno", "n_modes": [10], "levels": 1}, (2, 2, 50)),
    ({"backbone": "uno", "n_modes": [6, 6, 6], "levels": 1}, (2, 2, 14, 12, 16)),
    ({"backbone": "uno", "n_modes": [8, 8], "levels": 1, "local_kernels": ["differential", "integral"]}, (2, 2, 24, 20)),
    ({"backbone": "local_fno", "n_modes": [8, 8], "local_kernels": ["differential", "integral"]}, (2, 2, 24, 20)),
    ({"backbone": "local_fno", "n_modes": [8], "local_kernels": ["differential", "integral"]}, (2, 2, 40)),
    ({"backbone": "local_fno", "n_modes": [4, 4, 4], "local_kernels": ["integral"]}, (2, 2, 10, 12, 14)),
], ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else v["backbone"] + str(len(v["n_modes"])) + "d")
def test_row_layout_equals_the_channels_first_path(monkeypatch, config, shape):
    """The UNO (resampling between levels along the grid's axes of the row layout) and the local FNO (local kernels
    between two transposes) run their blocks on the FNO's row layout: outputs and gradients (input and every
    parameter) equal the channels-first path's to float64 round-off, in 1-D, 2-D (a non-square grid) and 3-D."""
    torch.manual_seed(5)
    model = build_denoiser({"in_channels": 2, "out_channels": 2, "hidden_channels": 8, "norm_groups": 4,
                            "sigma_data": 0.5, **config}).double()
    assert model.backbone.on_rows()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor([0.3, 2.0], dtype=torch.float64)
    results = []
    for rows in (True, False):
        monkeypatch.setattr(type(model.backbone), "on_rows", lambda self, shape=None, rows=rows: rows)
        out = model(x, sigma)
        results.append((out, torch.autograd.grad(out.square().sum(), [x, *model.parameters()])))
    (a, grads_a), (b, grads_b) = results
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, atol=1e-10, rtol=1e-10)


def test_uno_trains_channels_first_where_its_coarsest_rows_are_short():
    """The layout rule of NoiseConditionedUNO.on_rows: inference always on the row layout; under autograd only when
    the coarsest level keeps ROWS_MIN_SIDE_UNDER_AUTOGRAD points per row (benchmarks/row_layout_speed.py)."""
    from funcdiff.models.uno import ROWS_MIN_SIDE_UNDER_AUTOGRAD

    uno = build_backbone("uno", in_channels=1, out_channels=1, n_modes=(12, 12), norm_groups=4, levels=2)
    short, long = (4 * ROWS_MIN_SIDE_UNDER_AUTOGRAD - 4,) * 2, (4 * ROWS_MIN_SIDE_UNDER_AUTOGRAD,) * 2
    with torch.no_grad():
        assert uno.on_rows(short) and uno.on_rows(long)
    with torch.enable_grad():
        assert not uno.on_rows(short) and uno.on_rows(long)


@pytest.mark.parametrize("name", NEW)
def test_checkpoint_round_trip(name):
    """``EDMPrecond.config`` rebuilds the backbone; the state dict loads with weights_only=True; same outputs."""
    den = build_denoiser({"backbone": name, "in_channels": 2, "out_channels": 2, "n_modes": [6, 6],
                          "hidden_channels": 8, "norm_groups": 4, "cond_channels": 1, "sigma_data": 0.5})
    buf = io.BytesIO()
    torch.save({"config": den.config, "state": den.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    again = build_denoiser(saved["config"])
    again.load_state_dict(saved["state"])
    x, cond = torch.randn(2, 2, 16, 16), torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(den(x, torch.tensor([0.3, 2.0]), cond=cond), again(x, torch.tensor([0.3, 2.0]), cond=cond))
    assert saved["config"]["backbone"] == name


def test_config_validates_the_backbone_keys():
    cfg = config_from_dict({"model": {"backbone": "uno", "n_modes": [8, 8], "levels": 1}})
    assert cfg.model["levels"] == 1
    with pytest.raises(ValueError, match="levels"):
        config_from_dict({"model": {"backbone": "local_fno", "n_modes": [8, 8], "levels": 1}})
    with pytest.raises(ValueError, match="local_kernels"):
        UNOConfig(in_channels=1, out_channels=1, n_modes=(8, 8), local_kernels=("spline",))


# ------------------------------------------------------------------------------ every kind with every backbone
def _trajectories(n: int = 8, frames: int = 9, x: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(n, 1, 1, x, generator=g).cumsum(-1)
    base = base - base.mean(-1, keepdim=True)
    return torch.stack([base[:, :, 0].roll(t, -1) for t in range(frames)], dim=2).float()  # (n, 1, frames, x)


TINY = {"hidden_channels": 8, "n_layers": 1, "emb_dim": 16, "norm_groups": 4}
KIND_CASES = {  # kind -> (forecast section, transform section or None, n_modes)
    "none": (None, None, [6, 6]),
    "autoregressive": ({"kind": "autoregressive", "history": 1, "horizon": 2}, None, [8]),
    "rolling": ({"kind": "rolling", "history": 1, "horizon": 2}, None, [8]),
    "deterministic": ({"kind": "deterministic", "history": 1, "horizon": 1}, None, [8]),
    "trajectory": ({"kind": "trajectory", "history": 1, "horizon": 8, "stride": 8},
                   {"kind": "wavelet", "wavelet": "db2", "levels": 1, "axes": ["time", "x"]}, [3, 6]),
    "super_resolution": ({"kind": "super_resolution", "history": 1, "horizon": 8, "stride": 4},
                         {"kind": "wavelet", "wavelet": "coif1", "levels": 1, "axes": ["time", "x"]}, [3, 6]),
}


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("kind", list(KIND_CASES))
def test_every_kind_builds_and_trains_with_the_backbone(tmp_path, kind, name):
    forecast, transform, n_modes = KIND_CASES[kind]
    raw = {"model": {"backbone": name, "n_modes": n_modes, **TINY},
           "train": {"steps": 1, "batch_size": 2, "warmup_steps": 1, "eval_every": 0, "checkpoint_every": 0,
                     "log_every": 0, "out_dir": str(tmp_path / "run")}}
    if forecast is None:
        raw["data"] = {"source": "synthetic", "resolution": 16, "num_samples": 4, "dim": 2}
        fields = None
    else:
        raw["data"] = {"source": "file", "path": "unused.h5", "channels": ["u"], "dim": 1, "test_fraction": 0.25}
        raw["forecast"] = forecast
        fields = _trajectories()
    if transform is not None:
        raw["transform"] = transform
    trainer = Trainer.from_config(config_from_dict(raw), fields=fields, progress=False)
    assert trainer.model_config["backbone"] == name
    before = [p.detach().clone() for p in trainer.model.parameters()]
    log = trainer.train_step()
    assert math.isfinite(log["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_an_unknown_backbone_is_a_config_error():
    with pytest.raises((ValueError, UserError), match="valid backbones"):
        config_from_dict({"model": {"backbone": "unet", "n_modes": [8, 8]}})


# ------------------------------------------------------------------------------ a tiny trained forecaster per backbone
def _advected(n: int, frames: int = 16, x: int = 32, shift: int = 2) -> torch.Tensor:
    """Smooth periodic random fields translated by ``shift`` points per frame, (n, 1, frames, x)."""
    g = torch.Generator().manual_seed(1)
    k = torch.arange(x // 2 + 1, dtype=torch.float64)
    amp = torch.exp(-0.5 * (k / 3.0) ** 2)
    coef = (torch.randn(n, x // 2 + 1, generator=g, dtype=torch.float64)
            + 1j * torch.randn(n, x // 2 + 1, generator=g, dtype=torch.float64)) * amp
    coef[:, 0] = 0
    u0 = torch.fft.irfft(coef, n=x) * x / 4
    return torch.stack([u0.roll(shift * t, -1) for t in range(frames)], dim=1)[:, None].float()


@pytest.mark.parametrize("name", NEW)
def test_a_tiny_trained_forecaster_beats_persistence_on_held_out_trajectories(tmp_path, name):
    """A deterministic forecaster (the kind's one-evaluation rollout; 150 steps at 32 points) with each backbone: on
    the held-out trajectories its error at lead 4 is below half of persistence's (the field moves 8 points by then)."""
    from funcdiff.tasks.forecast import forecast
    from funcdiff.training.forecast import trajectory_split

    traj = _advected(20)
    cfg = config_from_dict({
        "data": {"source": "file", "path": "unused.h5", "channels": ["u"], "dim": 1, "test_fraction": 0.2},
        "noise": {"smoothness": 1.0, "length_scale": 0.05},
        "model": {"backbone": name, "n_modes": [12], "hidden_channels": 16, "n_layers": 2, "emb_dim": 16,
                  "norm_groups": 4},
        "train": {"steps": 150, "batch_size": 16, "lr": 3e-3, "warmup_steps": 10, "out_dir": str(tmp_path / "run"),
                  "log_every": 0, "eval_every": 0, "checkpoint_every": 0, "seed": 0},
        "forecast": {"kind": KIND, "history": 1, "horizon": 1, "steps_per_frame": 4}})
    trainer = Trainer.from_config(cfg, fields=traj, progress=False)
    trainer.fit()
    trainer.save_checkpoint()
    held_out = [int(i) for i in trajectory_split(traj.shape[0], cfg)[1]]
    initial, truth = traj[held_out, :, :1], traj[held_out, :, 1:7]
    run = forecast(tmp_path / "run", initial, 6, members=4, seed=0).to_tensor()  # (n_init, M, C, lead, X)
    err = (run.mean(1)[:, :, 3] - truth[:, :, 3]).abs().mean()
    persistence = (initial[:, :, 0] - truth[:, :, 3]).abs().mean()
    assert float(err) < 0.5 * float(persistence), (float(err), float(persistence))
