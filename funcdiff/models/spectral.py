"""Spectral convolution on periodic grids of any size, odd or even.

:class:`PeriodicSpectralConv` is ``neuraloperator``'s ``SpectralConv`` (same parameters, same state-dict
keys, same mode layout) with its forward pass redone for one reason: in neuraloperator 2.0.0 the inverse
transform re-applies ``fftshift`` where ``ifftshift`` is needed, which is a no-op difference on even grids
but on an odd grid in any non-last dim shifts every output mode by one (the output is multiplied by
exp(-2 pi i x)), so a model silently computes a different operator at odd resolutions. Only the dense,
non-separable, real-valued, same-resolution configuration used by funcdiff is supported.

The transforms are truncated DFTs rather than full FFTs (issue 20). Only ``m_1 x ... x (m_d // 2 + 1)`` modes
are kept, so the last axis is transformed by one real GEMM of the field viewed as a (B·C·n_1···n_(d-1), n_d)
matrix with an (n_d, 2 k) matrix of cosines and sines (k = m_d // 2 + 1 frequencies, a handful), and the
other axes by small complex matrix products on what is left; the inverse is the same in reverse, its last GEMM
accumulating into the block's pointwise skip in place. A full rfft2 + irfft2 of the hidden field costs
O(N log N) per point with the poor cache use of a strided 2-D FFT; the GEMM costs 4 k multiply-adds per point
at the machine's GEMM rate, needs no copies, no zero-filled spectrum and no ``fftshift``, and is 5-10x faster
on a CPU for the usual 12-32 modes. Same parameters and layout as neuraloperator's ``SpectralConv`` (checkpoints
load unchanged); same outputs to float32 round-off (tests/test_spectral_conv.py).
"""

from __future__ import annotations

import math
import warnings
import weakref
from abc import ABC, abstractmethod

import torch
from neuralop.layers.spectral_convolution import SpectralConv

from funcdiff.models.conditioning import PointwiseLinear
from funcdiff.utils import eager_autograd, grid_constant, input_grads_in_use, record_tensor_inputs, transform_dtype


class RowLayoutSpectral(ABC):
    """The contract of a block's global layer that works on the row layout (B, n_1, .., C, n_d) of :func:`to_rows`
    (:class:`PeriodicSpectralConv`, the SFNO's :class:`~funcdiff.models.spherical_conv.SphericalRowsConv`): a
    :class:`~funcdiff.models.fno.NoiseConditionedFNO` whose blocks all have one runs them on that layout."""

    @abstractmethod
    def forward_rows_with_skip(self, x: torch.Tensor, skip: PointwiseLinear) -> torch.Tensor:
        """``K x + skip(x)`` on the row layout (B, n_1, .., C_in, n_d) -> (B, n_1, .., C_out, n_d)."""


class PeriodicSpectralConv(SpectralConv, RowLayoutSpectral):
    """Fourier layer ``K u = IFFT(W_k FFT(u)_k)`` on modes below ``n_modes`` (Li et al., ICLR 2021, eq. (4)).

    Mode layout as in ``SpectralConv``: along each non-last dim the frequencies
    ``-(m // 2) .. m - m // 2 - 1``; along the last dim ``0 .. m // 2`` (real FFT). The grid must be
    strictly larger than ``n_modes`` along each dim (checked by the caller, :class:`NoiseConditionedFNO`).

    Shapes: x (B, C_in, *S) -> (B, C_out, *S), real; float16/bfloat16 inputs are transformed in float32
    and the output is cast back.
    """

    def __init__(self, in_channels: int, out_channels: int, n_modes: tuple[int, ...], bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, n_modes, bias=bias, factorization=None)

    def __getstate__(self) -> dict:
        """Pickling (``torch.save(model)``, ``copy.deepcopy``) leaves out the caches of DFT matrices and of the
        mode-major weight: they are remade on the next call."""
        return {k: v for k, v in super().__getstate__().items() if k not in _CACHES}

    def _apply(self, fn, recurse: bool = True):
        """``Module.to`` with the spectral weight kept complex: torch's ``to(torch.float64)`` or ``to(device,
        torch.bfloat16)`` casts complex parameters to the real dtype, dropping their imaginary parts (with a warning
        shown once per process), which makes a different operator. Here the weight becomes complex128 for float64 and
        stays complex64 for float32 and below (the layer transforms bf16/fp16 inputs in float32 anyway)."""
        return super()._apply(_complex_kept(fn), recurse)

    def forward(self, x: torch.Tensor, output_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        if output_shape is not None and tuple(output_shape) != tuple(x.shape[2:]):
            raise ValueError("PeriodicSpectralConv keeps the input resolution; output_shape is not supported")
        return from_rows(self.forward_rows(to_rows(x)))

    def forward_rows(self, x: torch.Tensor, accumulate: torch.Tensor | None = None) -> torch.Tensor:
        """The same map on the row layout (B, n_1, ..., n_(d-1), C, n_d) of :func:`to_rows`.

        With ``accumulate`` (B, n_1, ..., C_out, n_d), returns ``accumulate + K x``, computed in place in
        ``accumulate`` when it is contiguous and has the working dtype (float32 under autocast, else x's).
        """
        self._check_norm()
        in_dtype = x.dtype
        work = transform_dtype(in_dtype)
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(work).contiguous()
            forward_mats, inverse_mats = self._dft_matrices(_row_sizes(x), work, x.device)
            weight = self.weight.to_tensor()
            out_hat = self._mix_modes(_analysis(x, forward_mats), weight, torch.is_grad_enabled() and weight.requires_grad)
            pairs = _inverse_along_rows(out_hat, inverse_mats)
            n = x.shape[-1]
            in_place = not (torch.is_grad_enabled() and (accumulate is not None and accumulate.requires_grad
                                                         or pairs.requires_grad))  # CopySlices costs a copy
            if accumulate is not None and accumulate.dtype == work and accumulate.is_contiguous():
                acc = accumulate.view(-1, n)
                out = acc.addmm_(pairs, inverse_mats[-1]) if in_place else torch.addmm(acc, pairs, inverse_mats[-1])
            else:
                out = torch.mm(pairs, inverse_mats[-1])
                if accumulate is not None:
                    out = out + accumulate.reshape(out.shape).to(work)
            out = out.view(*x.shape[:-2], -1, n)
            out = out if self.bias is None else out + self.bias.to(out.dtype).reshape(-1, 1)
        return out.to(in_dtype)

    def forward_rows_with_skip(self, x: torch.Tensor, skip: PointwiseLinear) -> torch.Tensor:
        """``K x + skip(x)`` on the row layout (B, n_1, .., C, n_d) -> (B, n_1, .., C_out, n_d), ``skip`` a linear map
        over channels at every point (a Fourier block's local path, ``W x + b``).

        Under autograd in float32/64 without autocast it is one :class:`_SpectralSkipRows` (both linear maps and a
        hand-written backward pass of three GEMMs over the field, as many as the forward pass); otherwise the spectral
        layer accumulates into the skip's output (:meth:`forward_rows`)."""
        weight, linear = self.weight.to_tensor(), skip.linear
        differentiable = x.requires_grad or weight.requires_grad or linear.weight.requires_grad or (
            linear.bias is not None and linear.bias.requires_grad)
        if (eager_autograd() and differentiable and not torch.is_autocast_enabled(x.device.type)
                and self.bias is None and linear.bias is not None
                and x.dtype in (torch.float32, torch.float64) and x.dtype == linear.weight.dtype):
            self._check_norm()
            return _SpectralSkipRows.apply(x, weight, linear.weight, linear.bias, self)
        return self.forward_rows(x, accumulate=skip.forward_rows(x))

    def _check_norm(self) -> None:
        if self.fft_norm != "forward":
            raise ValueError(f"only fft_norm='forward' is supported, got {self.fft_norm!r}")

    def _mix_modes(self, x_hat: torch.Tensor, weight: torch.Tensor, trainable: bool) -> torch.Tensor:
        """``out[b, .., o, k] = sum_i x_hat[b, .., i, k] W[i, o, .., k]``: x_hat (B, m_1, .., C_in, k) complex,
        W = ``weight`` (C_in, C_out, m_1, .., k) -> (B, m_1, .., C_out, k).

        Frozen weights (sampling, guidance: not ``trainable``) use a mode-major copy (modes, C_in, C_out) of W,
        made once per weight version, and one complex ``bmm`` over the modes (about 3x faster than the broadcast
        product at batch 1-2, more above; issue 20). A trainable W changes every step and a mode-major copy of it
        costs more than the whole product at batch <= 2 (measured), so training uses :class:`_ModeMix` on W's own
        layout there and ``einsum`` above."""
        if not trainable:
            return _mix_mode_major(x_hat, self._mode_major_weight(weight, x_hat.dtype))
        weight = weight.to(x_hat.dtype)
        if x_hat.shape[0] <= 2:  # broadcast products in w's own layout: faster than einsum's complex bmm here
            # without autograd (inside :class:`_SpectralSkipRows`, which writes its own adjoint) the bare product
            product = _ModeMix.apply if eager_autograd() else _mode_mix_product
            return product(x_hat, weight.contiguous())
        return torch.einsum(self._mix_equation(), x_hat, weight)

    def _mix_equation(self) -> str:
        first = "pqrstuvwxyz"[: self.order - 1]
        return f"b{first}ik,io{first}k->b{first}ok"

    def _mode_major_weight(self, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """W (C_in, C_out, m_1, .., k) as a contiguous (m_1···k, C_in, C_out) tensor in ``dtype``, cached while W
        is the same tensor at the same version (an optimiser step, an EMA update, ``load_state_dict`` or a new
        parameter make a new copy; only writes through ``.data``, which autograd does not see either, would not).
        The copy holds as much memory as W."""
        def make() -> torch.Tensor:
            major = weight.detach().to(dtype).movedim(0, -1).movedim(0, -1)  # (m_1, .., k, C_in, C_out)
            return major.reshape(-1, *major.shape[-2:]).contiguous()

        if torch.compiler.is_compiling():  # made in the traced graph, no cache (see funcdiff.utils.grid_constant)
            return make()
        key = (weight._version, weight.data_ptr(), dtype, weight.device)
        cached = self.__dict__.get("_mode_major")
        if cached is None or cached[0]() is not weight or cached[1] != key:
            cached = (weakref.ref(weight), key, make())
            self.__dict__["_mode_major"] = cached
        return cached[2]

    def _dft_matrices(self, sizes: tuple[int, ...], dtype: torch.dtype, device: torch.device
                      ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The truncated DFT matrices of a grid (cached per grid, dtype and device; they hold no parameters).

        Forward ("forward" norm, 1/n per axis): for each non-last axis a complex (m, n) matrix
        exp(-2 pi i f x / n) / n with f = -(m // 2) .. m - m // 2 - 1 (the weight's centred mode order), and for
        the last axis a real (n, 2k) matrix [cos, -sin](2 pi f x / n) / n with f = 0 .. k - 1, interleaved per
        frequency. Inverse: complex (n, m) exp(+2 pi i f x / n) per non-last axis and a real (2k, n) matrix
        c_f [cos; -sin] with c_0 = 1, c_f = 2 otherwise (the Hermitian half of a real signal; f stays below
        n / 2 because the grid exceeds n_modes, so there is no Nyquist term).
        """
        return grid_constant(self.__dict__.setdefault("_dft_cache", {}), (sizes, dtype, str(device)),
                             lambda: self._make_dft_matrices(sizes, dtype, device))

    def _make_dft_matrices(self, sizes: tuple[int, ...], dtype: torch.dtype, device: torch.device
                           ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        complex_dtype = (torch.ones((), dtype=dtype) * 1j).dtype
        kept = list(self.weight.shape[2:])
        forward_mats, inverse_mats = [], []
        for n, m in zip(sizes[:-1], kept[:-1]):
            freqs = torch.arange(m, dtype=torch.float64) - m // 2
            theta = 2 * math.pi * torch.outer(freqs, torch.arange(n, dtype=torch.float64)) / n
            forward_mats.append((torch.exp(-1j * theta) / n).to(device, complex_dtype))
            inverse_mats.append(torch.exp(1j * theta).T.contiguous().to(device, complex_dtype))
        n, k = sizes[-1], kept[-1]
        if 2 * (k - 1) >= n:
            raise ValueError(f"grid size {n} is too small for {k} real-FFT modes along the last axis")
        theta = 2 * math.pi * torch.outer(torch.arange(n, dtype=torch.float64), torch.arange(k, dtype=torch.float64)) / n
        analysis = torch.stack([theta.cos(), -theta.sin()], dim=-1).reshape(n, 2 * k) / n
        forward_mats.append(analysis.to(device, dtype))
        weights = torch.full((k, 1), 2.0, dtype=torch.float64)
        weights[0] = 1.0
        inverse = torch.stack([weights * theta.T.cos(), -weights * theta.T.sin()], dim=1).reshape(2 * k, n)
        inverse_mats.append(inverse.to(device, dtype))
        return forward_mats, inverse_mats


_CACHES = ("_dft_cache", "_mode_major")  # per-module caches kept in __dict__, never pickled


def _complex_kept(fn):
    """A tensor conversion ``fn`` of :meth:`torch.nn.Module._apply` that moves complex tensors without making them
    real: where ``fn`` turns a complex tensor real (``to`` a real dtype), the tensor goes to ``fn``'s device as
    complex128 for float64 and complex64 for any lower precision; any other conversion is ``fn``'s."""
    def convert(t: torch.Tensor) -> torch.Tensor:
        if not t.is_complex():
            return fn(t)
        with warnings.catch_warnings():  # the probe's cast would warn about the imaginary part
            warnings.simplefilter("ignore")
            probe = fn(torch.zeros((), dtype=t.dtype, device=t.device))
        if probe.is_complex():
            return fn(t)
        return t.to(device=probe.device, dtype=torch.complex128 if probe.dtype == torch.float64 else torch.complex64)
    return convert


def _row_sizes(x: torch.Tensor) -> tuple[int, ...]:
    """The grid (n_1, .., n_d) of a field in the row layout (B, n_1, .., n_(d-1), C, n_d)."""
    return (*x.shape[1:-2], x.shape[-1])


def _analysis(x: torch.Tensor, forward_mats: list[torch.Tensor]) -> torch.Tensor:
    """The kept modes of x (B, n_1, .., C, n_d), contiguous: the last axis by one real GEMM, (.., n_d) @ (n_d, 2k) ->
    interleaved (re, im) of k frequencies, then the other axes by small complex products -> (B, m_1, .., C, k)."""
    x_hat = torch.mm(x.view(-1, x.shape[-1]), forward_mats[-1])
    x_hat = torch.view_as_complex(x_hat.view(*x.shape[:-1], -1, 2))
    for axis, mat in enumerate(forward_mats[:-1], start=1):
        x_hat = _along(mat, x_hat, axis)
    return x_hat


def _inverse_along_rows(out_hat: torch.Tensor, inverse_mats: list[torch.Tensor]) -> torch.Tensor:
    """Modes (B, m_1, .., C, k) -> the [re, im] pairs (B·n_1···n_(d-1)·C, 2k) that the last inverse GEMM,
    ``pairs @ inverse_mats[-1]``, turns into the field (the irfft of k frequencies)."""
    for axis, mat in enumerate(inverse_mats[:-1], start=1):
        out_hat = _along(mat, out_hat, axis)
    return torch.view_as_real(out_hat.contiguous()).view(-1, 2 * out_hat.shape[-1])


def _mix_mode_major(x_hat: torch.Tensor, major: torch.Tensor) -> torch.Tensor:
    """Mode mixing with a mode-major weight (M, C_in, C_out): x_hat (B, m_1, .., C_in, k) -> (B, m_1, .., C_out, k),
    one complex ``bmm`` over the M = m_1···k modes."""
    modes = x_hat.shape[1:-2] + x_hat.shape[-1:]
    x_m = x_hat.movedim(-2, -1).reshape(x_hat.shape[0], -1, x_hat.shape[-2]).transpose(0, 1)  # (M, B, C_in)
    out = torch.bmm(x_m, major)  # (M, B, C_out)
    return out.transpose(0, 1).reshape(x_hat.shape[0], *modes, -1).movedim(-1, -2)


def _adjoint_equation(equation: str, operand: int) -> str:
    """The einsum equation of the gradient for operand 0 or 1 of the two-operand product ``equation``: the output's
    gradient times the other operand (conjugated by the caller), summed to that operand's indices."""
    inputs, output = equation.split("->")
    first, second = inputs.split(",")
    return f"{output},{second}->{first}" if operand == 0 else f"{first},{output}->{second}"


def _tiles_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``weight @ tile + bias`` for every (C_in, n) tile of x (.., C_in, n) -> (.., C_out, n)."""
    x3 = x.reshape(-1, x.shape[-2], x.shape[-1])
    w = weight.expand(x3.shape[0], -1, -1)
    out = torch.bmm(w, x3) if bias is None else torch.baddbmm(bias[None, :, None], w, x3)
    return out.view(*x.shape[:-2], -1, x.shape[-1])


class _SpectralSkipRows(torch.autograd.Function):
    """``K x + W x + b`` on the row layout (a Fourier block's global and local linear maps, Li et al. 2021 eq. (2)),
    x (B, n_1, .., C_in, n_d) -> (B, n_1, .., C_out, n_d), with its adjoint written out.

    Autograd through the same ops makes the backward pass about twice the forward one at 128² (measured, issue 20):
    the gradients of the two paths are summed in a new field, the GEMMs on broadcast weights transposed copy their
    operands, and the forward pass cannot accumulate in place. Here the forward pass is the inference one (the
    spectral output added into the skip's GEMM output in place) and the gradient for x is the skip's transposed
    GEMM with the spectral adjoint accumulated into it: ``g @ G_dᵀ`` (the synthesis' last GEMM transposed), the
    small complex adjoints on the kept modes, and ``ĝ @ F_dᵀ`` added in place. Saves x (for W's gradient, only when
    W is trainable) and the kept modes of x (for the spectral weight's gradient, only when it is trainable).

    Inputs: x, the spectral weight (C_in, C_out, m_1, .., k) complex, W (C_out, C_in), b (C_out,), and the
    :class:`PeriodicSpectralConv` (for its cached DFT matrices and mode-major weight)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, skip_weight: torch.Tensor, skip_bias: torch.Tensor,
                conv: "PeriodicSpectralConv") -> torch.Tensor:
        given, x = x, x.contiguous()
        forward_mats, inverse_mats = conv._dft_matrices(_row_sizes(x), x.dtype, x.device)
        trainable = weight.requires_grad
        x_hat = _analysis(x, forward_mats)
        out = _tiles_linear(x, skip_weight, skip_bias)
        pairs = _inverse_along_rows(conv._mix_modes(x_hat, weight, trainable), inverse_mats)
        out.view(-1, x.shape[-1]).addmm_(pairs, inverse_mats[-1])
        ctx.conv, ctx.trainable = conv, trainable
        saved_modes = x_hat.clone() if trainable else None  # small; a view of an intermediate breaks torch.compile
        ctx.save_for_backward(given if skip_weight.requires_grad else None, saved_modes, weight, skip_weight)
        record_tensor_inputs(ctx, given, weight, skip_weight, skip_bias, conv)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, x_hat, weight, skip_weight = ctx.saved_tensors
        need_x, need_weight, need_skip_weight, need_skip_bias = input_grads_in_use(ctx)[:4]
        conv = ctx.conv
        g = grad.contiguous()
        n = g.shape[-1]
        forward_mats, inverse_mats = conv._dft_matrices(_row_sizes(g), g.dtype, g.device)
        # adjoint of the synthesis: the last GEMM transposed, then the conjugate transposes along the other axes
        g_hat = torch.mm(g.view(-1, n), inverse_mats[-1].t())
        g_hat = torch.view_as_complex(g_hat.view(*g.shape[:-1], -1, 2))
        for axis, mat in reversed(list(enumerate(inverse_mats[:-1], start=1))):
            g_hat = _along(mat.t().conj(), g_hat, axis)
        grad_x = grad_weight = grad_skip_weight = grad_skip_bias = None
        if need_weight:
            grad_weight = (_mode_mix_weight_grad(x_hat, g_hat, weight.shape) if g.shape[0] <= 2
                           else torch.einsum(_adjoint_equation(conv._mix_equation(), 1), x_hat.conj(), g_hat))
            grad_weight = grad_weight.to(weight.dtype)
        if need_x:
            if ctx.trainable:
                w = weight.to(g_hat.dtype)
                gx_hat = (_mode_mix_input_grad(g_hat, w) if g.shape[0] <= 2
                          else torch.einsum(_adjoint_equation(conv._mix_equation(), 0), g_hat, w.conj()))
            else:  # sum_o g conj(W) with the mode-major copy: conj(conj(g) @ Wᵀ) per mode
                gx_hat = _mix_mode_major(g_hat.conj(), conv._mode_major_weight(weight, g_hat.dtype).transpose(1, 2)).conj()
            for axis, mat in reversed(list(enumerate(forward_mats[:-1], start=1))):
                gx_hat = _along(mat.t().conj(), gx_hat.contiguous(), axis)
            grad_x = _tiles_linear(g, skip_weight.t(), None)
            pairs = torch.view_as_real(gx_hat.resolve_conj().contiguous()).view(-1, 2 * gx_hat.shape[-1])
            grad_x.view(-1, n).addmm_(pairs, forward_mats[-1].t())
        if need_skip_weight:
            g3, x3 = g.view(-1, g.shape[-2], n), x.reshape(-1, x.shape[-2], n)
            grad_skip_weight = torch.bmm(g3, x3.transpose(1, 2)).sum(0)
        if need_skip_bias:
            grad_skip_bias = g.sum(-1).reshape(-1, g.shape[-2]).sum(0)  # the contiguous axis first
        return grad_x, grad_weight, grad_skip_weight, grad_skip_bias, None


def to_rows(x: torch.Tensor) -> torch.Tensor:
    """(B, C, n_1, ..., n_d) -> the row layout (B, n_1, ..., n_(d-1), C, n_d), contiguous.

    In it every grid row along the last axis is a contiguous (C, n_d) tile: a pointwise linear map is one
    batched GEMM over the tiles (about 1.7x faster on a CPU core than one (C_out, C) @ (C, n_1···n_d) GEMM at
    512², measured), the last axis' DFT is one GEMM on the (B·n_1···C, n_d) view, and per-channel statistics
    are reductions over contiguous rows. No copies between the stages of a block."""
    return x.movedim(1, -2).contiguous()


def from_rows(x: torch.Tensor) -> torch.Tensor:
    """The row layout (B, n_1, ..., n_(d-1), C, n_d) -> (B, C, n_1, ..., n_d), contiguous."""
    return x.movedim(-2, 1).contiguous()


def _along(mat: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    """Apply the matrix ``mat`` (m, n) along ``axis`` of the contiguous ``x`` (size n there); no copies."""
    before, after = math.prod(x.shape[:axis]), math.prod(x.shape[axis + 1:])
    x3 = x.reshape(before, x.shape[axis], after)
    out = torch.mm(mat, x3[0]) if before == 1 else torch.matmul(mat, x3)
    return out.view(*x.shape[:axis], mat.shape[0], *x.shape[axis + 1:])


class _ModeMix(torch.autograd.Function):
    """``out[b, .., o, k] = sum_i x[b, .., i, k] w[i, o, .., k]`` for a trainable w in neuraloperator's own layout
    (C_in, C_out, m_1, .., k), contiguous: the modes are the innermost axes of w, so the forward product, both
    gradients and the sums are contiguous broadcasts and reductions over whole (modes) rows, and the weight gradient
    is made directly in w's layout. Reading w through a mode-major view instead (strided complex loads) and
    accumulating a gradient made in that view cost 3.5x more for a forward + backward at batch 1 (measured, issue
    20); copying w to mode-major for a ``bmm`` costs more than the whole product at batch <= 2.

    Shapes: x (B, m_1, .., C_in, k), w (C_in, C_out, m_1, .., k), complex -> (B, m_1, .., C_out, k). Gradients
    follow torch's convention for complex inputs: grad_x = sum_o g conj(w), grad_w = sum_b conj(x) g."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        record_tensor_inputs(ctx, x, w)
        return _mode_mix_product(x, w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, w = ctx.saved_tensors
        need_x, need_w = input_grads_in_use(ctx)
        grad_x = _mode_mix_input_grad(grad, w) if need_x else None
        grad_w = _mode_mix_weight_grad(x, grad, w.shape) if need_w else None
        return grad_x, grad_w


def _mode_mix_product(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``sum_i x[b, .., i, k] w[i, o, .., k]`` as broadcast products in w's own layout: x (B, m_1, .., C_in, k),
    w (C_in, C_out, m_1, .., k) contiguous -> (B, m_1, .., C_out, k)."""
    cin, cout = w.shape[:2]
    out = (_channels_first(x)[:, :, None] * w.reshape(cin, cout, -1)).sum(1)  # (B, C_out, modes)
    return _channels_back(out, x)


def _mode_mix_input_grad(grad: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The gradient for x of ``sum_i x[b, .., i, k] w[i, o, .., k]``: ``sum_o g conj(w)``, computed as
    ``conj(sum_o conj(g) w)`` (no conjugated copy of w). grad (B, m_1, .., C_out, k), w (C_in, C_out, m_1, .., k)
    -> (B, m_1, .., C_in, k)."""
    cin, cout = w.shape[:2]
    g = _channels_first(grad)[:, None]  # (B, 1, C_out, modes)
    return _channels_back((g.conj() * w.reshape(cin, cout, -1)).sum(2).conj(), grad)


def _mode_mix_weight_grad(x: torch.Tensor, grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The gradient for w of the same product: ``sum_b conj(x) g`` in w's layout ``shape`` (C_in, C_out, m_1, .., k),
    one product per sample accumulated in place (no (B, C_in, C_out, ..) temporary)."""
    xc = _channels_first(x).conj()[:, :, None]  # (B, C_in, 1, modes)
    g = _channels_first(grad)[:, None]  # (B, 1, C_out, modes)
    grad_w = xc[0] * g[0]
    for b in range(1, x.shape[0]):
        grad_w.addcmul_(xc[b], g[b])
    return grad_w.view(shape)


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    """(B, m_1, .., C, k) -> contiguous (B, C, m_1···k)."""
    return x.movedim(-2, 1).reshape(x.shape[0], x.shape[-2], -1)


def _channels_back(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, C', m_1···k) -> (B, m_1, .., C', k), the inverse of :func:`_channels_first` for ``like``'s modes."""
    return y.view(y.shape[0], y.shape[1], *like.shape[1:-2], like.shape[-1]).movedim(1, -2)
