"""A barely trained joint Darcy (a, u) model on the node grid and a netCDF file of truths: results need not be
good, only reproducible. Shared by the batch and CF tests."""

from __future__ import annotations

from pathlib import Path

import torch

from funcdiff.config import config_from_dict
from funcdiff.io.netcdf import fields_to_dataset, write_netcdf
from funcdiff.pde import get_problem


def tiny_darcy_run(tmp: Path, *, n: int, fields: int, cases: int, name: str = "darcy-tiny", steps: int = 2,
                   batch_size: int = 4, test_fraction: float = 0.25) -> Path:
    """Train ``steps`` steps on ``fields`` Darcy pairs at n² and write the first ``cases`` to ``tmp/cases.nc``;
    returns the checkpoint."""
    from funcdiff.training import Trainer

    d = get_problem("darcy").generate(fields, n, generator=torch.Generator().manual_seed(0))
    pairs = torch.stack([d["a"], d["u"]], dim=1)
    write_netcdf(fields_to_dataset(pairs[:cases], ("a", "u"), grid="node"), tmp / "cases.nc")
    config = config_from_dict({
        "name": name, "data": {"source": "synthetic", "channels": ["a", "u"], "resolution": n,
                               "num_samples": fields, "test_fraction": test_fraction},
        "model": {"backbone": "fno", "n_modes": [4, 4], "hidden_channels": 8, "n_layers": 1, "emb_dim": 8,
                  "norm_groups": 4},
        "train": {"steps": steps, "batch_size": batch_size, "warmup_steps": 1, "log_every": 0, "eval_every": 0,
                  "checkpoint_every": 0, "out_dir": str(tmp / "run"), "device": "cpu"},
    })
    trainer = Trainer.from_config(config, fields=pairs, progress=False)
    trainer.fit()
    return trainer.save_checkpoint()
