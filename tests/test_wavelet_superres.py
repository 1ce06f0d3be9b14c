"""Zero-shot super-resolution in the wavelet domain (issue 9, part 3): orthonormal scaling of the approximation,
pair round trips, the exact conditional denoiser through the sampling path, and the user path (train, upsample)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from funcdiff import cli
from funcdiff.data import generate_to_hdf5
from funcdiff.errors import UserError
from funcdiff.pde import get_problem
from funcdiff.tasks.super_resolution import (SuperResolver, interpolate, sample_state, super_resolve,
                                             upsample_time_coordinate)
from funcdiff.kinds.super_resolution import SuperResolutionCoder, approximation_shift, coarse_roll
from funcdiff.transforms import WaveletTransform


def smooth_field(times: int, points: int) -> torch.Tensor:
    """A band-limited space-time field (1, 1, T, N) on t_j = j/T, x_i = i/N (periodic in both)."""
    t = torch.arange(times, dtype=torch.float64)[:, None] / times
    x = torch.arange(points, dtype=torch.float64)[None, :] / points
    f = torch.sin(2 * math.pi * (x - t)) + 0.4 * torch.cos(2 * math.pi * (2 * x + t)) + 0.2 * torch.sin(
        2 * math.pi * 3 * x)
    return f[None, None]


def test_approximation_is_sqrt2_pow_d_times_the_coarse_samples():
    """Orthonormal scaling: one level over D axes gives a ≈ √2^D · (samples of the half grid) for a smooth field,
    exactly aligned for coif1 (centre 0) and after a one-cell roll for db4 (centre -2 fine cells)."""
    fine = smooth_field(64, 128)
    assert approximation_shift("coif1") == pytest.approx(0.0, abs=1e-3)
    assert approximation_shift("db4") == pytest.approx(-2.0, abs=0.01)
    for wavelet, axes, field in (("coif1", ("time", "x"), fine), ("db4", ("time", "x"), fine),
                                 ("coif1", ("x",), fine[:, :, 0])):
        coder = SuperResolutionCoder(WaveletTransform(wavelet, 1, axes), channels=1)
        approx = coder.transform.raw_forward(field)[:, :, 0]  # (1, 1, *half grid), unnormalised
        coarse = field[(..., *[slice(None, None, 2)] * len(axes))]
        assert coder.approximation_scale() == pytest.approx(math.sqrt(2) ** len(axes))
        aligned = torch.roll(coarse, [-coder.roll] * len(axes), list(range(2, coarse.ndim)))
        ratio = (approx * aligned).sum() / (aligned * aligned).sum()  # least-squares scale of approx vs samples
        assert float(ratio) == pytest.approx(math.sqrt(2) ** len(axes), rel=2e-3)
        err = (coder.condition(coarse) - approx).abs().max() / approx.abs().max()
        assert float(err) < (2e-4 if wavelet == "coif1" else 2e-3), (wavelet, axes, float(err))
    with pytest.raises(UserError, match="coif1"):
        coarse_roll("haar")  # centre half a fine cell off: not a whole number of coarse cells


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("axes,shape", [(("time", "x"), (3, 2, 8, 16)), (("x", "y"), (3, 2, 16, 8)),
                                        (("x",), (5, 1, 32))])
def test_pairs_round_trip(axes, shape, residual):
    """encode (conditioning from the half-grid samples | approximation correction, details) then decode gives the
    fine field back exactly."""
    gen = torch.Generator().manual_seed(0)
    fine = torch.randn(*shape, generator=gen).cumsum(-1)
    coder = SuperResolutionCoder(WaveletTransform("coif1", 1, axes), channels=shape[1], residual=residual)
    coder.fit(fine)
    items = coder.encode(fine)
    k = 2 ** len(axes)
    assert items.shape == (shape[0], shape[1] * (1 + k), *[n // 2 for n in shape[2:]])
    cond, state = items[:, :shape[1]], items[:, shape[1]:]
    assert state[:, :shape[1]].std() == pytest.approx(1.0, abs=0.05)  # correction / residual approx., normalised
    if residual:  # the state of a zero residual decodes to the interpolation of the samples
        assert torch.allclose(coder.decode(cond, coder.transform.forward(torch.zeros_like(fine))), interpolate(
            coder.subsample(fine), 2, time_axis=axes[0] == "time"), atol=1e-5)
    back = coder.decode(cond, state)
    assert torch.allclose(back, fine, atol=1e-5 * float(fine.abs().max()))
    state = SuperResolutionCoder.from_state_dict(coder.state_dict())
    assert torch.equal(state.encode(fine), items)


class GaussianDetailOracle(torch.nn.Module):
    """The exact EDM denoiser of details d | a ~ N(mu(a), s² I) in normalised coefficients:
    D(x, σ) = mu + s²/(s² + σ²)(x - mu), with mu looked up from the known fine fields by grid size."""

    def __init__(self, means: dict, s: float) -> None:
        super().__init__()
        self.means, self.s = means, s

    def forward(self, x, sigma, cond=None):
        mu = self.means[tuple(x.shape[2:])][: x.shape[0]]
        sig = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *[1] * (x.ndim - 1))
        return mu + self.s ** 2 / (self.s ** 2 + sig ** 2) * (x - mu)


def _oracle_setup(s: float, batch: int):
    """A field with a front on 4G = (16, 64), its samples on 2G and G, and the exact states of both levels."""
    fine = smooth_field(16, 64).float().expand(batch, 1, 16, 64).contiguous()
    fine = fine + 0.3 * torch.tanh(20 * torch.sin(2 * math.pi * torch.arange(64) / 64))  # a front
    coder = SuperResolutionCoder(WaveletTransform("coif1", 1, ("time", "x")), channels=1)
    coder.fit(fine)
    approx1 = coder.subsample(fine)  # the field on 2G
    coarse = coder.subsample(approx1)  # on G
    means = {(8, 32): coder.encode(fine)[:, 1:], (4, 16): coder.encode(approx1)[:, 1:]}
    sr = SuperResolver(denoiser=GaussianDetailOracle(means, s), coder=coder)
    return sr, fine, approx1, coarse, means


def test_exact_conditional_denoiser_reconstructs_4x_exactly():
    """With the exact denoiser of a point-mass state (s = 0), two applications (G -> 2G -> 4G) of the sampling
    path give back the fine field from its samples on G."""
    sr, fine, _, coarse, _ = _oracle_setup(0.0, batch=2)
    out = super_resolve(sr, coarse, 4, steps=8, seed=1)
    assert out.shape == fine.shape
    assert float((out - fine).abs().max()) < 1e-4


def test_exact_gaussian_conditional_denoiser_gives_the_conditional_law():
    """s > 0: Heun through the sampling path reproduces the conditional mean and variance of the state."""
    s = 0.5
    sr, _, approx1, coarse, means = _oracle_setup(s, batch=256)
    details = sample_state(sr, sr.coder.condition(coarse), steps=32, generator=torch.Generator().manual_seed(3))
    mu = means[(4, 16)]
    # Monte Carlo error, plus the known bias of starting at N(0, σ_max²) instead of N(mu, s² + σ_max²): the ODE
    # carries the start's offset -mu to -mu·s/sqrt(s² + σ_max²) at the end
    bias = mu[0].abs() * s / math.sqrt(s ** 2 + sr.sigma_max ** 2)
    assert bool(((details.mean(0) - mu[0]).abs() < 4 * s / math.sqrt(256) + 1.2 * bias).all())
    var = details.var(0)
    assert float(var.mean()) == pytest.approx(s ** 2, rel=0.05)


def test_interpolation_keeps_the_samples_and_time_coordinates():
    gen = torch.Generator().manual_seed(0)
    coarse = torch.randn(2, 1, 4, 8, generator=gen)
    for method in ("spectral", "linear"):
        fine = interpolate(coarse, 4, time_axis=True, method=method)
        assert fine.shape == (2, 1, 16, 32)
        assert torch.allclose(fine[:, :, ::4, ::4], coarse, atol=1e-6)
    band = smooth_field(4, 16).float()
    assert torch.allclose(interpolate(band[:, :, 0], 2, time_axis=False), smooth_field(4, 32).float()[:, :, 0],
                          atol=1e-5)  # spectral interpolation is exact for a band-limited field
    assert torch.allclose(upsample_time_coordinate(torch.tensor([0.5, 0.6, 0.7]), 2),
                          torch.tensor([0.5, 0.55, 0.6, 0.65, 0.7, 0.75], dtype=torch.float64))
    with pytest.raises(UserError, match="power of 2"):
        interpolate(coarse, 3, time_axis=True)


CONFIG = Path(__file__).resolve().parents[1] / "configs" / "wavelet" / "burgers-shock-superres.yaml"


def test_train_and_upsample_from_the_shipped_config(tmp_path, capsys):
    """`funcdiff train` on the shipped super-resolution config (tiny overrides), then `funcdiff upsample` of a
    trajectory file and of a forecast file: netCDF with refined time and space coordinates, same seed -> same
    result, one-line errors for a bad factor and for a checkpoint of another kind."""
    data = generate_to_hdf5(get_problem("burgers_shock"), tmp_path / "shock.h5", num_samples=6, resolution=64,
                            batch_size=6, params={"num_frames": 21}, progress=False)
    run = tmp_path / "run"
    small = ["train.steps=3", "train.batch_size=2", "model.n_modes=[2, 4]", "model.hidden_channels=8",
             "model.n_layers=1", "model.emb_dim=16", "model.norm_groups=4", "forecast.horizon=8",
             "forecast.stride=4", f"data.path={data}", "data.test_fraction=0.2"]
    argv = ["train", "--config", str(CONFIG), "--out-dir", str(run), "--seed", "1", "--device", "cpu", "--no-progress"]
    for item in small:
        argv += ["--set", item]
    assert cli.main(argv) == 0
    outs = [tmp_path / "fine_a.nc", tmp_path / "fine_b.nc"]
    for out in outs:
        assert cli.main(["upsample", "--checkpoint", str(run), "--input", str(data), "--index", "1", "--start-frame",
                         "4", "--frames", "8", "--factor", "4", "--steps", "3", "--seed", "5", "--out", str(out)]) == 0
    assert outs[0].with_suffix(".png").exists()
    with xr.open_dataset(outs[0]) as a, xr.open_dataset(outs[1]) as b:
        assert a["u"].dims == ("sample", "t", "x") and a["u"].shape == (1, 32, 256)
        np.testing.assert_allclose(a["t"].values, 0.04 + 0.0025 * np.arange(32), rtol=1e-5)  # dt 0.01 / 4
        np.testing.assert_allclose(a["x"].values, np.arange(256) / 256)
        assert bool(np.isfinite(a["u"].values).all())
        np.testing.assert_array_equal(a["u"].values, b["u"].values)
    # a forecast file (init, member, lead_time, x) is refined member by member
    fc = xr.Dataset({"u": (("init", "member", "lead_time", "x"), np.random.default_rng(0).normal(
        size=(1, 2, 8, 64)).astype("float32"))}, coords={"lead_time": 0.02 * np.arange(1, 9)},
        attrs={"channels": json.dumps(["u"])})
    fc.to_netcdf(tmp_path / "forecast.nc")
    assert cli.main(["upsample", "--checkpoint", str(run), "--input", str(tmp_path / "forecast.nc"), "--steps", "2",
                     "--out", str(tmp_path / "fc2.nc"), "--no-plot"]) == 0
    with xr.open_dataset(tmp_path / "fc2.nc") as ds:
        assert ds["u"].shape == (2, 16, 128)
        np.testing.assert_allclose(ds["t"].values, 0.02 + 0.01 * np.arange(16), rtol=1e-5)
    capsys.readouterr()
    assert cli.main(["upsample", "--checkpoint", str(run), "--input", str(data), "--factor", "3",
                     "--out", str(tmp_path / "bad.nc")]) == 2
    assert "power of 2" in capsys.readouterr().err and not (tmp_path / "bad.nc").exists()
    assert cli.main(["forecast", "--checkpoint", str(run), "--initial", str(data), "--lead-steps", "8",
                     "--out", str(tmp_path / "f.nc"), "--no-progress"]) == 2
    assert "funcdiff upsample" in capsys.readouterr().err
    assert cli.main(["sample", "--checkpoint", str(run), "--resolution", "64", "--num-samples", "1",
                     "--out", str(tmp_path / "s.nc"), "--no-progress"]) == 2
    assert "funcdiff upsample" in capsys.readouterr().err


def test_space_only_model_refines_each_frame_of_a_trajectory():
    """A space-only model (axes [x]) on trajectories (B, C, T, S): frames are refined one by one, time untouched;
    with the exact point-mass denoiser (residual state) the fine frames come back exactly."""
    x = torch.arange(64, dtype=torch.float64) / 64
    frames = torch.stack([torch.tanh(15 * torch.sin(2 * math.pi * (x - 0.1 * t))) for t in range(3)])
    fine = torch.stack([frames, 0.5 * frames]).unsqueeze(1).float()  # (2, 1, 3, 64)
    folded = fine.transpose(1, 2).flatten(0, 1)  # (6, 1, 64): sample b·T + t
    coder = SuperResolutionCoder(WaveletTransform("coif1", 1, ("x",)), channels=1, residual=True)
    coder.fit(folded)
    means = {(32,): coder.encode(folded)[:, 1:], (16,): coder.encode(coder.subsample(folded))[:, 1:]}
    sr = SuperResolver(denoiser=GaussianDetailOracle(means, 0.0), coder=coder)
    coarse = fine[..., ::4]  # (2, 1, 3, 16)
    out = super_resolve(sr, coarse, 4, steps=4)
    assert out.shape == (2, 1, 3, 64)
    assert float((out - fine).abs().max()) < 1e-4
    with pytest.raises(UserError, match="does not fit"):
        super_resolve(sr, coarse[:, :, 0, None, None], 2)  # (B, C, 1, 1, S): too many axes
