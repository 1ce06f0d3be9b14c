"""Denoisers: noise-conditioned neural-operator backbones and the EDM preconditioner.

- ``conditioning``: noise-level embedding, FiLM, pointwise linear maps, periodic grid features.
- ``fno``: :class:`NoiseConditionedFNO` (Fourier layers from neuraloperator, per-sample FiLM conditioning).
- ``local_fno``: :class:`NoiseConditionedLocalFNO` (spectral + local differential and integral kernels,
  Liu-Schiaffini et al. 2024).
- ``uno``: :class:`NoiseConditionedUNO` (U-shaped Fourier blocks on grids that are factors of the input grid,
  Rahman et al. 2023).
- ``precond``: :class:`EDMPrecond` (Karras et al. 2022, eq. (7), Table 1).
- ``registry``: :func:`build_backbone`, :func:`build_denoiser` (rebuild from a checkpoint's plain dict).
"""

from funcdiff.models.fno import FNOConfig, NoiseConditionedFNO
from funcdiff.models.local_fno import LocalFNOConfig, NoiseConditionedLocalFNO
from funcdiff.models.precond import EDMPrecond
from funcdiff.models.registry import BACKBONES, build_backbone, build_denoiser
from funcdiff.models.uno import NoiseConditionedUNO, UNOConfig

__all__ = ["BACKBONES", "EDMPrecond", "FNOConfig", "LocalFNOConfig", "NoiseConditionedFNO", "NoiseConditionedLocalFNO",
           "NoiseConditionedUNO", "UNOConfig", "build_backbone", "build_denoiser"]
