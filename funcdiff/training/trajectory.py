"""Moved: the whole-trajectory coder and noise (``TrajectoryCoder``, ``CoefficientNoise``, ``trajectory_noise``,
``noise_from_meta``) live in :mod:`funcdiff.kinds.trajectory`, the kind that owns them; importing them from here
still works with a DeprecationWarning naming the new path."""

from __future__ import annotations

import torch

from funcdiff.utils import moved_attribute

_MOVED = {name: "funcdiff.kinds.trajectory"
          for name in ("CoefficientNoise", "TrajectoryCoder", "noise_from_meta", "trajectory_noise")}


def __getattr__(name: str):
    return moved_attribute(__name__, name, _MOVED)


def count_parameters(module: torch.nn.Module) -> int:
    """Trainable parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["count_parameters"]
