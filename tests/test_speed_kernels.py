"""The hand-written backward passes added for speed (issue 20) equal autograd's through the plain formulas."""

from __future__ import annotations

import torch

from funcdiff.models.spectral import _ModeMix


def test_mode_mix_gradients_equal_autograds_of_the_broadcast_product():
    gen = torch.Generator().manual_seed(0)
    for batch in (1, 2, 3):
        x = torch.randn(batch, 5, 3, 4, generator=gen, dtype=torch.complex128, requires_grad=True)  # (B, m, C_in, k)
        w = torch.randn(3, 6, 5, 4, generator=gen, dtype=torch.complex128, requires_grad=True)  # (C_in, C_out, m, k)
        target = torch.randn(batch, 5, 6, 4, generator=gen, dtype=torch.complex128)

        def loss(out):  # a real loss of a complex output, not holomorphic: exercises the conjugate convention
            return (out * target.conj()).real.sum() + out.abs().square().sum()

        ours = torch.autograd.grad(loss(_ModeMix.apply(x, w)), (x, w))
        plain = torch.autograd.grad(loss(torch.einsum("bmik,iomk->bmok", x, w)), (x, w))
        for a, b in zip(ours, plain):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        (only_x,) = torch.autograd.grad(loss(_ModeMix.apply(x, w.detach())), (x,))  # guidance: no weight gradient
        torch.testing.assert_close(only_x, plain[0], rtol=1e-12, atol=1e-12)
