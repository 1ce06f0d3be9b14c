"""``funcdiff sample``: draw fields from a trained checkpoint at any resolution and write them to netCDF."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from funcdiff.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sample`` verb."""
    from funcdiff.cli import positive_int
    from funcdiff.cli.choices import SOLVERS

    parser = subparsers.add_parser("sample", help="sample fields from a trained checkpoint into netCDF")
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or run directory (latest checkpoint)")
    parser.add_argument("--resolution", type=positive_int, required=True, help="grid points per spatial axis")
    parser.add_argument("--num-samples", type=positive_int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output netCDF file")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="solver steps (default: the config's sample.steps)")
    parser.add_argument("--solver", default=None, choices=sorted(SOLVERS), help="default: the config's")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="samples per chunk (bounds memory)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="replay the denoiser calls from CUDA graphs (a CUDA --device; the same samples, less "
                             "host overhead per call)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run_sample)


def sample_checkpoint(checkpoint: str | os.PathLike, resolution: int, num_samples: int, *, seed: int = 0,
                      steps: int | None = None, solver: str | None = None, batch_size: int | None = None,
                      device: str = "cpu", ema: bool = True, progress: bool = False, cuda_graphs: bool = False):
    """Sample ``num_samples`` fields at ``resolution`` from a checkpoint, decoded to physical units.

    Uses the checkpoint's GRF noise and sampler settings (``sample`` section of its config) unless
    ``steps``/``solver`` are given; ``cuda_graphs`` replays the denoiser calls from CUDA graphs (a CUDA ``device``).
    Returns ``(fields, meta, settings)``.

    Shapes: fields (num_samples, C, *([resolution] * dim)), float32 on CPU.
    """
    from funcdiff.cli import check_cuda_graphs
    from funcdiff.kinds.base import load_for_role
    from funcdiff.sampling import sample

    if resolution < 2 or num_samples < 1:
        raise UserError(f"need resolution >= 2 and num_samples >= 1, got {resolution} and {num_samples}")
    check_cuda_graphs(cuda_graphs, device)
    denoiser, meta = load_for_role(checkpoint, "field", device, ema=ema)  # UserError for a forecaster or super-resolver
    settings = {**meta.config.get("sample", {})}
    settings.update({k: v for k, v in (("steps", steps), ("solver", solver)) if v is not None})
    spatial = [resolution] * meta.noise.dim
    if meta.noise.as_dict().get("domain") == "sphere":  # lat-lon: `resolution` rows without poles, twice the columns
        spatial = [resolution, 2 * resolution]
    shape = (num_samples, len(meta.channel_names), *spatial)
    x = sample(denoiser, shape, meta.noise, seed=seed, batch_size=batch_size, device=device, progress=progress,
               cuda_graphs=cuda_graphs, **settings)
    x = x.float().cpu()
    if meta.normalizer is not None:
        x = meta.normalizer.decode(x)
    return x, meta, settings


def run_sample(args: argparse.Namespace) -> int:
    from funcdiff.io.netcdf import fields_to_dataset, write_netcdf
    from funcdiff.io.plots import plot_samples_vs_data
    from funcdiff.tasks.solve import checkpoint_grid

    fields, meta, settings = sample_checkpoint(
        args.checkpoint, args.resolution, args.num_samples, seed=args.seed, steps=args.steps, solver=args.solver,
        batch_size=args.batch_size, device=args.device, ema=not args.raw, progress=not args.no_progress,
        cuda_graphs=args.cuda_graphs)
    attrs = {"title": f"funcdiff samples of {meta.task or 'run'}", "source": "funcdiff sample",
             "checkpoint": str(meta.path), "checkpoint_step": meta.step, "task": meta.task or "",
             "seed": args.seed, "weights": "raw" if args.raw else "ema", "resolution": args.resolution,
             "training_resolution": list(meta.resolution), "noise": meta.noise.as_dict(), "sampler": settings,
             "config": meta.config}
    ds = fields_to_dataset(fields, meta.channel_names, attrs, grid=checkpoint_grid(meta))
    path = write_netcdf(ds, Path(args.out))
    print(f"wrote {args.num_samples} samples at {args.resolution}^{meta.noise.dim} to {path}")
    for c, name in enumerate(meta.channel_names):
        png = plot_samples_vs_data({"samples": fields}, path.with_name(f"{path.stem}_{name}.png"), channel=c,
                                   channel_name=name, units=str(ds[name].attrs.get("units", "1")),
                                   grid=checkpoint_grid(meta))
        print(f"wrote {png}")
    return 0
