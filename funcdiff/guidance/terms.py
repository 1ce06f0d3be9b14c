"""The guidance-term contract of :class:`funcdiff.guidance.GuidedDenoiser`.

A term is a negative log-likelihood ``term(denoised, sigma) -> (B,)`` differentiable in ``denoised``. It may
carry per-sample data (then :meth:`GuidanceTerm.for_batch` gives the term of a batch chunk) and may be
*damped* (then it gets its own correction, shortened to the Kalman step length with :meth:`curvature`).
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor


class GuidanceTerm:
    """Base class of guidance terms: ``term(denoised, sigma) -> (B,)`` negative log-likelihood per sample.

    Subclasses override ``__call__``; those with per-sample data override :meth:`for_batch`; damped ones set
    ``damped = True`` and implement :meth:`curvature`. Shapes: denoised (B, C, *S), sigma (B,) or broadcastable.
    """

    damped: bool = False

    def __call__(self, denoised: Tensor, sigma: Tensor) -> Tensor:
        raise NotImplementedError

    def for_batch(self, part: slice) -> "GuidanceTerm":
        """This term restricted to the samples ``part`` of the batch (default: no per-sample data, itself)."""
        return self

    def curvature(self, denoised: Tensor, direction: Tensor, sigma: Tensor) -> Tensor:
        """δᵀHδ per sample (B,), H the term's Gauss–Newton Hessian in ``denoised`` (damped terms)."""
        raise NotImplementedError(f"{type(self).__name__} is not a damped term")


class CallableTerm(GuidanceTerm):
    """A plain callable ``fn(denoised, sigma) -> (B,)`` as an undamped term without per-sample data."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.fn = fn

    def __call__(self, denoised: Tensor, sigma: Tensor) -> Tensor:
        return self.fn(denoised, sigma)


def as_term(term) -> GuidanceTerm:
    """``term`` itself if it is a :class:`GuidanceTerm`, else a plain callable wrapped in :class:`CallableTerm`."""
    return term if isinstance(term, GuidanceTerm) else CallableTerm(term)


def gaussian_nll(white: Tensor, residual: Tensor) -> Tensor:
    """½ rᵀK⁻¹r per sample with the gradient -∂rᵀ K⁻¹ r of a K held constant, from a *detached* K⁻¹r.

    With K⁻¹r detached the gradient of rᵀ(K⁻¹r) is already the full one, so the value is halved by
    subtracting half of its detached copy: value ½ rᵀK⁻¹r, gradient of 1·rᵀK⁻¹r. Shapes: (B, ...) -> (B,).
    """
    quad = (white * residual).flatten(1).sum(dim=1)
    return quad - 0.5 * quad.detach()
