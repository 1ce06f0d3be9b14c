"""Samplers driven by the exact denoiser of Gaussian data in function space (an oracle)."""

import math

import pytest
import torch

from funcdiff.noise import GaussianRandomField
from funcdiff.sampling import get_solver, num_denoiser_calls, sample, sigmas_karras

DATA = GaussianRandomField(dim=2, smoothness=3.0, length_scale=0.1)   # data law N(0, Σ)
NOISE = GaussianRandomField(dim=2, smoothness=1.5, length_scale=0.05)  # diffusion noise N(0, C)


class OracleDenoiser:
    """Exact E[x0 | x0 + σε] for x0 ~ N(0, Σ), ε ~ N(0, C), Σ and C diagonal in Fourier: ŝ/(ŝ + σ²ĉ)."""

    def __init__(self, data: GaussianRandomField, noise: GaussianRandomField):
        self.data, self.noise, self.calls = data, noise, 0

    def __call__(self, x, sigma):
        self.calls += 1
        shape = x.shape[2:]
        s = self.data.spectrum(shape, dtype=torch.float64)[..., : shape[-1] // 2 + 1]
        c = self.noise.spectrum(shape, dtype=torch.float64)[..., : shape[-1] // 2 + 1]
        sig2 = sigma.double().reshape(-1, *[1] * (x.ndim - 1)) ** 2
        x_hat = torch.fft.rfftn(x.double(), dim=(-2, -1))
        return torch.fft.irfftn(x_hat * s / (s + sig2 * c), s=shape, dim=(-2, -1)).to(x.dtype)


def radial_spectrum(x):
    n = x.shape[-1]
    p = (torch.fft.fftn(x.double(), dim=(-2, -1), norm="ortho").abs() ** 2).mean((0, 1))
    k = torch.fft.fftfreq(n, 1 / n)
    kk = (k[:, None] ** 2 + k[None, :] ** 2).sqrt().round().long()
    return torch.bincount(kk.flatten(), p.flatten())[: n // 2]


@pytest.mark.parametrize("solver", ["euler", "heun", "stochastic"])
def test_every_solver_reproduces_the_data_covariance(solver):
    n, batch = 16, 2048
    steps = {"euler": 256, "heun": 64, "stochastic": 128}[solver]
    denoiser = OracleDenoiser(DATA, NOISE)
    x = sample(denoiser, (batch, 1, n, n), NOISE, steps=steps, solver=solver, seed=0, dtype=torch.float64)
    target = radial_spectrum(DATA.sample((batch * 4, 1, n, n), generator=torch.Generator().manual_seed(1),
                                         dtype=torch.float64))
    exact = torch.bincount(
        ((torch.fft.fftfreq(n, 1 / n)[:, None] ** 2 + torch.fft.fftfreq(n, 1 / n)[None, :] ** 2)
         .sqrt().round().long()).flatten(), (DATA.spectrum((n, n), dtype=torch.float64) * n * n).flatten())[: n // 2]
    rel = (radial_spectrum(x) / exact - 1).abs()
    assert rel.max() < 0.06, rel
    assert (target / exact - 1).abs().max() < 0.06  # the estimator's own accuracy at this batch size


def exact_ode_solution(x_T, sigma_max, sigma_min):
    """Per-mode exact probability-flow ODE solution x(σ) ∝ sqrt(ŝ + σ²ĉ), then EDM's final Euler step."""
    shape = x_T.shape[2:]
    s = DATA.spectrum(shape, dtype=torch.float64)[..., : shape[-1] // 2 + 1]
    c = NOISE.spectrum(shape, dtype=torch.float64)[..., : shape[-1] // 2 + 1]
    gain = ((s + sigma_min**2 * c) / (s + sigma_max**2 * c)).sqrt() * s / (s + sigma_min**2 * c)
    return torch.fft.irfftn(torch.fft.rfftn(x_T, dim=(-2, -1)) * gain, s=shape, dim=(-2, -1))


@pytest.mark.parametrize("solver,order", [("euler", 1), ("heun", 2)])
def test_solver_error_falls_at_its_order(solver, order):
    sigma_max, sigma_min = 80.0, 0.002
    x_T = sigma_max * NOISE.sample((8, 1, 16, 16), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.float64)
    exact = exact_ode_solution(x_T, sigma_max, sigma_min)
    errors = []
    for steps in (16, 32, 64):
        sigmas = sigmas_karras(steps, sigma_min, sigma_max)
        out = get_solver(solver)(OracleDenoiser(DATA, NOISE), x_T.clone(), sigmas)
        errors.append(((out - exact).norm() / exact.norm()).item())
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(abs(r - order) < 0.35 for r in rates), (errors, rates)


def test_nfe_counts_match_the_calls_made():
    for solver, steps in (("euler", 5), ("heun", 5)):
        den = OracleDenoiser(DATA, NOISE)
        get_solver(solver)(den, torch.randn(1, 1, 8, 8), sigmas_karras(steps))
        assert den.calls == num_denoiser_calls(solver, steps)


def test_sample_is_deterministic_and_independent_of_chunking():
    den = OracleDenoiser(DATA, NOISE)
    kwargs = dict(steps=6, solver="stochastic", seed=5, solver_options={"s_churn": 10.0})
    a = sample(den, (6, 1, 12, 12), NOISE, **kwargs)
    b = sample(den, (6, 1, 12, 12), NOISE, batch_size=4, **kwargs)
    assert torch.allclose(a, b, atol=1e-6)
    c = sample(den, (6, 1, 12, 12), NOISE, **{**kwargs, "seed": 6})
    assert not torch.allclose(a, c)


def test_any_resolution():
    den = OracleDenoiser(DATA, NOISE)
    for n in (8, 24, 33):
        assert sample(den, (2, 1, n, n), NOISE, steps=4).shape == (2, 1, n, n)


def test_callback_can_replace_state_and_gradients_flow():
    den = OracleDenoiser(DATA, NOISE)
    seen = []
    out = get_solver("heun")(den, torch.randn(1, 1, 8, 8), sigmas_karras(3),
                             callback=lambda info: seen.append(info["i"]) or torch.zeros_like(info["x"]))
    assert seen == [0, 1, 2] and torch.equal(out, torch.zeros(1, 1, 8, 8))
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    get_solver("euler")(den, x, sigmas_karras(3)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("bad", [torch.tensor([1.0, 2.0, 0.0]), torch.tensor([2.0, 1.0]), torch.tensor([1.0])])
def test_bad_schedule_raises(bad):
    with pytest.raises(ValueError, match="sigmas"):
        get_solver("euler")(OracleDenoiser(DATA, NOISE), torch.randn(1, 1, 8, 8), bad)


def test_unknown_solver_and_missing_noise_raise():
    with pytest.raises(ValueError, match="valid solvers"):
        get_solver("rk45")
    with pytest.raises(ValueError, match="noise"):
        get_solver("stochastic")(OracleDenoiser(DATA, NOISE), torch.randn(1, 1, 8, 8), sigmas_karras(3))


def test_per_element_schedule_never_tells_a_denoiser_sigma_zero():
    """Rolling schedules bring frame 0 to sigma = 0 in their last step: that frame takes the Euler step, and the
    Heun evaluation for the others labels it with the schedule's smallest positive level (a trained network never
    saw c_noise = ln(0)/4); elements at 0 stay where the Euler step put them."""
    from funcdiff.sampling import sample_heun, sigmas_rolling

    seen, states = [], []

    def denoiser(x, sigma):
        seen.append(float(torch.as_tensor(sigma).min()))
        return 0.5 * x

    sigmas = sigmas_rolling(4, 3, 0.002, 20.0, 7.0).reshape(4, 1, 4, 1)  # (steps + 1, 1, W, 1)
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    out = sample_heun(denoiser, x, sigmas, callback=lambda info: states.append(info["x"]))
    assert min(seen) == pytest.approx(float(sigmas[sigmas > 0].min()), rel=1e-6)
    torch.testing.assert_close(out[:, 0], 0.5 * states[-2][:, 0])  # frame 0: the Euler step to 0 gives D(x)
