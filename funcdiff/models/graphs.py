"""Denoiser calls replayed from CUDA graphs (``torch.cuda.CUDAGraph``).

On a GPU a denoiser call at small and medium grids is bound by the host, not the device: the FNO denoiser launches
more than a hundred kernels per call (``benchmarks/profile_call.py``), each a few microseconds of Python and
dispatch, while the device finishes them in under a millisecond up to 256². A CUDA graph records the call's kernels
once and replays them with one launch. Sampling calls the denoiser again and again at one shape, the case graphs are
made for, and so does a forecast's rollout (the same window and history shapes at every step). The wrapper records
what it wraps when it is called with gradients off: a plain denoiser, or a whole guided step (a
:class:`~funcdiff.guidance.GuidedDenoiser` turns gradients on inside, so its vector-Jacobian product is recorded
too; a guided step copies nothing from the host after its first call, ``tests/test_host_sync.py``; not yet run on a
GPU). Wrapped *inside* guidance, the network's calls run under autograd and stay eager. One graph per shape and
dtype of the inputs and autocast state; the inputs are copied into the graph's static buffers and the output is
copied out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from funcdiff.errors import UserError


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    x: torch.Tensor
    sigma: torch.Tensor
    cond: torch.Tensor | None
    out: torch.Tensor


class GraphedDenoiser:
    """``denoiser(x, sigma)`` or ``denoiser(x, sigma, cond=cond)`` replayed from CUDA graphs when gradients are off
    and x is on a CUDA device; otherwise (autograd on, a CPU tensor) the eager call. The same outputs as the eager
    denoiser (the same kernels run; ``tests/test_cuda.py``). Under autocast the capture disables autocast's
    weight-cast cache (a cached cast would be freed when the caller's autocast region ends and the graph would read
    freed memory), so the casts are part of the graph.

    Shapes: x (B, C, *S); sigma a float, (B,) or broadcastable to x; cond (B, C_cond, *S) clean conditioning (a
    forecaster's history) or None -> (B, C, *S). ``warmup`` eager calls on a side stream precede each capture
    (allocator, FFT plans and the layers' caches are made outside the graph). Each graph holds its own static
    buffers: new shapes cost a capture and memory, so sample with a fixed batch size."""

    def __init__(self, denoiser, warmup: int = 2) -> None:
        self.denoiser = denoiser
        self.warmup = warmup
        self._graphs: dict[tuple, _Captured] = {}

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: torch.Tensor | None = None) -> torch.Tensor:
        if torch.is_grad_enabled() or x.device.type != "cuda":
            return self.denoiser(x, sigma) if cond is None else self.denoiser(x, sigma, cond=cond)
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        autocast = (torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"))
        conditioning = None if cond is None else (tuple(cond.shape), cond.dtype, cond.device)
        key = (tuple(x.shape), x.dtype, x.device, tuple(sigma.shape), conditioning, autocast)
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._graphs[key] = self._capture(x, sigma, cond, *autocast)
        captured.x.copy_(x)
        captured.sigma.copy_(sigma)
        if cond is not None:
            captured.cond.copy_(cond)
        captured.graph.replay()
        return captured.out.clone()

    def _capture(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None, enabled: bool,
                 dtype: torch.dtype) -> _Captured:
        """Warm up and record one call on copies of x, sigma and cond, under the caller's autocast state."""
        static_x, static_sigma = x.clone(), sigma.clone()
        static_cond = None if cond is None else cond.clone()

        def call() -> torch.Tensor:
            if static_cond is None:
                return self.denoiser(static_x, static_sigma)
            return self.denoiser(static_x, static_sigma, cond=static_cond)

        def autocast():
            return torch.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=False)

        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side), autocast():
            for _ in range(self.warmup):
                call()
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph), autocast():
                out = call()
        except RuntimeError as err:  # an operation that cannot be captured (a host synchronisation, a host copy)
            cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"this model cannot be recorded in a CUDA graph ({cause}); run without "
                            "cuda_graphs=True") from err
        return _Captured(graph, static_x, static_sigma, static_cond, out)
