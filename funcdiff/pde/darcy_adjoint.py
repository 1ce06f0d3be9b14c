"""Differentiable Darcy solve: u = S(a) with the gradient by the discrete adjoint (one transposed sparse solve).

For the finite-volume system K(a) u = f of :func:`funcdiff.pde.elliptic.solve_darcy` (interior nodes, u = 0 on
the boundary), a loss L(u) has

    dL/da = -(∂(K(a) u)/∂a)ᵀ λ,     K(a)ᵀ λ = dL/du,

(the standard discrete adjoint, e.g. Plessix 2006, "A review of the adjoint-state method", eq. 13): one solve
with Kᵀ reusing the LU factors of the forward solve, then one vector–Jacobian product of the stencil
``darcy_operator(a, u)`` in a with u held fixed. Cost of a gradient: one triangular solve pair per sample.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse.linalg
import torch
from torch import Tensor

from funcdiff.pde.elliptic import _broadcast_source, _check_coefficient, _darcy_matrix, darcy_operator


class _DarcySolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, f: Tensor) -> Tensor:
        n = a.shape[-1]
        a64 = a.detach().to("cpu", torch.float64).numpy()
        rhs = f.detach().to("cpu", torch.float64).numpy()
        u = np.zeros_like(a64)
        factors = []
        for b in range(a64.shape[0]):
            lu = scipy.sparse.linalg.splu(_darcy_matrix(a64[b, 0]))
            u[b, 0, 1:-1, 1:-1] = lu.solve(rhs[b, 0, 1:-1, 1:-1].ravel()).reshape(n - 2, n - 2)
            factors.append(lu)
        out = torch.from_numpy(u).to(device=a.device, dtype=a.dtype)
        ctx.factors = factors
        ctx.save_for_backward(a, out)
        return out

    @staticmethod
    def backward(ctx, grad_u: Tensor):
        a, u = ctx.saved_tensors
        n = a.shape[-1]
        g = grad_u.detach().to("cpu", torch.float64).numpy()
        lam = np.zeros_like(g)
        for b, lu in enumerate(ctx.factors):
            lam[b, 0, 1:-1, 1:-1] = lu.solve(g[b, 0, 1:-1, 1:-1].ravel(), trans="T").reshape(n - 2, n - 2)
        lam_t = torch.from_numpy(lam).to(device=a.device, dtype=a.dtype)
        grad_a = grad_f = None
        if ctx.needs_input_grad[0]:
            with torch.enable_grad():
                a_in = a.detach().requires_grad_(True)
                stencil = darcy_operator(a_in, u.detach())
                grad_a, = torch.autograd.grad(stencil, a_in, -lam_t)
        if ctx.needs_input_grad[1]:
            grad_f = lam_t  # K u = f: dL/df = λ on the interior (zero on the boundary)
        return grad_a, grad_f


def solve_darcy_adjoint(a: Tensor, f: float | Tensor = 1.0) -> Tensor:
    """Solve ``-div(a grad u) = f``, u = 0 on the boundary, differentiably in ``a`` (and a tensor ``f``).

    Same discretisation and result as :func:`funcdiff.pde.elliptic.solve_darcy`; the backward pass is the
    discrete adjoint (module docstring). Shapes: a (B, 1, N, N) > 0; f a number or broadcastable;
    returns (B, 1, N, N) in a's dtype, zero on the boundary.
    """
    _check_coefficient(a)
    rhs = _broadcast_source(f, a)
    return _DarcySolve.apply(a, rhs)
