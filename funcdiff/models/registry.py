"""Backbone registry and ``build_denoiser``: rebuild a denoiser from the plain dict stored in checkpoints."""

from __future__ import annotations

import dataclasses

from torch import nn

from funcdiff.models.fno import FNOConfig, NoiseConditionedFNO
from funcdiff.models.local_fno import LocalFNOConfig, NoiseConditionedLocalFNO
from funcdiff.models.precond import EDMPrecond
from funcdiff.models.sfno import NoiseConditionedSFNO, SFNOConfig
from funcdiff.models.uno import NoiseConditionedUNO, UNOConfig

# model.backbone -> (config dataclass, module). fno: Li et al. 2021; local_fno: Liu-Schiaffini et al. 2024;
# uno: Rahman et al. 2023; sfno: Bonev et al. 2023 (the sphere's). docs/backbones.md says when to use which.
BACKBONES: dict[str, tuple[type, type[nn.Module]]] = {"fno": (FNOConfig, NoiseConditionedFNO),
                                                      "local_fno": (LocalFNOConfig, NoiseConditionedLocalFNO),
                                                      "uno": (UNOConfig, NoiseConditionedUNO),
                                                      "sfno": (SFNOConfig, NoiseConditionedSFNO)}
DENOISER_KEYS = ("backbone", "sigma_data")


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Build a registered backbone from its config fields, e.g. ``build_backbone("fno", in_channels=1, ...)``.

    Raises ValueError for an unknown name (listing the valid ones) or unknown keyword arguments.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {sorted(BACKBONES)}")
    config_cls, model_cls = BACKBONES[name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(f"unknown {name!r} backbone config keys {unknown}; valid keys: {sorted(fields)}")
    return model_cls(config_cls(**kwargs))


def build_denoiser(model_config: dict) -> EDMPrecond:
    """Build ``EDMPrecond(backbone)`` from a plain dict, the inverse of ``EDMPrecond.config``.

    Example: ``{"backbone": "fno", "in_channels": 2, "out_channels": 2, "n_modes": [12, 12], "sigma_data": 0.5}``.
    ``backbone`` defaults to "fno", ``sigma_data`` to 1.0 (a float or a per-channel list); all other keys
    are the backbone's config fields. Unknown keys raise ValueError listing them.
    """
    config = dict(model_config)
    name = config.pop("backbone", "fno")
    sigma_data = config.pop("sigma_data", 1.0)
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {sorted(BACKBONES)}")
    fields = {f.name for f in dataclasses.fields(BACKBONES[name][0])}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}; valid keys: {sorted(fields | set(DENOISER_KEYS))}")
    return EDMPrecond(build_backbone(name, **config), sigma_data=sigma_data)
