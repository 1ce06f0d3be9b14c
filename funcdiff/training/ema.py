"""Exponential moving average (EMA) of model weights; the EMA copy is what samples by default."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay_at(num_updates: int, decay: float) -> float:
    """Effective decay after ``num_updates`` previous updates: ``min(decay, (1 + n) / (10 + n))``.

    The cap lets short runs forget the random initialisation quickly (as TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``); for long runs it is just ``decay``.
    """
    return min(float(decay), (1.0 + num_updates) / (10.0 + num_updates))


class EMA:
    """Holds ``ema_model``, a frozen copy of ``model`` updated as ``θ_ema ← β θ_ema + (1 − β) θ``.

    β = :func:`ema_decay_at` (num_updates, decay). Buffers (e.g. normalisation statistics) are copied.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.ema_model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        beta = ema_decay_at(self.num_updates, self.decay)
        for p_ema, p in zip(self.ema_model.parameters(), model.parameters()):
            p_ema.mul_(beta).add_(p.detach(), alpha=1.0 - beta)
        for b_ema, b in zip(self.ema_model.buffers(), model.buffers()):
            b_ema.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return self.ema_model.state_dict()
