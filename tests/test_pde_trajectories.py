"""Trajectory problems for forecasting: Kolmogorov flow, FNO-forced NS and Burgers frames after a spin-up."""

import math

import h5py
import numpy as np
import pytest
import torch

from funcdiff.data import generate_to_hdf5, load_fields, partial_path
from funcdiff.cli import main
from funcdiff.pde import get_problem, solve_navier_stokes
from funcdiff.pde.navier_stokes import kinetic_energy, make_forcing
from funcdiff.pde.registry import frame_times
from funcdiff.pde.spectral import TWO_PI, integer_wavenumbers

F64 = torch.float64


def _gen(name: str, num: int, res: int, seed: int = 0, **params):
    return get_problem(name).generate(num, res, generator=torch.Generator().manual_seed(seed), dtype=F64, **params)


@pytest.mark.parametrize("name, res, params, field, spatial", [
    ("kolmogorov", 16, {"spin_up": 0.2, "dt": 0.05, "num_frames": 4}, "w", (16, 16)),
    ("navier_stokes_trajectory", 16, {"spin_up": 0.2, "dt": 0.05, "num_frames": 4}, "u", (16, 16)),
    ("burgers", 32, {"spin_up": 0.2, "dt": 0.05, "num_frames": 4}, "u", (32,)),
    ("burgers_shock", 32, {"dt": 0.05, "num_frames": 4}, "u", (32,)),
])
def test_shapes_times_and_determinism(name, res, params, field, spatial):
    out = _gen(name, 2, res, **params)
    assert get_problem(name).fields == (field,) and out[field].shape == (2, 4, *spatial)
    torch.testing.assert_close(out["t"], 0.05 * torch.arange(4, dtype=F64))
    assert torch.isfinite(out[field]).all()
    assert torch.equal(out[field], _gen(name, 2, res, **params)[field])
    assert not torch.equal(out[field], _gen(name, 2, res, seed=1, **params)[field])


def test_spin_up_discards_the_transient_and_shifts_time():
    """Frame i after spin-up s is the frame at s + i dt of a run without spin-up (same random draws)."""
    with_spin = _gen("burgers", 2, 32, spin_up=0.1, dt=0.05, num_frames=3)
    without = _gen("burgers", 2, 32, dt=0.05, num_frames=5)
    torch.testing.assert_close(with_spin["u"][:, 0], without["u"][:, 2], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(with_spin["u"][:, -1], without["u"][:, -1], rtol=1e-9, atol=1e-10)
    assert with_spin["t"][0] == 0.0


def test_old_times_defaults_still_work_and_frame_params_are_checked():
    assert frame_times("burgers", get_problem("burgers").defaults) == pytest.approx([0.1 * i for i in range(11)])
    p = {**get_problem("burgers").defaults, "num_frames": 3}  # dt alone or num_frames alone is ambiguous
    with pytest.raises(ValueError, match="dt"):
        frame_times("burgers", p)
    with pytest.raises(ValueError, match="spin_up"):
        frame_times("kolmogorov", {**get_problem("kolmogorov").defaults, "spin_up": -1.0})


def _relative_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(2).norm(dim=-1) / a.flatten(2).norm(dim=-1)


def test_kolmogorov_is_stationary_after_spin_up_and_chaotic():
    """At 32^2 (the defaults' Re ~ 90 is still resolved there): the energy of 8 flows after the default spin-up
    has equal means over the first and second half of 10 time units (within 20 %, the sampling scatter of
    8 x 5 time units of a flow decorrelating in ~1), and a 1e-6 perturbation of the state grows >= 1e3x within 8
    time units (Lyapunov rate ~1.5 measured at 64^2, i.e. ~1e5x)."""
    params = {"dt": 0.5, "num_frames": 21}
    out = _gen("kolmogorov", 8, 32, **params)
    energy = kinetic_energy(out["w"])  # (8, 21)
    first, second = energy[:, 1:11].mean(), energy[:, 11:].mean()
    assert 0.1 < float(first) < 0.4 and abs(float(second / first) - 1) < 0.2
    assert float(energy.max()) < 2.0  # bounded: energy input balances drag + viscosity

    w0 = out["w"][:, 0:1]
    noise = torch.randn(w0.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    p = get_problem("kolmogorov").defaults
    forcing = make_forcing("kolmogorov", 32, amplitude=p["amplitude"], dtype=F64)
    pair = torch.cat([w0, w0 + 1e-6 * w0.std() * noise])
    w = solve_navier_stokes(pair, [0.0, 8.0], nu=p["nu"], forcing=forcing, drag=p["drag"], cfl=p["cfl"],
                            max_dt=p["max_dt"])
    growth = _relative_distance(w[:8, 0], w[8:, 0])
    assert float(growth[:, 0].max()) < 2e-6
    assert float(growth[:, -1].median()) > 1e-3


def test_burgers_shock_forms_conserves_mass_and_stays_bounded():
    """nu = 1e-3 at 256 points for t in [0, 0.5] (the fronts form by t ~ 0.2): mean conserved, max|u_x| grows by
    far (> 5x), no Gibbs overshoot beyond the maximum principle max|u(t)| <= max|u(0)|."""
    out = _gen("burgers_shock", 4, 256, dt=0.05, num_frames=11)
    u = out["u"]  # (4, 11, 256)
    torch.testing.assert_close(u.mean(-1), u[:, :1].mean(-1).expand(-1, 11), rtol=0, atol=1e-12)
    ik = 1j * TWO_PI * integer_wavenumbers(256, real=True, dtype=F64)
    slope = torch.fft.irfft(ik * torch.fft.rfft(u), n=256).abs().amax(-1)  # (4, 11)
    assert bool((slope.amax(1) > 5 * slope[:, 0]).all())
    peak = u.abs().amax(-1)
    assert bool((peak <= peak[:, :1] * (1 + 1e-6)).all())


def test_cli_writes_kolmogorov_file_with_time_coordinate(tmp_path):
    out = tmp_path / "k.h5"
    code = main(["data", "generate", "kolmogorov", "--num-samples", "2", "--resolution", "8", "--out", str(out),
                 "--set", "spin_up=0.05", "--set", "dt=0.02", "--set", "num_frames=5", "--no-progress"])
    assert code == 0
    data = load_fields(out)
    assert data.fields["w"].shape == (2, 5, 8, 8)
    np.testing.assert_allclose(np.diff(data.coords["t"].numpy()), 0.02, rtol=1e-5)
    assert data.attrs["dt"] == 0.02 and data.attrs["spin_up"] == 0.05 and data.attrs["time_units"] == "1"
    with h5py.File(out, "r") as f:
        assert f["t"].attrs["dt"] == 0.02 and f["t"].attrs["units"] == "1" and f["t"].attrs["spin_up"] == 0.05


def test_resumed_trajectory_file_is_bit_identical(tmp_path):
    kwargs = dict(num_samples=5, resolution=16, seed=4, batch_size=2, progress=False,
                  params={"dt": 0.01, "num_frames": 3})
    problem = get_problem("burgers_shock")
    straight = generate_to_hdf5(problem, tmp_path / "a.h5", **kwargs)
    target = tmp_path / "b.h5"
    assert generate_to_hdf5(problem, target, max_batches=1, **kwargs) == partial_path(target)
    generate_to_hdf5(problem, target, **kwargs)
    with h5py.File(straight, "r") as f1, h5py.File(target, "r") as f2:
        for k in ("u", "t"):
            np.testing.assert_array_equal(f1[k][...], f2[k][...])
        assert math.isclose(f2["t"].attrs["dt"], 0.01)
