"""Denoisers: noise-conditioned neural-operator backbones and the EDM preconditioner.

- ``conditioning``: noise-level embedding, FiLM, pointwise linear maps, periodic grid features.
- ``fno``: :class:`NoiseConditionedFNO` (Fourier layers from neuraloperator, per-sample FiLM conditioning).
- ``precond``: :class:`EDMPrecond` (Karras et al. 2022, eq. (7), Table 1).
- ``registry``: :func:`build_backbone`, :func:`build_denoiser` (rebuild from a checkpoint's plain dict).
"""

from funcdiff.models.fno import FNOConfig, NoiseConditionedFNO
from funcdiff.models.precond import EDMPrecond
from funcdiff.models.registry import BACKBONES, build_backbone, build_denoiser

__all__ = ["BACKBONES", "EDMPrecond", "FNOConfig", "NoiseConditionedFNO", "build_backbone", "build_denoiser"]
