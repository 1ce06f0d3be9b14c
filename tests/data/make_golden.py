"""Make tests/data/golden/ with the code before the issue-19 redesign: tiny checkpoints of every model kind,
their data, and the results of tests/golden_cases.py (reference.npz). Run from the repository root:
``OMP_NUM_THREADS=1 python tests/data/make_golden.py``."""

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from golden_cases import CASES, GOLDEN  # noqa: E402

from funcdiff.config import config_from_dict  # noqa: E402
from funcdiff.data import generate_to_hdf5  # noqa: E402
from funcdiff.io.netcdf import fields_to_dataset, write_netcdf  # noqa: E402
from funcdiff.pde import get_problem  # noqa: E402
from funcdiff.training import Trainer, train  # noqa: E402

TRAIN = {"warmup_steps": 1, "log_every": 0, "eval_every": 0, "checkpoint_every": 0, "device": "cpu"}


def _train(config: dict, name: str, tmp: Path, fields=None) -> None:
    config["train"] = {**TRAIN, **config["train"], "out_dir": str(tmp / name)}
    trainer = Trainer.from_config(config_from_dict(config), fields=fields, progress=False)
    trainer.fit()
    shutil.copy(trainer.save_checkpoint(), GOLDEN / f"{name}.pt")


def main() -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        darcy = get_problem("darcy").generate(4, 12, generator=torch.Generator().manual_seed(0))
        write_netcdf(fields_to_dataset(torch.stack([darcy["a"], darcy["u"]], 1), ("a", "u"), grid="node"),
                     GOLDEN / "cases.nc")
        train_fields = get_problem("darcy").generate(16, 12, generator=torch.Generator().manual_seed(1))
        _train({"name": "darcy-tiny", "data": {"source": "synthetic", "channels": ["a", "u"], "resolution": 12,
                                               "num_samples": 16, "test_fraction": 0.25},
                "model": {"backbone": "fno", "n_modes": [4, 4], "hidden_channels": 8, "n_layers": 1, "emb_dim": 8,
                          "norm_groups": 4},
                "train": {"steps": 3, "batch_size": 4}}, "field", tmp,
               fields=torch.stack([train_fields["a"], train_fields["u"]], 1))
        from test_forecast import ADVECTION, _config

        generate_to_hdf5(ADVECTION, GOLDEN / "adv.h5", num_samples=8, resolution=16, seed=0, batch_size=8,
                         progress=False)
        for kind in ("rolling", "autoregressive"):
            config = _config(tmp)
            config["data"]["path"] = str(GOLDEN / "adv.h5")
            config["model"].update(n_modes=[6], hidden_channels=8, n_layers=1, emb_dim=8)
            config["train"].update(steps=3, batch_size=4)
            config["forecast"].update(kind=kind, horizon=2 if kind == "autoregressive" else 3)
            _train(config, kind, tmp)
        generate_to_hdf5(get_problem("burgers_shock"), GOLDEN / "shock.h5", num_samples=4, resolution=64,
                         batch_size=4, params={"num_frames": 21}, progress=False)
        for name, file in (("trajectory", "burgers-shock-wavelet.yaml"), ("superres", "burgers-shock-superres.yaml")):
            config = yaml.safe_load((ROOT / "configs" / "wavelet" / file).read_text())
            config["data"].update(path=str(GOLDEN / "shock.h5"), test_fraction=0.25)
            config["model"].update(n_modes=[1, 4] if name == "trajectory" else [2, 4], hidden_channels=8, n_layers=1, emb_dim=8, norm_groups=4)
            config["forecast"].update(horizon=8, stride=4)
            if name == "trajectory":
                config["transform"]["levels"] = 2
            config["train"] = {"steps": 3, "batch_size": 2, "seed": 1}
            _train(config, name, tmp)
        results = {}
        for case, run in CASES.items():
            (tmp / "cases" / case).mkdir(parents=True)
            for key, value in run(tmp / "cases" / case).items():
                results[f"{case}/{key}"] = value
        np.savez_compressed(GOLDEN / "reference.npz", **results)
        print({k: v.shape for k, v in results.items()})


if __name__ == "__main__":
    main()
