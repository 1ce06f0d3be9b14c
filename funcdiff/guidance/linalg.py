"""Linear algebra of the posterior methods, batched over samples and free of host synchronisation.

:func:`conjugate_gradient` solves one symmetric system per row with a **fixed** number of iterations (as
azula's ``linalg`` does): a row that has converged, or met non-positive curvature, keeps its iterate through
masked updates instead of a data-dependent ``break``, so a guided step never waits for the device to say
whether to go on (no ``.item()`` / ``bool(tensor)``), and its cost is known in advance.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

LinearMap = Callable[[Tensor], tuple[Tensor, Tensor]]


def rowdot(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise inner products. Shapes: (B, n), (B, n) -> (B,)."""
    return (a * b).sum(dim=1)


def conjugate_gradient(operator: LinearMap, b: Tensor, x0: Tensor, iters: int, *,
                       precond: Optional[Callable[[Tensor], Tensor]] = None, tol: float = 0.0
                       ) -> tuple[Tensor, Tensor]:
    """Preconditioned CG for A x = b, one system per row, exactly ``iters`` iterations from ``x0``.

    ``operator(v) -> (A v, s(v))`` where ``s`` is any map linear in v (e.g. the state-space product whose
    value at the solution the caller needs): it is accumulated along the iterations, so s(x) costs no extra
    application. A row stops updating (masked, not by a host-side test) once ‖b - A x‖ ≤ ``tol`` ‖b‖ or when
    its search direction has non-positive curvature (A need not be positive definite).

    Shapes: b, x0 (B, n); returns x (B, n) and s(x) (B, ...).
    """
    precond = precond or (lambda v: v)
    ax, side = operator(x0)
    x, res = x0, b - ax
    if iters == 0:
        return x, side
    b_norm = b.norm(dim=1).clamp(min=1e-300)
    z = precond(res)
    p, rz = z, rowdot(res, z)
    active = torch.ones(b.shape[0], dtype=torch.bool, device=b.device)
    for _ in range(iters):
        active = active & (res.norm(dim=1) > tol * b_norm)
        ap, side_p = operator(p)
        curv = rowdot(p, ap)
        active = active & (curv > 0)
        alpha = torch.where(active, rz / curv.clamp(min=1e-300), torch.zeros_like(rz))
        x = x + alpha[:, None] * p
        side = side + alpha.reshape(-1, *[1] * (side.ndim - 1)) * side_p
        res = res - alpha[:, None] * ap
        z = precond(res)
        rz_new = rowdot(res, z)
        beta = torch.where(active, rz_new / rz.abs().clamp(min=1e-300), torch.zeros_like(rz))
        p = z + beta[:, None] * p
        rz = rz_new
    return x, side
