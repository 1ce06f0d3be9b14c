"""Darcy inverse and forward problems end to end: recover the permeability a from 3 % of the pressure u,
and the pressure u from 3 % of the permeability (diffusion posterior of a pushed through our solver).

    python examples/darcy_inverse.py                      # CPU, ~minutes: small data, short training at 32²
    python examples/darcy_inverse.py --checkpoint runs/darcy-64 --resolution 64   # a model trained from
                                                          # configs/tasks/darcy-64.yaml with `funcdiff train`

Writes ``darcy_inverse.nc`` (posterior samples, mean, std, truth, error) and ``darcy_inverse.png``, and the
same for the forward problem (``darcy_inverse_forward.nc`` / ``.png``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from funcdiff.config import load_config
from funcdiff.pde import get_problem
from funcdiff.tasks import make_observation, solve
from funcdiff.training import Trainer

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tasks" / "darcy-64.yaml"


def darcy_fields(num: int, resolution: int, seed: int) -> torch.Tensor:
    """Joint (a, u) Darcy fields (num, 2, N, N) on the node grid, physical units."""
    data = get_problem("darcy").generate(num, resolution, generator=torch.Generator().manual_seed(seed))
    return torch.stack([data["a"], data["u"]], dim=1)


def train_small(resolution: int, out_dir: Path, seed: int) -> Path:
    """A small joint model (CPU-sized) trained with the package's Trainer; returns its checkpoint."""
    overrides = [f"data.resolution={resolution}", "train.steps=800", f"train.out_dir={out_dir}",
                 "train.checkpoint_every=0", "train.eval_every=0", "train.log_every=100", "train.warmup_steps=50",
                 "model.hidden_channels=24", "model.n_layers=3", "model.n_modes=[12, 12]", f"train.seed={seed}"]
    trainer = Trainer.from_config(load_config(CONFIG, overrides), fields=darcy_fields(400, resolution, seed=0))
    trainer.fit()
    return trainer.save_checkpoint()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--out", type=Path, default=Path("darcy_inverse.nc"))
    p.add_argument("--seed", type=int, default=0, help="training, sensor and sampling seed")
    args = p.parse_args()
    checkpoint = args.checkpoint or train_small(args.resolution, Path("runs/example_darcy"), args.seed)
    truth = darcy_fields(1, args.resolution, seed=12345)                 # a held-out field
    for task, out, extra in (("darcy-inverse", args.out, {}),
                             ("darcy-forward", args.out.with_name(args.out.stem + "_forward.nc"), {"pushforward": True})):
        observation = make_observation(task, truth, fraction=0.03, seed=args.seed)
        posterior = solve(checkpoint, task, observation, num_samples=8, steps=args.steps, truth=truth,
                          seed=args.seed, **extra)
        print(task, posterior.metrics())
        posterior.save(out)
        posterior.plot(out.with_suffix(".png"))
        print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
