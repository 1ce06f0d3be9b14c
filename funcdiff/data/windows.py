"""Frames <-> channels: the one place where trajectories are cut into windows and folded for a backbone.

A trajectory batch is ``(B, C, T, *S)`` (DESIGN.md). Forecasters stack frames as channels, frames-major,
``(B, T·C, *S)`` with channel ``t·C + c`` = channel c of frame t, so that a window's history frames are its first
``h·C`` channels and the per-channel Gaussian random field, the EDM preconditioner and the guidance wrapper treat
each frame as C more channels, unchanged.
"""

from __future__ import annotations

import einops
import torch
from torch import Tensor


def fold_frames(x: Tensor) -> Tensor:
    """Stack frames as channels, frames-major. Shapes: (B, C, T, *S) -> (B, T·C, *S)."""
    return einops.rearrange(x, "b c t ... -> b (t c) ...")


def unfold_frames(x: Tensor, channels: int) -> Tensor:
    """Inverse of :func:`fold_frames`. Shapes: (B, T·C, *S) -> (B, C, T, *S)."""
    if x.shape[1] % channels:
        raise ValueError(f"{x.shape[1]} stacked channels are not a whole number of {channels}-channel frames")
    return einops.rearrange(x, "b (t c) ... -> b c t ...", c=channels)


def frame_channels(frames: slice | range | int, channels: int) -> slice:
    """The folded channels of ``frames`` (a frame index or a contiguous range/slice of frames with step 1)."""
    if isinstance(frames, int):
        return slice(frames * channels, (frames + 1) * channels)
    start = 0 if frames.start is None else frames.start
    return slice(start * channels, frames.stop * channels)


def trajectory_windows(traj: Tensor, length: int, stride: int = 1, frame_step: int = 1) -> Tensor:
    """Every window of ``length`` frames (spaced ``frame_step`` apart) of every trajectory, starting every
    ``stride`` frames. Shapes: (N, C, T, *S) -> (N·n_w, C, length, *S), n_w windows per trajectory (a copy)."""
    if traj.ndim < 4:
        raise ValueError(f"trajectories must be (N, C, T, *S), got shape {tuple(traj.shape)}")
    if length < 1 or stride < 1 or frame_step < 1:
        raise ValueError(f"need length, stride, frame_step >= 1, got {length}, {stride}, {frame_step}")
    span = (length - 1) * frame_step + 1
    if span > traj.shape[2]:
        raise ValueError(f"a window of {length} frames spaced {frame_step} apart needs {span} frames; the "
                         f"trajectories have {traj.shape[2]}")
    starts = torch.arange(0, traj.shape[2] - span + 1, stride)
    index = starts[:, None] + frame_step * torch.arange(length)[None, :]  # (n_w, length)
    windows = traj[:, :, index]  # (N, C, n_w, length, *S)
    return einops.rearrange(windows, "n c w l ... -> (n w) c l ...")
