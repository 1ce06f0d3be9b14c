"""The Slurm job scripts in examples/slurm, run by bash with stand-ins for srun/scontrol (and for funcdiff where the
job's logic, not the computation, is tested): the job's status is the merge's, a stop requeues, and the training
job's stop-and-resume path is quiet (no traceback) and says where it resumed."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "examples" / "slurm"

# srun: runs STUB_NTASKS copies of the command here (SLURM_PROCID/SLURM_LOCALID/SLURM_NTASKS set), forwards
# SIGUSR1/SIGTERM to them and exits with the highest status, as srun does.
SRUN = r"""#!/bin/bash
while [[ "${1:-}" == -* ]]; do shift; done
n=${STUB_NTASKS:-1}; pids=()
for ((i = 0; i < n; i++)); do
    SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NTASKS=$n "$@" & pids+=($!)
done
trap 'kill -USR1 "${pids[@]}" 2>/dev/null' USR1
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM
rc=0
for p in "${pids[@]}"; do
    while kill -0 "$p" 2>/dev/null; do wait "$p"; done
    wait "$p"; s=$?; [ "$s" -gt "$rc" ] && rc=$s
done
exit "$rc"
"""
SCONTROL = r"""#!/bin/bash
case "$1" in
    show) echo localhost ;;
    requeue) echo "requeue $2" >> "$STUB_LOG" ;;
esac
"""
# funcdiff: the job step (solve/forecast) exits with STUB_STEP_RC, the merge with STUB_MERGE_RC.
FUNCDIFF = r"""#!/bin/bash
echo "$1" >> "$STUB_LOG"
if [ "$1" = merge ]; then exit "${STUB_MERGE_RC:-0}"; fi
exit "${STUB_STEP_RC:-0}"
"""


def _stubs(tmp_path: Path, funcdiff: bool) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL), *((("funcdiff", FUNCDIFF),) if funcdiff else ())):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.log"
    log.touch()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PATH=f"{bin_dir}:{Path(sys.executable).parent}:{env.get('PATH', '')}", STUB_LOG=str(log),
               SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="localhost", OMP_NUM_THREADS="1")
    return env


def _calls(env: dict) -> list[str]:
    return Path(env["STUB_LOG"]).read_text().split()


@pytest.mark.parametrize("script", ["solve_cases.sbatch", "forecast_init_times.sbatch"])
def test_batch_job_status_is_the_merge_status(script, tmp_path):
    """Cases done, merge fails -> the job fails (it reported success before); merge succeeds -> 0; a stop (75)
    requeues and does not merge."""
    env = _stubs(tmp_path, funcdiff=True)
    kind = "solve" if script.startswith("solve") else "forecast"

    def run(**extra):
        Path(env["STUB_LOG"]).write_text("")
        return subprocess.run(["bash", str(SLURM / script)], env={**env, **extra}, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)

    failed = run(STUB_MERGE_RC="3")
    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert _calls(env) == [kind, "merge"]
    ok = run()
    assert ok.returncode == 0 and _calls(env) == [kind, "merge"], ok.stdout + ok.stderr
    stopped = run(STUB_STEP_RC="75")
    assert stopped.returncode == 75 and _calls(env) == [kind, "requeue", "4242"]
    broken = run(STUB_STEP_RC="1")
    assert broken.returncode == 1 and _calls(env) == [kind]


@pytest.mark.parametrize("script", ["solve_cases.sbatch", "forecast_init_times.sbatch", "train.sbatch"])
def test_scripts_need_no_log_folder_and_say_how_to_run_on_cpu(script):
    """Slurm opens --output before the script runs: a folder in it must exist, so the scripts name none; the
    header says how to submit to nodes without GPUs."""
    text = (SLURM / script).read_text()
    outputs = [line for line in text.splitlines() if line.startswith("#SBATCH --output=")]
    assert outputs == ["#SBATCH --output=%x-%j.out"]
    assert "mkdir -p logs" in text
    assert f"sed '/^#SBATCH --gpus/d' examples/slurm/{script} | DEVICE=cpu sbatch" in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_train_job_stops_quietly_requeues_and_resumes(tmp_path):
    """train.sbatch with 2 ranks (gloo on CPU): SIGUSR1 to the batch shell -> every rank stops at the same step,
    one checkpoint, status 75, `scontrol requeue`, no traceback; the requeued job resumes and says from where."""
    steps = 60
    out = tmp_path / "run"
    config = {
        "name": "slurm",
        "data": {"resolution": 12, "num_samples": 24, "test_fraction": 0.25},
        "model": {"n_modes": [4, 4], "hidden_channels": 8, "n_layers": 1, "emb_dim": 8, "norm_groups": 4},
        "train": {"steps": steps, "batch_size": 6, "warmup_steps": 2, "log_every": 1, "eval_every": 0,
                  "checkpoint_every": 0, "out_dir": str(out), "keep_checkpoints": 0},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = _stubs(tmp_path, funcdiff=False)
    env.update(STUB_NTASKS="2", CONFIG=str(tmp_path / "config.yaml"), DEVICE="cpu", MASTER_PORT=str(_free_port()),
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    job = subprocess.Popen(["bash", str(SLURM / "train.sbatch")], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    log = out / "log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)
    output = job.communicate(timeout=240)[0]
    assert job.returncode == 75, output[-3000:]
    assert "Traceback" not in output and "Error" not in output, output[-3000:]
    assert _calls(env) == ["requeue", "4242"]
    checkpoints = sorted((out / "checkpoints").glob("step_*.pt"))
    assert len(checkpoints) == 1, output[-3000:]
    stopped_at = int(checkpoints[0].stem.split("_")[1])
    assert 3 <= stopped_at < steps
    assert f"stopped by SIGUSR1 at step {stopped_at} of {steps}" in output

    env["MASTER_PORT"] = str(_free_port())
    rerun = subprocess.run(["bash", str(SLURM / "train.sbatch")], env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"resumed from step {stopped_at} of {steps} (epoch {stopped_at // 3 + 1}" in rerun.stdout
    assert f"trained 'slurm' to step {steps}" in rerun.stdout
