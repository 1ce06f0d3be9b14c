"""2-D Navier-Stokes solver and residual: exact solutions, convergence orders, invariants, resolution agreement."""

import math

import pytest
import torch

from funcdiff.pde import (
    kinetic_energy,
    mean_square,
    navier_stokes_residual,
    navier_stokes_rhs,
    periodic_grid,
    sample_periodic_grf,
    solve_navier_stokes,
    taylor_green_vorticity,
)
from funcdiff.utils import fourier_resample

F64 = torch.float64


def _grf(n: int, batch: int = 2, seed: int = 0, sigma: float = 26.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return sample_periodic_grf(batch, n, 2, sigma=sigma, generator=g, dtype=F64)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_taylor_green_decays_exactly_with_second_order_in_time():
    nu, t_end = 0.02, 1.0
    w0 = taylor_green_vorticity(16, amplitude=3.0)
    exact = w0 * math.exp(-8 * math.pi**2 * nu * t_end)
    errors = []
    for dt in (0.1, 0.05, 0.025):
        w = solve_navier_stokes(w0, [t_end], nu=nu, forcing=None, dt=dt)[:, :, -1]
        errors.append(float((w - exact).abs().max()))
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    assert all(3.7 < r < 4.3 for r in ratios), (errors, ratios)
    w = solve_navier_stokes(w0, [t_end], nu=nu, forcing=None)[:, :, -1]  # adaptive (max_dt-limited) default step
    assert float((w - exact).abs().max()) < 1e-4 * float(exact.abs().max())


def test_nonlinear_flow_second_order_in_time():
    w0 = _grf(32, batch=1)
    sols = [solve_navier_stokes(w0, [1.0], nu=1e-2, dt=dt)[:, :, -1] for dt in (0.05, 0.025, 0.0125)]
    ratio = float((sols[0] - sols[1]).norm() / (sols[1] - sols[2]).norm())
    assert 3.5 < ratio < 4.5, ratio


def test_spectral_accuracy_in_space():
    """Same band-limited initial vorticity and step: the spatial error falls much faster than any power of N."""
    w0 = _grf(16, batch=1, sigma=60.0)
    kwargs = {"nu": 5e-3, "dt": 0.01}
    ref = solve_navier_stokes(fourier_resample(w0, 96, 2), [1.0], **kwargs)[:, :, -1]
    errs = {}
    for n in (24, 48):
        w = solve_navier_stokes(fourier_resample(w0, n, 2), [1.0], **kwargs)[:, :, -1]
        errs[n] = _rel(w, fourier_resample(ref, n, 2))
    assert errs[48] < 1e-9 and errs[24] / errs[48] > 1e3, errs


def test_64_and_128_agree_after_downsampling():
    w0 = _grf(64, batch=2)
    coarse = solve_navier_stokes(w0, [0.0, 1.0], nu=1e-3)
    fine = solve_navier_stokes(fourier_resample(w0, 128, 2), [0.0, 1.0], nu=1e-3)
    assert _rel(fourier_resample(fine[:, :, -1], 64, 2), coarse[:, :, -1]) < 1e-6
    assert _rel(coarse[:, :, -1], coarse[:, :, 0]) > 1e-2  # the flow actually evolved


def test_mean_vorticity_stays_zero_and_snapshots_hit_times():
    w0 = _grf(32)
    w = solve_navier_stokes(w0, [0.0, 0.3, 0.3, 1.0], nu=1e-3, forcing="fno")
    assert torch.allclose(w[:, :, 0], w0, rtol=0, atol=1e-14) and torch.equal(w[:, :, 1], w[:, :, 2])
    assert float(w.mean(dim=(-2, -1)).abs().max()) < 1e-13


def test_single_mode_energy_decays_at_viscous_rate():
    nu, t = 1e-2, 0.5
    x, y = periodic_grid(32, 2, dtype=F64)
    w0 = torch.sin(2 * math.pi * 3 * y)[None, None]  # shear mode, |k|^2 = 9
    w = solve_navier_stokes(w0, [0.0, t], nu=nu, forcing=None, dt=1e-3)
    ratio = kinetic_energy(w[:, 0, 1]) / kinetic_energy(w[:, 0, 0])
    assert abs(float(ratio) - math.exp(-2 * nu * 4 * math.pi**2 * 9 * t)) < 1e-6


def test_unforced_energy_decays_monotonically():
    w = solve_navier_stokes(_grf(32), [0.1 * i for i in range(11)], nu=1e-3, forcing=None)
    energy = kinetic_energy(w[:, 0])  # (B, T)
    assert bool((energy[:, 1:] < energy[:, :-1]).all())


def test_kolmogorov_forcing_and_drag_run_and_sample_is_batch_independent():
    w0 = _grf(32, batch=3)
    kwargs = {"nu": 1e-3, "forcing": "kolmogorov", "drag": 0.1}
    batched = solve_navier_stokes(w0, [0.5], **kwargs)
    single = solve_navier_stokes(w0[1:2], [0.5], **kwargs)
    assert torch.allclose(batched[1:2], single, rtol=0, atol=1e-12)


def test_float32_matches_float64():
    w0 = _grf(32)
    w64 = solve_navier_stokes(w0, [1.0], nu=1e-3)
    w32 = solve_navier_stokes(w0.float(), [1.0], nu=1e-3)
    assert w32.dtype == torch.float32
    assert _rel(w32.double(), w64) < 1e-4


def test_residual_of_solution_small_and_second_order_in_frame_spacing():
    w0 = _grf(32, batch=1)
    sizes = []
    for frames in (5, 9):
        times = torch.linspace(0.0, 0.4, frames, dtype=F64)
        w = solve_navier_stokes(w0, times, nu=1e-3, max_dt=2e-3)
        sizes.append(float(mean_square(navier_stokes_residual(w, times, nu=1e-3)).sqrt()))
    rhs_scale = float(mean_square(navier_stokes_rhs(w0, 1e-3)).sqrt())  # size of the terms of the equation
    assert sizes[1] < 1e-2 * rhs_scale and 3.3 < sizes[0] / sizes[1] < 4.7, sizes
    w_wrong = w.clone()
    w_wrong[:, :, -1] = torch.roll(w_wrong[:, :, -1], 5, dims=-1)
    wrong = float(mean_square(navier_stokes_residual(w_wrong, times, nu=1e-3)).sqrt())
    assert wrong > 100 * sizes[1]


def test_residual_is_differentiable():
    w = _grf(8, batch=1).unsqueeze(2).repeat(1, 1, 2, 1, 1).requires_grad_(True)
    func = lambda x: navier_stokes_residual(x, [0.0, 0.1], nu=1e-2)  # noqa: E731
    assert torch.autograd.gradcheck(func, (w,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize(
    "w0, kwargs, match",
    [
        (torch.zeros(2, 32, 32, dtype=F64), {}, "shape"),
        (torch.full((1, 1, 16, 16), float("nan"), dtype=F64), {}, "NaN"),
        (torch.zeros(1, 1, 16, 16, dtype=F64), {"nu": -1e-3}, "nu"),
        (torch.zeros(1, 1, 16, 16, dtype=F64), {"forcing": "bogus"}, "forcing"),
        (torch.zeros(1, 1, 16, 12, dtype=F64), {}, "square"),
    ],
)
def test_bad_input_raises(w0, kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve_navier_stokes(w0, [0.1], **kwargs)


def test_bad_times_raise():
    with pytest.raises(ValueError, match="non-decreasing"):
        solve_navier_stokes(torch.zeros(1, 1, 16, 16), [0.5, 0.1])
    with pytest.raises(ValueError, match="increasing"):
        navier_stokes_residual(torch.zeros(1, 1, 2, 16, 16), [0.1, 0.1], nu=1e-3)


def test_residual_size_is_resolution_independent():
    """A band-limited (|k| <= 4) non-solution has the same pointwise residual, and mean square, at 32^2 and 64^2."""
    g = torch.Generator().manual_seed(4)
    frames = sample_periodic_grf(3, 9, 2, sigma=26.0, generator=g, dtype=F64)  # (3, 1, 9, 9): three frames
    traj = frames.permute(1, 0, 2, 3)[None]  # (1, 1, T=3, 9, 9)
    times = [0.0, 0.1, 0.3]
    residuals = {n: navier_stokes_residual(fourier_resample(traj, n, 2), times, nu=1e-3) for n in (32, 64)}
    assert torch.allclose(fourier_resample(residuals[64], 32, 2), residuals[32], atol=1e-10)
    sizes = {n: float(mean_square(r)) for n, r in residuals.items()}
    assert sizes[32] > 1e-3 and abs(sizes[32] / sizes[64] - 1) < 1e-10, sizes
