"""Spectral convolution on periodic grids of any size, odd or even.

:class:`PeriodicSpectralConv` is ``neuraloperator``'s ``SpectralConv`` (same parameters, same state-dict
keys, same mode layout) with its forward pass redone for one reason: in neuraloperator 2.0.0 the inverse
transform re-applies ``fftshift`` where ``ifftshift`` is needed, which is a no-op difference on even grids
but on an odd grid in any non-last dim shifts every output mode by one (the output is multiplied by
exp(-2 pi i x)), so a model silently computes a different operator at odd resolutions. Only the dense,
non-separable, real-valued, same-resolution configuration used by funcdiff is supported.
"""

from __future__ import annotations

import torch
from neuralop.layers.spectral_convolution import SpectralConv


class PeriodicSpectralConv(SpectralConv):
    """Fourier layer ``K u = IFFT(W_k FFT(u)_k)`` on modes below ``n_modes`` (Li et al., ICLR 2021, eq. (4)).

    Mode layout as in ``SpectralConv``: along each non-last dim the frequencies
    ``-(m // 2) .. m - m // 2 - 1``; along the last dim ``0 .. m // 2`` (real FFT). The grid must be
    strictly larger than ``n_modes`` along each dim (checked by the caller, :class:`NoiseConditionedFNO`).

    Shapes: x (B, C_in, *S) -> (B, C_out, *S), real; float16/bfloat16 inputs are transformed in float32
    and the output is cast back.
    """

    def __init__(self, in_channels: int, out_channels: int, n_modes: tuple[int, ...], bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, n_modes, bias=bias, factorization=None)

    def forward(self, x: torch.Tensor, output_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        if output_shape is not None and tuple(output_shape) != tuple(x.shape[2:]):
            raise ValueError("PeriodicSpectralConv keeps the input resolution; output_shape is not supported")
        in_dtype = x.dtype
        x = x.float() if in_dtype in (torch.float16, torch.bfloat16) else x  # FFTs in full precision under AMP
        dims = tuple(range(-self.order, 0))
        x_hat = _shift(torch.fft.rfftn(x, dim=dims, norm=self.fft_norm), dims[:-1], inverse=False)
        slices = (slice(None), slice(None), *self._mode_slices(tuple(x_hat.shape[2:])))
        weight = self.weight.to_tensor().to(x_hat.dtype)
        out_hat = torch.zeros(x.shape[0], self.out_channels, *x_hat.shape[2:], dtype=x_hat.dtype, device=x.device)
        out_hat[slices] = self._contract(x_hat[slices], weight, separable=self.separable)
        out_hat = _shift(out_hat, dims[:-1], inverse=True)
        out = torch.fft.irfftn(out_hat, s=tuple(x.shape[2:]), dim=dims, norm=self.fft_norm)
        out = out if self.bias is None else out + self.bias.to(out.dtype)
        return out.to(in_dtype)

    def _mode_slices(self, fft_size: tuple[int, ...]) -> list[slice]:
        """Index ranges of the kept modes in the (fft-shifted) spectrum: centred in non-last dims, from 0 in the last."""
        kept = list(self.weight.shape[2:])
        slices = [slice(n // 2 - m // 2, n // 2 - m // 2 + m) for n, m in zip(fft_size[:-1], kept[:-1])]
        return slices + [slice(0, kept[-1])]


def _shift(x_hat: torch.Tensor, dims: tuple[int, ...], inverse: bool) -> torch.Tensor:
    """Move the zero frequency to the centre (``fftshift``) or back (``ifftshift``) along ``dims``; none for 1-D."""
    if not dims:
        return x_hat
    return torch.fft.ifftshift(x_hat, dim=dims) if inverse else torch.fft.fftshift(x_hat, dim=dims)
