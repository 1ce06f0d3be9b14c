"""Scheduler signals in training: SIGUSR1 -> checkpoint at the step in hand, exit status 75 (requeue), and
``--resume`` continues bit-exactly; SIGINT -> checkpoint, a resume hint, status 130, no traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import torch
import yaml

from funcdiff.cli import main
from funcdiff.config import load_config
from funcdiff.training import Trainer
from funcdiff.training.signals import INTERRUPT_EXIT, REQUEUE_EXIT

STEPS = 100


def _write_config(tmp_path, out):
    config = {
        "name": "signals",
        "data": {"resolution": 12, "num_samples": 24, "test_fraction": 0.25},
        "model": {"n_modes": [4, 4], "hidden_channels": 8, "n_layers": 1, "emb_dim": 8, "norm_groups": 4},
        "train": {"steps": STEPS, "batch_size": 6, "warmup_steps": 2, "log_every": 1, "eval_every": 0,
                  "checkpoint_every": 0, "out_dir": str(out), "device": "cpu", "keep_checkpoints": 0},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _train(config, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    return subprocess.Popen([sys.executable, "-m", "funcdiff", "train", "--config", str(config), "--no-progress",
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _signal_after_first_steps(proc, log, sig):
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.01)
    proc.send_signal(sig)
    return proc.communicate(timeout=120)


_REFERENCE: dict = {}


def _reference(config, tmp_path) -> dict:
    """Weights of an uninterrupted in-process run of the same config (computed once)."""
    if not _REFERENCE:
        trainer = Trainer.from_config(load_config(config), progress=False)
        trainer.out_dir = tmp_path / "reference"
        trainer.fit()
        _REFERENCE.update(trainer.model.state_dict())
    return _REFERENCE


def test_sigusr1_checkpoints_exits_75_and_resume_is_bit_exact(tmp_path, capsys):
    """SIGUSR1 to a training process (Slurm's time-limit warning): checkpoint at the step in hand, exit status
    75, a resume hint on stderr; ``--resume`` ends with the weights of an uninterrupted run, bit for bit."""
    out = tmp_path / "run"
    config = _write_config(tmp_path, out)
    proc = _train(config)
    stdout, stderr = _signal_after_first_steps(proc, out / "log.jsonl", signal.SIGUSR1)
    assert proc.returncode == REQUEUE_EXIT, stderr[-2000:]
    _check_stop_and_resume(config, out, tmp_path, "SIGUSR1", stderr, capsys)


def test_ctrl_c_checkpoints_prints_the_resume_command_without_traceback(tmp_path, capsys):
    """SIGINT (Ctrl-C) during an interactive run: same checkpoint, status 130, one message, no traceback."""
    out = tmp_path / "run"
    config = _write_config(tmp_path, out)
    log = out / "log.jsonl"

    def interrupt():
        deadline = time.time() + 120
        while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    status = main(["train", "--config", str(config), "--no-progress"])
    assert status == INTERRUPT_EXIT
    _check_stop_and_resume(config, out, tmp_path, "SIGINT", capsys.readouterr().err, capsys)


def _check_stop_and_resume(config, out, tmp_path, name, stderr, capsys):
    checkpoints = sorted((out / "checkpoints").glob("step_*.pt"))
    assert len(checkpoints) == 1, stderr
    stopped_at = int(checkpoints[0].stem.split("_")[1])
    assert 3 <= stopped_at < STEPS
    assert f"stopped by {name} at step {stopped_at}" in stderr
    assert f"Resume with: funcdiff train --config {config} --resume" in stderr
    assert "Traceback" not in stderr
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--no-progress", "--resume"]) == 0
    # one line says where the run continues: 18 training samples in batches of 6 are 3 steps per epoch
    assert (f"resumed from step {stopped_at} of {STEPS} (epoch {stopped_at // 3 + 1}, {stopped_at % 3} of its 3 "
            f"batches done): {checkpoints[0]}") in capsys.readouterr().out.splitlines()
    final = torch.load(out / "checkpoints" / f"step_{STEPS:08d}.pt", weights_only=True)
    for key, value in _reference(config, tmp_path).items():
        assert torch.equal(final["model"][key], value), key
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))  # no step lost or logged twice
