"""GPU performance, ready to measure: training steps/s and sampling samples/s at 64², 128², 256², peak memory,
and the cost of a guided sampler step relative to an unguided one; fp32 vs bf16 autocast (and, with --compile, eager vs
torch.compile) on CUDA. Without CUDA it runs the same measurements on the CPU and says so.

Training rows time ``Trainer.train_step`` (the package's trainer: EDM loss, AdamW, EMA; synthetic GRF data) after
warm-up steps; sampling rows time the package's Heun sampler (``funcdiff.sampling.sample``) and its guided
version (``funcdiff.guidance.guided_sample``, 3 % of the grid observed) with the trained-shape EMA network.
``guided_step_ratio`` = guided / unguided wall time at equal steps (the price of the gradient through the denoiser).
``peak_mem_mb``: ``torch.cuda.max_memory_allocated`` per row (CUDA only). The best variant per resolution is
printed: that is what to set in a config (train.bf16, train.compile), which default to off until a GPU run shows a
gain (docs: "Batch jobs, multi-GPU training and Slurm").

Rows: {"device", "resolution", "variant", "train_batch", "train_steps_per_s", "sample_batch", "steps",
       "samples_per_s", "samples_per_s_graphed" (``sample(cuda_graphs=True)``; CUDA only), "guided_step_ratio",
       "peak_mem_mb"}

    python benchmarks/gpu.py --out benchmarks/results/gpu_h100.json   # a GPU: 64², 128², 256², darcy_128_gpu model
    python benchmarks/gpu.py --quick --out benchmarks/results/gpu_cpu_quick.json   # CPU: 32², 64², small model
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, parser, print_table, timed, write_json  # noqa: E402

from funcdiff.config import config_from_dict  # noqa: E402
from funcdiff.guidance import SparseObservation, guided_sample, random_sensors  # noqa: E402
from funcdiff.sampling import sample  # noqa: E402
from funcdiff.training import Trainer  # noqa: E402

SIGMA_MAX_MEASURED = 80.0  # the sampler default when results/*.json were measured (now 20: funcdiff.schedules)

FULL_MODEL = {"backbone": "fno", "n_modes": [32, 32], "hidden_channels": 128, "n_layers": 6, "emb_dim": 128,
              "norm_groups": 8}  # configs/darcy_128_gpu.yaml
QUICK_MODEL = {"backbone": "fno", "n_modes": [8, 8], "hidden_channels": 16, "n_layers": 2, "emb_dim": 16,
               "norm_groups": 4}
COLUMNS = ["device", "resolution", "variant", "train_batch", "train_steps_per_s", "sample_batch", "steps",
           "samples_per_s", "samples_per_s_graphed", "guided_step_ratio", "peak_mem_mb"]


def _config(resolution: int, model: dict, batch: int, device: str, bf16: bool, compile_: bool, out: str) -> dict:
    return {"name": "gpu-bench",
            "data": {"source": "synthetic", "channels": ["a", "u"], "resolution": resolution,
                     "num_samples": 3 * batch, "test_fraction": 0.25},
            "noise": {"smoothness": 2.0, "length_scale": 0.05}, "model": model,
            "train": {"steps": 10 ** 6, "batch_size": batch, "warmup_steps": 10, "log_every": 0, "eval_every": 0,
                      "checkpoint_every": 0, "out_dir": out, "device": "cuda" if device.startswith("cuda") else "cpu",
                      "bf16": bf16, "compile": compile_}}


def train_rate(trainer: Trainer, warmup: int, steps: int, device: str) -> float:
    """Optimizer steps per second after ``warmup`` steps (compilation, cuDNN/cuFFT plans, allocator)."""
    for _ in range(warmup):
        trainer.train_step()
    return steps / timed(lambda: [trainer.train_step() for _ in range(steps)], device)


def sample_rates(trainer: Trainer, resolution: int, batch: int, steps: int, seed: int, device: str
                 ) -> tuple[float, float, float | None]:
    """(samples/s of unguided Heun sampling, guided / unguided wall-time ratio, samples/s of unguided sampling with
    ``cuda_graphs``: CUDA only, else None) with the EMA network."""
    model = trainer.ema.ema_model.eval()
    shape = (batch, 2, resolution, resolution)
    gen = torch.Generator().manual_seed(seed)
    coords = random_sensors(0.03, (resolution, resolution), grid="periodic", generator=gen)
    obs = SparseObservation(coords=coords, channels=(1,), grid="periodic")
    obs = SparseObservation(coords=coords, channels=(1,), grid="periodic",
                            values=obs.observe(torch.randn(1, 2, resolution, resolution, generator=gen).double()))

    def unguided():
        sample(model, shape, trainer.noise, steps=steps, seed=seed, device=device, sigma_max=SIGMA_MAX_MEASURED)

    def guided():
        guided_sample(model, trainer.noise, obs, shape, steps=steps, seed=seed, device=device,
                      sigma_max=SIGMA_MAX_MEASURED)

    def graphed():
        sample(model, shape, trainer.noise, steps=steps, seed=seed, device=device, sigma_max=SIGMA_MAX_MEASURED,
               cuda_graphs=True)

    unguided()  # warm-up
    t_plain = min(timed(unguided, device) for _ in range(2))
    guided()
    t_guided = min(timed(guided, device) for _ in range(2))
    rate_graphed = None
    if device.startswith("cuda"):
        graphed()
        rate_graphed = batch / min(timed(graphed, device) for _ in range(2))
    return batch / t_plain, t_guided / t_plain, rate_graphed


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--compile", action="store_true", help="also time torch.compile variants (slow to compile)")
    p.add_argument("--resolutions", type=int, nargs="*", default=None)
    args = p.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is visible")
    print(f"device: {machine() if cuda else 'CPU (no CUDA device: the same measurements on the CPU)'}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load {os.getloadavg()[0]:.1f}")
    resolutions = args.resolutions or ([32, 64] if args.quick else [64, 128, 256])
    model = QUICK_MODEL if args.quick else FULL_MODEL
    train_batch, sample_batch, steps = (4, 4, 8) if args.quick else (32, 16, 32)
    warmup, timed = (2, 5) if args.quick else (5, 20)
    variants = [("fp32", False, False)]
    if cuda:
        variants.append(("bf16", True, False))
        if args.compile:
            variants += [("fp32+compile", False, True), ("bf16+compile", True, True)]
    rows = []

    def save(complete: bool) -> None:
        """The rows so far, written atomically after each one: a run stopped by a time limit keeps them."""
        write_json(rows, args.out, {"benchmark": "gpu", "quick": args.quick, "cuda": cuda, "model": model,
                                    "threads": torch.get_num_threads(), "loadavg": os.getloadavg(),
                                    "note": "no CUDA device: CPU run" if not cuda else "", "complete": complete})

    with tempfile.TemporaryDirectory() as tmp:
        for n in resolutions:
            for name, bf16, compile_ in variants:
                if cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                config = config_from_dict(_config(n, model, train_batch, args.device, bf16, compile_, tmp))
                trainer = Trainer.from_config(config, progress=False)
                row = {"device": "cuda" if cuda else "cpu", "resolution": n, "variant": name,
                       "train_batch": train_batch, "train_steps_per_s": train_rate(trainer, warmup, timed, args.device)}
                if name == "fp32":  # sampling has no bf16/compile switch: measured once per resolution
                    rate, ratio, graphed = sample_rates(trainer, n, sample_batch, steps, args.seed, args.device)
                    row.update(sample_batch=sample_batch, steps=steps, samples_per_s=rate, guided_step_ratio=ratio,
                               samples_per_s_graphed=graphed)
                row["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None
                rows.append(row)
                print_table(rows[-1:], COLUMNS)
                save(complete=False)
                del trainer
    print()
    print_table(rows, COLUMNS)
    for n in resolutions:
        best = max((r for r in rows if r["resolution"] == n), key=lambda r: r["train_steps_per_s"])
        print(f"{n}²: fastest training variant {best['variant']} ({best['train_steps_per_s']:.3g} steps/s)")
    save(complete=True)


if __name__ == "__main__":
    main()
