"""Small tensor helpers shared by every stage (no dependency on any other funcdiff module)."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Hashable, Iterator, Sequence

import torch


def append_dims(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dims to ``x`` until it has ``ndim`` dims.

    Shapes: ``sigma`` (B,) -> (B, 1, ..., 1) so that it broadcasts against a field (B, C, *S) for any number
    of spatial dims. A tensor that already has ``ndim`` dims is returned unchanged.
    """
    if x.ndim > ndim:
        raise ValueError(f"cannot append dims: tensor has {x.ndim} dims, more than the target {ndim}")
    return x.reshape(*x.shape, *([1] * (ndim - x.ndim)))


_REPEATED_VJPS: ContextVar[bool] = ContextVar("funcdiff_repeated_vjps", default=False)


@contextmanager
def repeated_vjps(active: bool = True) -> Iterator[None]:
    """Denoiser calls made inside prepare their graph for several vector-Jacobian products (MMPS: one per
    conjugate-gradient iteration; DPS with damped terms: one per group): the GELUs, whose backward pass evaluates erf
    and exp, keep their derivatives (``funcdiff.models.fno._GeluMLPRows`` on the row layout from its first backward
    pass, ``_KeptGelu`` channels first from the forward pass), so the later passes multiply by them. The gradients
    are the same bit for bit; the price is that memory while the graph lives, and a first pass that costs more.
    ``active=False`` leaves the setting as it was (a caller that makes one VJP only)."""
    token = _REPEATED_VJPS.set(True) if active else None
    try:
        yield
    finally:
        if token is not None:
            _REPEATED_VJPS.reset(token)


def expects_repeated_vjps() -> bool:
    """Whether the current call is inside :func:`repeated_vjps` (read by layers when they build their graph).

    Always False while ``torch.compile`` traces: dynamo cannot read a ContextVar (it broke the graph at every layer),
    and keeping derivatives is an eager-mode trade of memory for time that a compiled graph makes its own way."""
    if torch.compiler.is_compiling():
        return False
    return _REPEATED_VJPS.get()


def eager_autograd() -> bool:
    """Whether autograd records in eager mode, where layers take their custom autograd Functions (hand-written
    backward passes, faster than autograd through the same ops). False while ``torch.compile`` traces: the compiler
    derives the backward pass of plain ops itself (and fuses it), and dynamo fails on those Functions under dynamic
    shapes."""
    return torch.is_grad_enabled() and not torch.compiler.is_compiling()


def grid_constant(store: dict, key, make):
    """``make()``, a layer's constant tensors for one grid (DFT matrices, stencil spectra), cached in ``store`` under
    ``key``; while ``torch.compile`` traces, made in the traced graph with no lookup: a cache filled as a side effect
    breaks dynamo's tracing of autograd Functions, and looking a grid up in it fixes the graph to that grid."""
    if torch.compiler.is_compiling():
        return make()
    if key not in store:
        store[key] = make()
    return store[key]


def record_tensor_inputs(ctx, *inputs) -> None:
    """In the forward pass of a custom autograd Function, note which of its ``inputs`` (all of them, in order) are
    tensors, for :func:`input_grads_in_use`."""
    ctx.tensor_inputs = tuple(isinstance(t, torch.Tensor) for t in inputs)


def input_grads_in_use(ctx) -> tuple[bool, ...]:
    """In the backward pass of a custom autograd Function: ``ctx.needs_input_grad`` narrowed to the inputs whose
    gradient the running backward pass will use (inputs noted by :func:`record_tensor_inputs`).

    ``needs_input_grad`` says only which inputs require grad. Guidance takes ``torch.autograd.grad(loss, x)``, which
    needs no weight gradients even when the weights require grad (a model that is still being trained): torch's own
    operators skip those, and so do the layers that ask here. Asks the autograd engine whether it will run the node
    each input's gradient goes to (``torch._C._will_engine_execute_node``, as torch's multi-grad hooks do); where it
    cannot answer (a leaf that ``autograd.grad`` captures, a backward pass traced outside the engine) the gradient
    counts as used. With one input requiring grad there is nothing to narrow: the engine runs a node only for a
    gradient it needs, so the node's one gradient is used (a frozen spectral layer's VJP asks nothing of the engine)."""
    needs = ctx.needs_input_grad
    if sum(needs) <= 1:
        return needs
    try:
        nodes = [node for node, _ in ctx.next_functions]  # one per tensor input
    except AttributeError:
        return needs
    if len(nodes) != sum(ctx.tensor_inputs):
        return needs
    used, k = [], 0
    for need, is_tensor in zip(needs, ctx.tensor_inputs):
        node = nodes[k] if is_tensor else None
        k += is_tensor
        used.append(bool(need and node is not None and _engine_will_run(node)))
    return tuple(used)


def _engine_will_run(node) -> bool:
    try:
        return torch._C._will_engine_execute_node(node)
    except RuntimeError:  # a leaf captured by autograd.grad, or no backward pass of the engine running
        return True


def transform_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the spectral layers transform inputs of ``dtype`` in: float32 for float16/bfloat16 (bf16/fp16
    autocast), else ``dtype`` itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def rfftn(x: torch.Tensor, dim: Sequence[int], norm: str = "backward", keep: int | None = None,
          scale: float = 1.0) -> torch.Tensor:
    """``torch.fft.rfftn(x, dim=dim, norm=norm)`` (real input, the last of ``dim`` halved), optionally only its
    first ``keep`` orders along the last axis of x (which must then be the last of ``dim``) and times ``scale``,
    whose backward pass is one inverse real FFT (:class:`_RealFFT`). torch's own backward fills a full-length
    complex spectrum with zeros and runs a complex FFT over every axis of it. Shapes: x (..., n_1, .., n_d) real ->
    (..., n_1, .., n_d // 2 + 1), or (..., keep) along the last axis."""
    dim = tuple(int(d) % x.ndim for d in dim)
    if keep is not None and dim[-1] != x.ndim - 1:
        raise ValueError(f"keep truncates the last axis of x, which must be the last of dim, got dim={dim}")
    if eager_autograd() and x.requires_grad:
        return _RealFFT.apply(x, dim, norm, keep, float(scale))
    return _scaled_rfftn(x, dim, norm, keep, float(scale))


def _scaled_rfftn(x: torch.Tensor, dim: tuple[int, ...], norm: str, keep: int | None, scale: float) -> torch.Tensor:
    out = torch.fft.rfftn(x, dim=dim, norm=norm)
    if keep is not None:
        out = out[..., :keep]
    return out * scale if scale != 1.0 else out.contiguous()  # a truncation is copied, not returned as a view


_ADJOINT_NORM = {"backward": "forward", "forward": "backward", "ortho": "ortho"}


class _RealFFT(torch.autograd.Function):
    """:func:`rfftn` with the adjoint as backward pass. For a real loss and the conjugate-Wirtinger gradient g of the
    stored frequencies, ``∂L/∂x_n = c Re Σ_k g_k e^{+2πi k·n/N}``, c the forward pass's scale: an inverse real FFT
    (with the opposite normalisation, so that the scales match) of ``scale`` g zero-filled to the half spectrum, with
    the orders 0 < k < n_d/2 of the last axis halved, because the inverse real FFT counts them twice (their
    conjugate mirror images), and the orders 0 and n_d/2 once. Shapes as there."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: tuple[int, ...], norm: str, keep: int | None, scale: float) -> torch.Tensor:
        ctx.dim, ctx.norm, ctx.scale, ctx.sizes = dim, norm, scale, tuple(x.shape[d] for d in dim)
        return _scaled_rfftn(x, dim, norm, keep, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        last, n = ctx.dim[-1], ctx.sizes[-1]
        kept = grad.shape[last]
        spectrum = grad * (0.5 * ctx.scale)
        if kept < n // 2 + 1:  # truncated (``keep``, the last axis): zeros above
            spectrum = torch.nn.functional.pad(spectrum, (0, n // 2 + 1 - kept))
        spectrum.select(last, 0).mul_(2)
        if n % 2 == 0 and kept > n // 2:
            spectrum.select(last, n // 2).mul_(2)
        grad_x = torch.fft.irfftn(spectrum, s=ctx.sizes, dim=ctx.dim, norm=_ADJOINT_NORM[ctx.norm])
        return grad_x, None, None, None, None


def expand_sigma(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Return ``sigma`` as a tensor broadcastable to ``x`` (B, C, *S).

    Accepts a Python float, a 0-d tensor, a per-sample tensor (B,), or any tensor already broadcastable to
    ``x`` (per channel, per frame, per element). Raises ``ValueError`` for anything else.
    """
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.ndim == 1:
        if sigma.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"sigma of shape {tuple(sigma.shape)} does not match batch size {x.shape[0]}")
        return append_dims(sigma, x.ndim)
    try:
        torch.broadcast_shapes(sigma.shape, x.shape)
    except RuntimeError as err:
        raise ValueError(f"sigma of shape {tuple(sigma.shape)} is not broadcastable to x {tuple(x.shape)}") from err
    if sigma.ndim != x.ndim:
        raise ValueError(f"sigma with {sigma.ndim} dims must be (B,) or have as many dims as x ({x.ndim})")
    return sigma


def device_constant(cache: dict, key: Hashable, device: torch.device | str, make: Callable[[], torch.Tensor],
                    dtype: torch.dtype | None = None) -> torch.Tensor:
    """A constant tensor (a sensor stencil, observed values, a spectrum) on ``device`` (and in ``dtype``), made by
    ``make()`` and moved there on first use, then kept in ``cache`` under ``(key, device, dtype)``.

    Every later call on that device copies nothing from the host: a copy from pageable host memory stalls the host
    until a GPU has caught up, and cannot be recorded in a CUDA graph (:mod:`funcdiff.models.graphs`). Only for
    values that never change while ``cache`` lives (the cache belongs to the object that owns them)."""
    entry = (key, torch.device(device), dtype)
    out = cache.get(entry)
    if out is None:
        value = make()
        out = cache[entry] = value.to(device=device, dtype=value.dtype if dtype is None else dtype)
    return out


def to_device(t: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    """A host tensor (e.g. noise drawn by CPU generators) moved to ``device`` without making the host wait: on a GPU
    it is copied through pinned memory with ``non_blocking`` (torch's caching host allocator keeps the pinned block
    until the copy has run), where a copy from pageable memory would wait for all queued work. Values unchanged;
    ``None`` leaves ``t`` where it is; other devices get a plain copy."""
    if device is None:
        return t
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)  # elsewhere a plain copy: an asynchronous one could outlive its temporary source


class DeviceCount:
    """A running count of work done on a device (denoiser calls, VJPs, solver calls), kept as a tensor there.

    Work replayed from a CUDA graph runs no Python, so a Python counter would miss it; the count's ``add_`` is
    recorded in the graph with the work it counts. Adding waits for nothing; ``int(count)`` reads the total (one
    wait for the device, at the end of a run). Copies of an object that holds a count (``copy.copy``, e.g. an
    operator's view of a part of the batch) share it, so work done through a view is counted too."""

    def __init__(self) -> None:
        self._per_device: dict[torch.device, torch.Tensor] = {}

    def add(self, n: int, device: torch.device | str) -> None:
        """Count ``n`` more, done on ``device``."""
        device = torch.device(device)
        count = self._per_device.get(device)
        if count is None:
            count = self._per_device[device] = torch.zeros((), dtype=torch.int64, device=device)
        count.add_(n)

    def __int__(self) -> int:
        return sum(int(count) for count in self._per_device.values())

    def __repr__(self) -> str:
        return f"DeviceCount({int(self)})"


def fourier_resample(x: torch.Tensor, size: Sequence[int] | int, dims: int | None = None) -> torch.Tensor:
    """Resample periodic fields on a uniform grid of [0, 1)^d to a new grid by zero-padding/truncating Fourier modes.

    Exact for band-limited fields whose modes fit both grids. Modes |k| < min(n_in, n_out)/2 are kept and
    Nyquist modes dropped (not representable symmetrically), so up- then down-sampling is the identity.

    Args:
        size: the new size of each resampled axis (an int means the same for every axis).
        dims: how many trailing axes are spatial; default ``x.ndim - 2`` (a field (B, C, *S)). Use it for
            trajectories (B, C, T, *S) with ``dims=len(S)``, so time is left alone.
    Shapes: ``x`` (..., *S_in) -> (..., *S_out) over the last ``dims`` axes.
    """
    d = x.ndim - 2 if dims is None else int(dims)
    if not 1 <= d <= x.ndim:
        raise ValueError(f"cannot resample {d} trailing axes of a tensor with {x.ndim} dims")
    size = (size,) * d if isinstance(size, int) else tuple(size)
    if len(size) != d:
        raise ValueError(f"size {size} has {len(size)} entries but {d} axes are resampled")
    if min(size) < 1:
        raise ValueError(f"sizes must be positive, got {size}")
    dims_ = tuple(range(x.ndim - d, x.ndim))
    x_hat = torch.fft.fftn(x, dim=dims_, norm="forward")
    out = x_hat.new_zeros(*x.shape[: x.ndim - d], *size)
    slices_in, slices_out = [], []
    for n_in, n_out in zip(x.shape[x.ndim - d:], size):
        keep = (min(n_in, n_out) - 1) // 2  # strictly below Nyquist on both grids
        slices_in.append(torch.cat([torch.arange(0, keep + 1), torch.arange(n_in - keep, n_in)]))
        slices_out.append(torch.cat([torch.arange(0, keep + 1), torch.arange(n_out - keep, n_out)]))
    index_in = torch.meshgrid(*slices_in, indexing="ij")
    index_out = torch.meshgrid(*slices_out, indexing="ij")
    out[(..., *index_out)] = x_hat[(..., *index_in)]
    return torch.fft.ifftn(out, dim=dims_, norm="forward").real.to(x.dtype)


def grid_coordinates(shape: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Cell-corner coordinates of a uniform periodic grid on [0, 1)^d.

    Shapes: returns (d, *shape) with ``out[i]`` the i-th coordinate, ``x_j = j / n``.
    """
    axes = [torch.arange(n, device=device, dtype=dtype) / n for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


_MALLOC_TUNED: list[bool] = []


def keep_freed_memory(threshold_bytes: int = 1 << 30) -> bool:
    """Let glibc's malloc reuse freed blocks up to ``threshold_bytes`` instead of returning them to the OS.

    By default glibc serves every allocation of 32 MiB or more with a fresh ``mmap`` and unmaps it when freed,
    so each such tensor (a 32-channel 512² float32 field is exactly 32 MiB) pays a page fault per 4 KiB page
    on first touch: measured on a CPU core, an out-of-place add of two such fields took 5x the time of the
    same add into an existing tensor, the cliff in the denoiser's cost from 256² to 512² (issue 20). Raising
    M_MMAP_THRESHOLD and M_TRIM_THRESHOLD keeps those blocks in the heap for reuse, as the CUDA caching
    allocator does on a GPU; the price is that the process keeps up to its peak of freed memory.

    Applied once per process, on Linux with glibc only; skipped when ``FUNCDIFF_KEEP_FREED_MEMORY=0`` or when the
    user set ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` themselves. Returns whether it is in effect.
    """
    import os
    import sys

    if _MALLOC_TUNED:
        return _MALLOC_TUNED[0]
    done = False
    if (sys.platform.startswith("linux") and os.environ.get("FUNCDIFF_KEEP_FREED_MEMORY", "1") != "0"
            and not any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            m_trim_threshold, m_mmap_threshold = -1, -3
            done = bool(libc.mallopt(m_mmap_threshold, int(threshold_bytes))) and bool(
                libc.mallopt(m_trim_threshold, int(threshold_bytes)))
        except (OSError, AttributeError):
            done = False
    _MALLOC_TUNED.append(done)
    return done


def moved_attribute(old_module: str, name: str, new_paths: dict[str, str]):
    """The attribute ``name`` of ``old_module`` that moved to ``new_paths[name]`` (a module path), with a
    DeprecationWarning naming the new import; AttributeError for names that never lived there. For a module's
    ``__getattr__``."""
    import importlib
    import warnings

    if name not in new_paths:
        raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
    warnings.warn(f"{old_module}.{name} moved: import it from {new_paths[name]}", DeprecationWarning, stacklevel=3)
    return getattr(importlib.import_module(new_paths[name]), name)
