"""Training on several grids at once (data.resolutions): each batch holds one grid, the grids alternate by step,
the checkpoint records them, and the model samples on both; in-memory fields may be given one tensor per grid."""

from __future__ import annotations

import pytest
import torch

from funcdiff.cli.sample import sample_checkpoint
from funcdiff.config import config_from_dict
from funcdiff.errors import UserError
from funcdiff.io.checkpoint import read_checkpoint, read_meta
from funcdiff.training import Trainer
from funcdiff.training.multigrid import MultiGridSource


def _config(tmp_path, **data):
    return config_from_dict({
        "data": {"source": "synthetic", "num_samples": 12, "dim": 2, "resolutions": [16, 32], **data},
        "model": {"backbone": "uno", "n_modes": [6, 6], "hidden_channels": 8, "emb_dim": 16, "norm_groups": 4},
        "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "eval_every": 2, "checkpoint_every": 0,
                  "log_every": 0, "out_dir": str(tmp_path / "run")},
        "sample": {"steps": 3}})


def test_a_multigrid_run_alternates_grids_records_them_and_samples_both(tmp_path):
    trainer = Trainer.from_config(_config(tmp_path), progress=False)
    assert isinstance(trainer.source, MultiGridSource) and trainer.source.grids == [(16, 16), (32, 32)]
    shapes = [tuple(trainer.source.batch(k).shape) for k in range(4)]
    assert shapes == [(4, 1, 16, 16), (4, 1, 32, 32)] * 2
    # grid g's batch j is batch j of that grid's own (seed, epoch) order
    assert torch.equal(trainer.source.batch(3), trainer.source.sources[1].batch(1))
    assert trainer.source.num_items == 2 * trainer.source.sources[0].num_items
    trainer.fit()
    records = _records(trainer)
    assert records and all(torch.isfinite(torch.tensor(r["val_loss"])) for r in records)
    path = trainer.save_checkpoint()
    meta = read_meta(read_checkpoint(path))
    assert meta.extra["resolutions"] == [[16, 16], [32, 32]]
    for n in (16, 32):
        fields, _, _ = sample_checkpoint(tmp_path / "run", n, 2, seed=0)
        assert fields.shape == (2, 1, n, n) and bool(torch.isfinite(fields).all())


def _records(trainer):
    import json

    from funcdiff.training.trainer import LOG_FILE

    lines = (trainer.out_dir / LOG_FILE).read_text().splitlines()
    return [r for r in map(json.loads, lines) if "val_loss" in r]


def test_in_memory_fields_one_tensor_per_grid_and_refusals(tmp_path):
    g = torch.Generator().manual_seed(0)
    fields = [torch.randn(10, 1, n, n, generator=g) for n in (16, 24)]
    cfg = _config(tmp_path, resolutions=[])
    trainer = Trainer.from_config(cfg, fields=fields, progress=False)
    assert trainer.source.grids == [(16, 16), (24, 24)]
    trainer.train_step()
    trainer.train_step()
    assert trainer.step == 2
    with pytest.raises(UserError, match="data.source: synthetic"):
        Trainer.from_config(cfg.replace(["data.source=file", "data.path=x.h5", "data.resolutions=[16, 32]"]),
                            progress=False)
    with pytest.raises(ValueError, match="distinct"):
        _config(tmp_path, resolutions=[16, 16])


def test_compiled_multigrid_training_traces_twice_for_three_grids_and_trains_like_eager(tmp_path, monkeypatch):
    """``train.compile`` on three grids: torch.compile's default traces the first grid with static sizes and the
    second with symbolic ones, which the third reuses (the layers trace as one graph with symbolic sizes); the
    trained weights equal eager training's. Dynamo's graph with the eager backend (no compiler in the suite)."""
    import functools

    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=counter))
    trainers = {}
    for compiled in (False, True):
        cfg = _config(tmp_path / str(compiled), resolutions=[16, 24, 32])
        cfg = cfg.replace([f"train.compile={str(compiled).lower()}", "train.steps=6", "train.eval_every=0"])
        trainers[compiled] = Trainer.from_config(cfg, progress=False)
        trainers[compiled].fit()
    assert counter.frame_count == 2
    for name, value in trainers[False].model.state_dict().items():
        torch.testing.assert_close(trainers[True].model.state_dict()[name], value, rtol=0, atol=1e-5)
