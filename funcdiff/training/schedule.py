"""Learning-rate schedule: linear warm-up then cosine decay (a plain-number state, checkpoint friendly)."""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    Linear warm-up ``base_lr·(step+1)/warmup_steps`` for ``step < warmup_steps``, then cosine decay
    ``min_lr + (base_lr − min_lr)·(1 + cos(π·p))/2`` with ``p = (step − warmup)/(total − warmup)`` clipped to
    [0, 1] and ``min_lr = min_lr_ratio·base_lr`` (Loshchilov & Hutter 2017, without restarts).
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(max((step - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0), 1.0)
    min_lr = min_lr_ratio * base_lr
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineSchedule:
    """Sets every param group's ``lr`` to :func:`warmup_cosine` of the current step.

    ``state_dict()`` holds plain numbers only (it is saved in checkpoints and restored on resume).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, warmup_steps: int, total_steps: int,
                 min_lr_ratio: float = 0.0) -> None:
        self.optimizer = optimizer
        self.base_lr, self.warmup_steps, self.total_steps = float(base_lr), int(warmup_steps), int(total_steps)
        self.min_lr_ratio = float(min_lr_ratio)
        self.step_count = 0
        self._apply()

    def lr(self) -> float:
        """The learning rate the next optimizer step uses."""
        return warmup_cosine(self.step_count, self.base_lr, self.warmup_steps, self.total_steps, self.min_lr_ratio)

    def step(self) -> None:
        """Advance one optimizer step and set the next step's learning rate."""
        self.step_count += 1
        self._apply()

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr()

    def state_dict(self) -> dict:
        return {"base_lr": self.base_lr, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "min_lr_ratio": self.min_lr_ratio, "step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()
