"""Shared helpers for benchmark scripts: argument parsing, timing, table printing, JSON output."""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from funcdiff.io.atomic import write_text_atomic


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes for a CPU run of a minute or two")
    p.add_argument("--out", type=Path, default=None, help="JSON file for the result rows")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    return p


def train_in_memory(config, fields: torch.Tensor):
    """Train ``config`` on in-memory ``fields`` (N, C, *S) with the package's Trainer and save the final checkpoint.

    Returns ``(trainer, checkpoint_path, seconds)``; ``seconds`` is the wall time of training and saving."""
    from funcdiff.training import Trainer

    start = time.perf_counter()
    trainer = Trainer.from_config(config, fields=fields, progress=False)
    trainer.fit()
    path = trainer.save_checkpoint()
    return trainer, path, time.perf_counter() - start


def train_for_budget(config, budget_s: float, fields: torch.Tensor | None = None) -> tuple[object, dict]:
    """Train ``config`` for about ``budget_s`` seconds of process CPU time (``time.process_time``: equal training
    compute for models compared side by side on a shared machine, where wall-clock depends on the other jobs).

    A throwaway trainer measures the CPU seconds per step (mean of steps 2-4); the real one runs
    ``budget_s / that`` steps (at least 10) with its LR schedule over them, then saves its checkpoint.
    Returns ``(trainer, {"steps", "train_cpu_s", "cpu_s_per_step"})``."""
    from funcdiff.training import Trainer

    probe = Trainer.from_config(config.replace(["train.steps=100000"]), fields=fields, progress=False)
    probe.train_step()
    start = time.process_time()
    for _ in range(3):
        probe.train_step()
    per_step = (time.process_time() - start) / 3
    del probe
    steps = max(10, int(budget_s / per_step))
    trainer = Trainer.from_config(config.replace([f"train.steps={steps}", f"train.checkpoint_every={steps}"]),
                                  fields=fields, progress=False)
    start = time.process_time()
    trainer.fit()
    trainer.save_checkpoint()
    return trainer, {"steps": steps, "train_cpu_s": round(time.process_time() - start, 1),
                     "cpu_s_per_step": per_step}


def sync(device: str) -> None:
    """Wait for queued CUDA work (nothing on the CPU)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str = "cpu") -> float:
    """Wall time of one call of ``fn``, CUDA work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def best_time(fn: Callable[[], object], repeats: int = 3, device: str = "cpu") -> float:
    """Best wall time of ``repeats`` calls after one warm-up call (synchronising CUDA)."""
    fn()
    return min(timed(fn, device) for _ in range(repeats))


def machine() -> str:
    """The device the numbers were measured on: the GPU's name, or the CPU's model, the vector instructions torch's
    kernels use there (``AVX2``, ``AVX512``: bf16 runs natively only on the latter's bf16 extension) and the threads.
    Machines differ from session to session, so a result file says which it came from."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model} ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads"


def print_table(rows: Sequence[dict], columns: Sequence[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def write_json(rows: Sequence[dict], path: Path | None, meta: dict) -> None:
    if path is None:
        return
    command = "python " + shlex.join(sys.argv)  # shown on the generated docs page of the file
    write_text_atomic(path, json.dumps({"meta": {"machine": machine(), "torch": torch.__version__, "command": command,
                                                 **meta},
                                        "rows": list(rows)}, indent=1))
    print(f"wrote {path}")
