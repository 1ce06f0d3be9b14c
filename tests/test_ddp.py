"""DistributedDataParallel through torchrun on CPU (gloo, 2 processes): ranks stay identical, rank 0 writes."""

import json
import os
import subprocess
import sys
import textwrap

import torch

SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from funcdiff.config import config_from_dict
    from funcdiff.training import train

    out = sys.argv[1]
    torch.set_num_threads(1)
    config = config_from_dict({
        "data": {"resolution": 12, "num_samples": 20, "test_fraction": 0.2},
        "model": {"n_modes": [4, 4], "hidden_channels": 8, "n_layers": 1, "emb_dim": 8, "norm_groups": 4},
        "train": {"steps": 4, "batch_size": 8, "warmup_steps": 1, "log_every": 2, "eval_every": 2,
                  "checkpoint_every": 2, "out_dir": out, "device": "cpu"},
    })
    trainer = train(config, progress=False)
    torch.save({"step": trainer.step, "world": trainer.dist.world_size, "local_batch": len(trainer.batch_indices(0)),
                "model": trainer.model.state_dict(), "ema": trainer.ema.state_dict()},
               f"{out}/rank{trainer.dist.rank}.pt")
""")


def test_torchrun_gloo_two_ranks(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(r["world"] == 2 and r["step"] == 4 and r["local_batch"] == 4 for r in ranks)
    for key in ("model", "ema"):
        for name, value in ranks[0][key].items():
            assert torch.equal(value, ranks[1][key][name]), (key, name)
    checkpoint = torch.load(tmp_path / "checkpoints" / "step_00000004.pt", weights_only=True)
    for name, value in checkpoint["model"].items():
        assert torch.equal(value, ranks[0]["model"][name])
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]["noise"]) == 2
    assert torch.equal(checkpoint["rng"]["noise"][0], checkpoint["rng"]["noise"][1])  # global-batch noise draws
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4]  # one writer: rank 0
