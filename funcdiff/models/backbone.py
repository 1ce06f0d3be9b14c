"""The contract every backbone of the registry (:mod:`funcdiff.models.registry`) keeps with the preconditioner."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn


class Backbone(nn.Module):
    """A noise-conditioned backbone: ``forward(x, c_noise, cond=None)`` maps (B, C_in, *S) at EDM's c_noise to
    (B, C_out, *S). ``name`` is its ``model.backbone`` value and ``config`` a dataclass with ``to_dict()`` from
    which :func:`funcdiff.models.build_backbone` rebuilds it; :class:`~funcdiff.models.EDMPrecond` records both in
    checkpoints. Any other ``nn.Module`` may be preconditioned too (tests do), it is then recorded by class name."""

    name: ClassVar[str]
    config: Any
