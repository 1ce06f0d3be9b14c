"""Data parallel = one process: 2 gloo ranks take the same steps as 1 process on the same global batch, gradient
accumulation equals the big batch, and the ranks' shards cover each epoch's batches exactly once.

Tolerance: weights after 5 AdamW steps agree to 1e-5 absolute (float32; the ranks' mean gradients are averaged by
an all-reduce instead of one mean over the batch, so sums are rounded in another order).
Measured: 6e-8 (2 ranks), 9e-8 (2 ranks x 2 micro-batches), 6e-8 and 1.2e-7 (accumulation 2, 4).
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from funcdiff.config import config_from_dict
from funcdiff.training import Trainer

ATOL = 1e-5


def _config(out, **train):
    return {
        "data": {"resolution": 12, "num_samples": 30, "test_fraction": 0.2},
        "model": {"n_modes": [4, 4], "hidden_channels": 8, "n_layers": 1, "emb_dim": 8, "norm_groups": 4},
        "train": {"steps": 5, "batch_size": 8, "warmup_steps": 1, "lr": 3e-3, "log_every": 0, "eval_every": 0,
                  "checkpoint_every": 0, "out_dir": str(out), "device": "cpu", **train},
    }


SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from funcdiff.config import config_from_dict
    from funcdiff.training import Trainer
    from funcdiff.training.distributed import dist_info_from_env, init_distributed, shutdown_distributed

    torch.set_num_threads(1)
    out, configs = sys.argv[1], json.loads(sys.argv[2])
    info = dist_info_from_env()
    init_distributed(torch.device("cpu"), info)
    result = {}
    for name, config in configs.items():
        trainer = Trainer.from_config(config_from_dict(config), device="cpu", dist_info=info, progress=False)
        per_epoch = trainer.train_x.shape[0] // config["train"]["batch_size"]
        result[name] = {"model": trainer.model.state_dict(), "batches": [trainer.batch_indices(s).tolist()
                                                                          for s in range(2 * per_epoch)]}
        trainer.fit()
        result[name]["model"] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        result[name]["ema"] = trainer.ema.state_dict()
    torch.save(result, f"{out}/rank{info.rank}.pt")
    shutdown_distributed()
""")


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) if not a[k].is_complex() else
               float((a[k].cdouble() - b[k].cdouble()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    import json

    tmp = tmp_path_factory.mktemp("ddp_eq")
    script = tmp / "ddp.py"
    script.write_text(SCRIPT)
    configs = {"plain": _config(tmp / "plain"), "accum": _config(tmp / "accum", grad_accum=2)}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp), json.dumps(configs)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def _one_process(tmp_path, **train):
    trainer = Trainer.from_config(config_from_dict(_config(tmp_path, **train)), device="cpu", progress=False)
    trainer.fit()
    return trainer


def test_two_ranks_equal_one_process_after_five_steps(two_ranks, tmp_path):
    one = _one_process(tmp_path)
    assert one.step == 5
    start = Trainer.from_config(config_from_dict(_config(tmp_path)), device="cpu", progress=False)
    moved = _max_diff(one.model.state_dict(), start.model.state_dict())
    for rank in two_ranks:
        diff = _max_diff(rank["plain"]["model"], one.model.state_dict())
        assert diff < ATOL, diff
        assert _max_diff(rank["plain"]["ema"], one.ema.state_dict()) < ATOL
    assert moved > 100 * ATOL  # the weights did move: the comparison is not trivially true
    # gradient accumulation on 2 ranks (2 micro-batches of 2 per rank) is the same step again
    assert _max_diff(two_ranks[0]["accum"]["model"], one.model.state_dict()) < ATOL


def test_gradient_accumulation_equals_the_big_batch(tmp_path):
    big = _one_process(tmp_path / "big")
    for accum in (2, 4):
        small = _one_process(tmp_path / f"accum{accum}", grad_accum=accum)
        assert _max_diff(small.model.state_dict(), big.model.state_dict()) < ATOL
    with pytest.raises(ValueError, match="grad_accum=3"):
        _one_process(tmp_path / "bad", grad_accum=3)


def test_rank_shards_cover_each_epoch_once(two_ranks):
    """Per epoch the two ranks' batches are disjoint and together hold n - n mod B distinct samples (the
    permutation's tail is dropped, a different tail each epoch); epochs are reshuffled."""
    batches = [r["plain"]["batches"] for r in two_ranks]
    n, b = 24, 8  # 30 samples, 20 % held out
    per_epoch = n // b
    for epoch in range(2):
        seen = [i for r in batches for step in r[epoch * per_epoch:(epoch + 1) * per_epoch] for i in step]
        assert len(seen) == len(set(seen)) == per_epoch * b
        assert all(0 <= i < n for i in seen)
    assert batches[0][:per_epoch] != batches[0][per_epoch:]
