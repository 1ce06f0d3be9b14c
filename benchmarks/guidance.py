"""Guidance variants on a linear-Gaussian inverse problem with a closed-form posterior (oracle denoiser).

Compares the likelihood scalings, function-space preconditioning and the guidance strength ζ by the relative
error of the sample mean against the exact posterior mean, the posterior-variance ratio and the observation
misfit, side by side on the same problem, seeds and schedule.

    python benchmarks/guidance.py --quick --out guidance.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402

from funcdiff.guidance import ObservationGuidance, SparseObservation, guided_sample, random_sensors  # noqa: E402
from funcdiff.noise import GaussianRandomField  # noqa: E402

SIGMA_MAX_MEASURED = 80.0  # the sampler default when results/*.json were measured (now 20: funcdiff.schedules)


class OracleDenoiser:
    """Exact E[x0 | x0 + σε] for x0 ~ N(0, Σ), ε ~ N(0, C), both diagonal in Fourier."""

    def __init__(self, data: GaussianRandomField, noise: GaussianRandomField) -> None:
        self.data, self.noise = data, noise

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        shape, dims = x.shape[2:], tuple(range(2, x.ndim))
        s = self.data.spectrum(shape, dtype=torch.float64)
        c = self.noise.spectrum(shape, dtype=torch.float64)
        sig2 = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, *[1] * (x.ndim - 1)) ** 2
        return torch.fft.ifftn(torch.fft.fftn(x.double(), dim=dims) * s / (s + sig2 * c), dim=dims).real.to(x.dtype)


def problem(data: GaussianRandomField, n: int, sensors: int, noise_std: float, seed: int = 0):
    """Observation of a prior draw, exact posterior mean (N²,) and pointwise variance (N²,)."""
    g = torch.Generator().manual_seed(seed)
    truth = data.sample((1, 1, n, n), generator=g, dtype=torch.float64)
    obs = SparseObservation(random_sensors(sensors, (n, n), generator=g), noise_std=noise_std)
    obs = obs.with_values(obs.observe(truth) + noise_std * torch.randn(1, 1, sensors, generator=g, dtype=torch.float64))
    eye = torch.eye(n * n, dtype=torch.float64).reshape(n * n, 1, n, n)
    cov = data.apply_cov_power(eye, 1.0).reshape(n * n, n * n)
    a = obs.observe(eye)[:, 0].T
    gain = cov @ a.T @ torch.linalg.inv(a @ cov @ a.T + noise_std**2 * torch.eye(sensors, dtype=torch.float64))
    return obs, gain @ obs.values[0, 0], (cov - gain @ a @ cov).diagonal()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16² grid, 256 samples, 32 steps")
    parser.add_argument("--out", default=None, help="write JSON rows here")
    args = parser.parse_args()
    n, batch, steps = (16, 256, 32) if args.quick else (32, 512, 64)
    noise = GaussianRandomField(2, smoothness=2.0, length_scale=0.1)
    datasets = {"data=noise": noise, "data smoother": GaussianRandomField(2, smoothness=3.0, length_scale=0.1)}
    variants = [("likelihood", True, 1.0), ("likelihood", True, 0.5), ("likelihood", True, 2.0),
                ("residual", True, 1.0), ("likelihood", False, 1.0)]
    rows = []
    for name, data in datasets.items():
        obs, mean, var = problem(data, n, max(8, n * n // 6), 0.05)
        term = ObservationGuidance(obs, noise)
        for scaling, precondition, strength in variants:
            start = time.perf_counter()
            x = guided_sample(OracleDenoiser(data, noise), noise, obs, (batch, 1, n, n), steps=steps, seed=1,
                              dtype=torch.float64, scaling=scaling, precondition=precondition,
                              guidance_strength=strength, sigma_max=SIGMA_MAX_MEASURED)
            rows.append({"data": name, "scaling": scaling, "precondition": precondition, "strength": strength,
                         "mean_rel_err": float((x.mean(0).flatten() - mean).norm() / mean.norm()),
                         "mc_floor": float((var.sum() / batch).sqrt() / mean.norm()),
                         "var_ratio": float(x.var(0).flatten().sum() / var.sum()),
                         "misfit": float(term.misfit(x).mean()), "seconds": time.perf_counter() - start})
    header = f"{'data':14s} {'scaling':10s} {'C-prec':6s} {'zeta':>5s} {'mean err':>9s} {'MC floor':>9s} " \
             f"{'var ratio':>9s} {'misfit':>7s} {'s':>6s}"
    print(header)
    for r in rows:
        print(f"{r['data']:14s} {r['scaling']:10s} {str(r['precondition']):6s} {r['strength']:5.1f} "
              f"{r['mean_rel_err']:9.3f} {r['mc_floor']:9.3f} {r['var_ratio']:9.3f} {r['misfit']:7.3f} "
              f"{r['seconds']:6.2f}")
    if args.out:
        write_json(rows, Path(args.out), {"benchmark": "guidance", "quick": args.quick})


if __name__ == "__main__":
    main()
