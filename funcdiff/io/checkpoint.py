"""Training checkpoints: atomic ``torch.save`` of plain containers, read back with ``weights_only=True``.

A checkpoint file is a dict of tensors, numbers and strings (no pickled code)::

    format       "funcdiff-checkpoint-v1"
    version      funcdiff version that wrote it
    step         optimizer steps done
    model, ema   state dicts of the denoiser and of its EMA copy
    optimizer    AdamW state dict;  scheduler  plain-number LR schedule state;  ema_num_updates  int
    rng          {"noise": uint8 state of the sigma/noise generator, "cuda": [...] per-device states if used}
    meta         JSON text: resolved run config, model_config (for build_denoiser), noise GRF dict,
                 normaliser state, channel names, training resolution, task name

Files are written to a temporary file in the same folder and moved into place with ``os.replace``, so a
crash never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

import funcdiff
from funcdiff.data.normalization import Normalizer
from funcdiff.errors import UserError
from funcdiff.io.atomic import atomic_path
from funcdiff.noise import GaussianRandomField, noise_from_dict

FORMAT = "funcdiff-checkpoint-v1"
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d+)\.pt$")
REQUIRED_KEYS = ("format", "step", "model", "ema", "meta")


@dataclass
class CheckpointMeta:
    """What a sampler or a guidance task needs besides the weights.

    ``noise`` is the diffusion's GRF, ``normalizer`` maps normalised samples back to physical units,
    ``resolution`` is the training grid (spatial shape), ``task`` the run name. ``meta["key"]`` works too.
    """

    config: dict
    model_config: dict
    noise: GaussianRandomField
    normalizer: Normalizer | None
    channel_names: tuple[str, ...]
    resolution: tuple[int, ...]
    task: str | None = None
    step: int = 0
    version: str = ""
    path: str = ""
    extra: dict = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    @property
    def schedule(self) -> dict:
        """The sampler schedule recorded at training (``sigma_min``, ``sigma_max``, ``rho`` of the run config's
        ``sample`` section; :func:`funcdiff.schedules.recorded_schedule`): keyword arguments for
        :func:`funcdiff.sampling.sample` and :func:`funcdiff.guidance.guided_sample`."""
        from funcdiff.schedules import recorded_schedule

        return recorded_schedule(self.config)

    def to_json(self) -> str:
        """The JSON text stored in a checkpoint's ``meta`` entry."""
        return json.dumps({
            "config": self.config, "model_config": self.model_config, "noise": self.noise.as_dict(),
            "normalizer": self.normalizer.state_dict() if self.normalizer is not None else None,
            "channel_names": list(self.channel_names), "resolution": list(self.resolution),
            "task": self.task, "extra": self.extra,
        })

    @classmethod
    def from_json(cls, text: str, *, step: int = 0, version: str = "", path: str = "") -> "CheckpointMeta":
        raw = json.loads(text)
        norm = raw.get("normalizer")
        return cls(config=raw["config"], model_config=raw["model_config"], noise=noise_from_dict(raw["noise"]),
                   normalizer=Normalizer.from_state_dict(norm) if norm is not None else None,
                   channel_names=tuple(raw["channel_names"]), resolution=tuple(raw["resolution"]),
                   task=raw.get("task"), step=step, version=version, path=path, extra=raw.get("extra") or {})


def training_split(meta: CheckpointMeta) -> dict | None:
    """The train/validation split a checkpoint was trained with: ``{"held_out": [...], "count": N, "unit":
    "sample" | "trajectory", "path": data file}`` (``path`` only for file data), or None for checkpoints made
    before funcdiff recorded it."""
    split = meta.extra.get("split")
    return split if isinstance(split, dict) and "held_out" in split else None


def used_in_training(split: dict | None, path: str | os.PathLike, indices: Sequence[int]) -> list[int]:
    """Which of ``indices`` (samples or trajectories of the file ``path``) a model with the training ``split``
    (:func:`training_split`) was trained on: those not held out when ``path`` is its training data file (the
    same resolved path), else none."""
    if split is None or not split.get("path"):
        return []
    try:
        same = Path(path).resolve() == Path(split["path"])
    except OSError:
        return []
    held = set(int(i) for i in split["held_out"])
    return [int(i) for i in indices if same and 0 <= int(i) < int(split["count"]) and int(i) not in held]


def training_data_warning(split: dict | None, path: str | os.PathLike, indices: Sequence[int],
                          what: str = "trajectory") -> str | None:
    """One line warning that ``indices`` of ``path`` were training data of a model with the training ``split``
    (None when none was); names the held-out ones to use instead."""
    used = used_in_training(split, path, indices)
    if not used:
        return None
    plural = {"trajectory": "trajectories", "sample": "samples"}.get(what, what + "s")
    return (f"{what} {', '.join(map(str, used))} of {path} {'was' if len(used) == 1 else 'were'} in the model's "
            f"training split: scores on it overstate skill; held-out {plural}: {split['held_out']}")


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` (plain containers of tensors/numbers/strings) atomically; adds ``format``/``version``."""
    payload = {"format": FORMAT, "version": funcdiff.__version__, **state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict with ``torch.load(weights_only=True)``.

    Raises FileNotFoundError for a missing file and :class:`~funcdiff.errors.UserError` (a ValueError) for a
    truncated or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    bad = UserError(f"checkpoint {path} is truncated or not a funcdiff checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError) as err:
        raise bad from err
    if not isinstance(state, dict) or state.get("format") != FORMAT or any(k not in state for k in REQUIRED_KEYS):
        raise bad
    return state


def read_meta(state: dict, path: str | os.PathLike = "") -> CheckpointMeta:
    """The :class:`CheckpointMeta` of a loaded checkpoint dict."""
    return CheckpointMeta.from_json(state["meta"], step=int(state["step"]), version=str(state.get("version", "")),
                                    path=str(path))


def load_module_state(module: nn.Module, state: dict, what: str, path: str | os.PathLike = "") -> None:
    """``module.load_state_dict(state)`` with a UserError naming every missing, unexpected or mis-shaped key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"missing keys {_few(missing)}" if missing else "", f"unexpected keys {_few(unexpected)}" if unexpected
                 else "", f"shape mismatches {_few(shapes)}" if shapes else ""]
        raise UserError(f"{what} weights in checkpoint {path} do not match the model architecture of the config: "
                         + "; ".join(p for p in parts if p))
    module.load_state_dict(state)


def _few(items: list[str], n: int = 6) -> str:
    return str(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def load_denoiser(path: str | os.PathLike, ema: bool = True, device: str | torch.device = "cpu"
                  ) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the denoiser of a checkpoint (EMA weights by default) in eval mode, with its metadata.

    ``path`` may be a checkpoint file or a run directory (its latest checkpoint is used).
    """
    from funcdiff.models import build_denoiser

    path = resolve_checkpoint(path)
    state = read_checkpoint(path)
    meta = read_meta(state, path)
    denoiser = build_denoiser(meta.model_config)
    load_module_state(denoiser, state["ema" if ema else "model"], "EMA" if ema else "model", path)
    return denoiser.to(device).eval().requires_grad_(False), meta


def checkpoint_path(out_dir: str | os.PathLike, step: int) -> Path:
    """``<out_dir>/checkpoints/step_<step>.pt`` (zero-padded so names sort by step)."""
    return Path(out_dir) / CHECKPOINT_DIR / f"step_{int(step):08d}.pt"


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints of a run directory, oldest first."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint of a run directory, or None."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file as given, or the latest checkpoint of a run directory."""
    path = Path(path)
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoints under {path / CHECKPOINT_DIR}")
        return latest
    return path


def prune_checkpoints(out_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (``keep <= 0`` keeps all)."""
    if keep <= 0:
        return
    for old in list_checkpoints(out_dir)[:-keep]:
        old.unlink(missing_ok=True)
