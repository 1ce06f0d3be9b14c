"""Moved: the super-resolution coder and its helpers (``SuperResolutionCoder``, ``approximation_shift``,
``coarse_roll``, ``interpolate``, ``levels_of_factor``, ``upsample_time_coordinate``) live in
:mod:`funcdiff.kinds.super_resolution`, the kind that owns them; importing them from here still works with a
DeprecationWarning naming the new path."""

from __future__ import annotations

from funcdiff.utils import moved_attribute

_MOVED = {name: "funcdiff.kinds.super_resolution"
          for name in ("SuperResolutionCoder", "approximation_shift", "coarse_roll", "interpolate", "levels_of_factor",
                       "upsample_time_coordinate")}


def __getattr__(name: str):
    return moved_attribute(__name__, name, _MOVED)


__all__: list[str] = []
