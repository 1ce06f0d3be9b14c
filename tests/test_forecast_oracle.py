"""Oracle tests of the forecasting loop: linear-Gaussian dynamics with a closed-form conditional denoiser.

Dynamics on a 1-D periodic grid of n points: x_{t+1} = a x_t + w_t, w_t ~ N(0, Q), Q = (1 - a²) S with S = s² C/amp²
proportional to the diffusion noise's covariance C, so every Fourier mode is an AR(1) process with coefficient a.
Given the last history frame x_0, the window X = (x_1..x_W) is Gaussian with mean a^k x_0 and covariance
Σ_ij = a^|i-j| (1 - a^(2 min(i,j))) S, and the exact denoiser of X + diag(σ_k) ε (ε ~ N(0, C) per frame) is
E[X | y] = μ + Σ (Σ + Σ_n)^-1 (y - μ). The forecast at lead ℓ is N(a^ℓ x_0, (1 - a^(2ℓ)) S) exactly.
"""

from __future__ import annotations

import math

import pytest
import torch

from funcdiff.config import ForecastConfig, SampleConfig
from funcdiff.guidance.observations import SparseObservation
from funcdiff.guidance.timed import TimedObservation
from funcdiff.noise import GaussianRandomField
from funcdiff.tasks.forecast import Forecaster, rollout

N, A, S2 = 16, 0.8, 1.0
NOISE = GaussianRandomField(dim=1, smoothness=1.5, length_scale=0.1)


def _cov_matrix() -> torch.Tensor:
    """C as a dense (n, n) matrix (float64)."""
    eye = torch.eye(N, dtype=torch.float64).reshape(N, 1, N)
    return NOISE.apply_cov_power(eye, 1.0).reshape(N, N)


C = _cov_matrix()
S = S2 * C / NOISE.amplitude**2


class ExactAR1Denoiser:
    """E[window | noisy window, history] for the AR(1) dynamics; history h = 1 frame, window W frames."""

    def __init__(self, window: int) -> None:
        self.window = window
        k = torch.arange(1, window + 1, dtype=torch.float64)
        lag = (k[:, None] - k[None, :]).abs()
        var = 1 - A ** (2 * torch.minimum(k[:, None], k[None, :]))
        self.prior_cov = torch.kron(A**lag * var, S)  # (W n, W n)
        self.powers = A**k

    def __call__(self, x: torch.Tensor, sigma, cond: torch.Tensor) -> torch.Tensor:
        b, w = x.shape[0], self.window
        sig = torch.as_tensor(sigma, dtype=torch.float64).expand(b) if torch.as_tensor(sigma).ndim <= 1 else None
        if sig is not None:
            per_frame = sig[0].expand(w)
        else:
            per_frame = torch.as_tensor(sigma, dtype=torch.float64).expand(b, w, 1)[0, :, 0]
        noise_cov = torch.kron(torch.diag(per_frame**2), C)
        mean = (self.powers[:, None] * cond.double().reshape(b, 1, N)).reshape(b, w * N)
        gain = torch.linalg.solve(self.prior_cov + noise_cov, self.prior_cov).T  # Σ (Σ + Σ_n)^-1
        y = x.double().reshape(b, w * N)
        return (mean + (y - mean) @ gain.T).reshape(x.shape).to(x.dtype)


def _forecaster(kind: str, window: int, sigma_data: float = 1.0) -> Forecaster:
    fc = ForecastConfig(kind=kind, history=1, horizon=window)
    return Forecaster(ExactAR1Denoiser(window), NOISE, fc, ("u",), sample=SampleConfig(sigma_max=50.0),
                      sigma_data=sigma_data)


def _run(fc: Forecaster, x0: torch.Tensor, leads: int, members: int, spf: int, **kw) -> torch.Tensor:
    """All frames (M, L, n) of one rollout, in float64."""
    frames = [f for _, f, _ in rollout(fc, x0, leads, members=members, seed=3, steps_per_frame=spf, **kw)]
    return torch.cat(frames, dim=2)[:, 0].double()


def _modes(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.rfft(x, norm="ortho")


@pytest.mark.parametrize("kind,window,spf", [("autoregressive", 1, 20), ("rolling", 4, 12)])
def test_rollout_reproduces_exact_forecast_moments(kind, window, spf):
    torch.manual_seed(0)
    x0 = (torch.linalg.cholesky(S) @ torch.randn(N, dtype=torch.float64)).reshape(1, 1, N).float()
    members = 512
    out = _run(_forecaster(kind, window), x0, 20, members, spf)
    x0_hat = _modes(x0.double().reshape(N))
    spec = torch.fft.rfft(S[0]).real  # S is circulant: E|x̂_k|² of its ortho modes = its eigenvalues
    for lead in (1, 5, 20):
        modes = _modes(out[:, lead - 1])  # (M, K)
        mean_err = (modes.mean(0) - A**lead * x0_hat).abs()
        var_true = (1 - A ** (2 * lead)) * spec
        var_emp = (modes - modes.mean(0)).abs().pow(2).mean(0)
        floor = (var_true / members).sqrt()  # Monte-Carlo std of the mean, per mode
        assert bool((mean_err <= 5 * floor + 1e-3).all()), (lead, (mean_err / floor).max())
        rel = (var_emp / var_true - 1).abs()
        # Monte-Carlo floor of a variance ratio: sqrt(1/M) = 0.044 for a complex mode, sqrt(2/M) = 0.06 for a
        # real one; Heun's discretisation adds up to ~0.15 at lead 1 with these step counts (measured: 0.03 at
        # 40 steps); the mean bias of starting from N(0, sigma_max² C) instead of N(mean, ...) is O(1/sigma_max).
        assert float(rel.max()) < 0.3 and float(rel.mean()) < 0.15, (lead, rel)


def test_assimilation_reproduces_the_sequential_conditional_law():
    """AR(1) with point sensors every 2 frames: the guided autoregressive rollout (exact denoiser, and the
    likelihood's covariance model is exact here because Q ∝ C) draws x_ℓ ~ p(x_ℓ | x_{ℓ-1}, y_ℓ) member by member;
    its mean and covariance follow the closed-form recursion below (its mean is not the Kalman filter's: an
    autoregressive sampler never revises emitted frames; the recursion is the exact law it must reproduce)."""
    torch.manual_seed(1)
    x0 = (torch.linalg.cholesky(S) @ torch.randn(N, dtype=torch.float64)).reshape(1, 1, N)
    coords = torch.tensor([[0.0], [0.25], [0.5], [0.75]], dtype=torch.float64)
    leads, r_std = [2, 4, 6], 0.1
    truth = [x0.reshape(N)]
    for _ in range(6):
        truth.append(A * truth[-1] + math.sqrt(1 - A**2) * torch.linalg.cholesky(S) @ torch.randn(N, dtype=torch.float64))
    sensors = SparseObservation(coords=coords, channels=(0,), noise_std=r_std, grid="periodic")
    H = sensors.observe(torch.eye(N, dtype=torch.float64).reshape(N, 1, N))[:, 0].T  # (4, n)
    values = torch.stack([H @ truth[l] for l in leads])[:, None]  # noise-free values, (K, 1, 4)
    obs = TimedObservation(sensors.with_values(values), torch.tensor(leads, dtype=torch.float64))
    fc = _forecaster("autoregressive", 1, sigma_data=math.sqrt((1 - A**2) * S2))
    out = _run(fc, x0.float(), 6, 1024, 20, observations=obs)

    Q, R = (1 - A**2) * S, r_std**2 * torch.eye(4, dtype=torch.float64)
    gain = Q @ H.T @ torch.linalg.inv(H @ Q @ H.T + R)
    mean, cov = x0.reshape(N), torch.zeros(N, N, dtype=torch.float64)
    for lead in range(1, 7):
        mean, cov = A * mean, A**2 * cov + Q
        if lead in leads:
            m = torch.eye(N, dtype=torch.float64) - gain @ H
            mean = m @ mean + gain @ values[leads.index(lead), 0]
            cov = m @ (cov - Q) @ m.T + (Q - gain @ H @ Q)
        emp = out[:, lead - 1]
        sd = cov.diagonal().sqrt()
        assert float(((emp.mean(0) - mean).abs() / sd).max()) < 5 / math.sqrt(1024) * 1.5, lead
        ratio = emp.var(0) / cov.diagonal()
        assert float((ratio - 1).abs().max()) < 0.3 and float((ratio - 1).abs().mean()) < 0.12, (lead, ratio)
