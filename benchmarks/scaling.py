"""Cost of the default 2-D denoiser versus resolution: forward (no_grad) and one EDM training step.

Usage: python benchmarks/scaling.py [--quick] [--out FILE.json] [--batch 8] [--device cpu] [--threads 1]

Rows: {"resolution", "what", "seconds", "cpu_seconds"} with what in {"forward", "train_step", "spectralconv dense",
"spectralconv tucker"}; seconds is the median wall time over repeats, cpu_seconds the mean process CPU
time (all threads; more stable than wall time on a shared machine). The table also gives the growth factor per
doubling of the resolution (x4 grid points in 2-D; an FFT-bound model grows a little faster than 4x).
The training step is EDM's loss (Karras et al. 2022, eq. (8), log-normal sigma with P_mean=-1.2, P_std=1.2)
on white noise data, written inline because the trainer lives in funcdiff.training.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402

from funcdiff.models import EDMPrecond, FNOConfig, NoiseConditionedFNO  # noqa: E402

DEFAULT_CONFIG = dict(in_channels=1, out_channels=1, n_modes=(16, 16))


def measure(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """After one warm-up run: median wall time and mean process CPU time (all threads) of ``fn()``, in seconds.

    CPU time is more stable than wall time on a shared, loaded machine.
    """
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.mean(cpus)


def edm_loss(denoiser: EDMPrecond, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """EDM training loss (Karras et al. 2022, eq. (8) and Table 1) with white noise."""
    ln_sigma = -1.2 + 1.2 * torch.randn(y.shape[0], generator=g, device=y.device)
    sigma = ln_sigma.exp().reshape(-1, *[1] * (y.ndim - 1))
    noise = torch.randn(y.shape, generator=g, device=y.device) * sigma
    weight = denoiser.loss_weight(sigma)
    return (weight * (denoiser(y + noise, sigma) - y) ** 2).mean()


def bench_model(res: int, batch: int, repeats: int, device: torch.device) -> list[dict]:
    g = torch.Generator(device=device).manual_seed(0)
    denoiser = EDMPrecond(NoiseConditionedFNO(FNOConfig(**DEFAULT_CONFIG)), sigma_data=1.0).to(device)
    x = torch.randn(batch, 1, res, res, generator=g, device=device)
    sigma = torch.full((batch,), 1.0, device=device)
    opt = torch.optim.AdamW(denoiser.parameters(), lr=1e-4)

    def forward():
        with torch.no_grad():
            denoiser(x, sigma)

    def train_step():
        opt.zero_grad(set_to_none=True)
        edm_loss(denoiser, x, g).backward()
        opt.step()

    return [_row(res, "forward", forward, repeats, device), _row(res, "train_step", train_step, repeats, device)]


def _row(res: int, what: str, fn, repeats: int, device: torch.device) -> dict:
    seconds, cpu_seconds = measure(fn, repeats, device)
    return {"resolution": res, "what": what, "seconds": seconds, "cpu_seconds": cpu_seconds}


def bench_factorization(res: int, batch: int, repeats: int, device: torch.device) -> list[dict]:
    """One 32-channel SpectralConv layer (16x16 modes) with dense versus Tucker (rank 0.5) weights, forward."""
    from neuralop.layers.spectral_convolution import SpectralConv

    x = torch.randn(batch, 32, res, res, generator=torch.Generator(device=device).manual_seed(1), device=device)
    rows = []
    for label, kwargs in [("dense", {}), ("tucker", {"factorization": "tucker", "implementation": "factorized"})]:
        layer = SpectralConv(32, 32, (16, 16), **kwargs).to(device)

        def forward(layer=layer):
            with torch.no_grad():
                layer(x)

        rows.append(_row(res, f"spectralconv {label}", forward, repeats, device))
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'what':<22}{'resolution':>11}{'seconds':>10}{'x/doubling':>12}{'cpu_seconds':>13}{'x/doubling':>12}")
    for what in dict.fromkeys(r["what"] for r in rows):
        previous = None
        for r in (r for r in rows if r["what"] == what):
            growth = [f"{r[k] / previous[k]:.2f}" if previous else "-" for k in ("seconds", "cpu_seconds")]
            print(f"{what:<22}{r['resolution']:>11}{r['seconds']:>10.4f}{growth[0]:>12}{r['cpu_seconds']:>13.4f}{growth[1]:>12}")
            previous = r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32^2..128^2 and fewer repeats")
    parser.add_argument("--out", default=None, help="write JSON rows here")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: stable timings on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    resolutions = [32, 64, 128] if args.quick else [32, 64, 128, 256]
    repeats = 3 if args.quick else 5
    rows = []
    for res in resolutions:
        rows += bench_model(res, args.batch, repeats, device)
    for res in resolutions:
        rows += bench_factorization(res, args.batch, repeats, device)
    print(f"device={device}, batch={args.batch}, threads={torch.get_num_threads()}, model={DEFAULT_CONFIG} + FNOConfig defaults")
    print_table(rows)
    if args.out:
        write_json(rows, Path(args.out), {"benchmark": "scaling", "quick": args.quick, "batch": args.batch})


if __name__ == "__main__":
    main()
