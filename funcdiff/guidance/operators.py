"""Observation operators in sensor space, shared by the posterior samplers (MMPS, EnKG, physics in the loop).

An operator is the forward model of y = G(x_0) + η, η ~ N(0, diag(s²)), flattened over observed channels and
sensors: ``predict(x) -> (B, n)`` maps a model state (B, C, *S) to predicted observations (differentiable where
the map is), ``values`` (B_obs, n) holds y (B_obs = 1 broadcasts), ``noise_var`` (n,) the measurement
variances, and ``constants_on(device)`` both on a device, moved there once (a sampler step then copies nothing from
the host). Two kinds:

* :class:`SparseOperator` — y = A decode(x): point sensors (:class:`SparseObservation`, one or several) of an
  affine ``decode`` of the state. Linear: :meth:`SparseOperator.linear` applies the linear part A·g, and
  :meth:`SparseOperator.model_inverse` applies the inverse of the σ-aware covariance model of
  :class:`~funcdiff.guidance.likelihood.ObservationGuidance` (used as the CG preconditioner of MMPS).
* :class:`SolverOperator` — y = A S(decode(x)_input): physics in the loop. The state's *input* channel
  (coefficient, source, initial vorticity) goes through a numerical solver S and the sensors read its output;
  the prior needs no output channel. Nonlinear in general; differentiable when S is (Darcy: the adjoint of
  :func:`funcdiff.pde.darcy_adjoint.solve_darcy_adjoint`; Poisson/Helmholtz: DST; Navier–Stokes: autograd).
  Counts the solver calls it makes (``solver_calls``).
"""

from __future__ import annotations

import copy
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from funcdiff.guidance.likelihood import Decode, ObservationGuidance
from funcdiff.guidance.terms import GuidanceTerm, gaussian_nll
from funcdiff.guidance.observations import SparseObservation
from funcdiff.noise import GaussianRandomField
from funcdiff.utils import DeviceCount, device_constant

Solver = Callable[[Tensor], Tensor]


def _as_list(observation: SparseObservation | Sequence[SparseObservation]) -> list[SparseObservation]:
    obs = [observation] if isinstance(observation, SparseObservation) else list(observation)
    if not obs:
        raise ValueError("need at least one observation")
    for o in obs:
        if o.values is None:
            raise ValueError("an observation operator needs observations with values")
    return obs


class _DeviceConstants:
    """``constants_on(device)`` for an operator with ``values`` and ``noise_var``; ``_batch_view`` makes a view of the
    operator for a part of the batch with its own device copies (its values differ)."""

    def constants_on(self, device: torch.device | str) -> tuple[Tensor, Tensor]:
        """(values (B_obs, n), noise_var (n,)), float64 on ``device``, moved there once."""
        cache = self.__dict__.setdefault("_on_device", {})
        return (device_constant(cache, "values", device, lambda: self.values),
                device_constant(cache, "noise_var", device, lambda: self.noise_var))

    def _batch_view(self):
        view = copy.copy(self)
        view._on_device = {}
        return view


def plug_in_variance(r: Tensor, noise_var: Tensor) -> Tensor:
    """‖r‖²/n + s² per sample: the residual-normalised covariance of DPS (Chung et al. 2023, Alg. 1) read as a
    plug-in residual variance, for operators without a closed-form covariance model.
    Shapes: r (B, n), noise_var (n,) -> (B, n), r's dtype."""
    return (r.detach().pow(2).mean(dim=1, keepdim=True) + noise_var).clamp(min=1e-30)


class SparseOperator(_DeviceConstants):
    """y = A decode(x): sparse sensors of one or several observations, stacked (B, n) with n = Σ C_obs·N.

    Args:
        observation: one :class:`SparseObservation` or a list (values (B_obs, C_obs, N), B_obs = 1 or B).
        noise: the diffusion noise (the covariance model of the preconditioner).
        decode: affine map from model state to observation units (e.g. ``Normalizer.decode``); None = identity.
        sigma_data: data std of the model state (float or per channel), for the preconditioner's model.
    """

    is_linear = True

    def __init__(self, observation: SparseObservation | Sequence[SparseObservation], noise: GaussianRandomField, *,
                 decode: Optional[Decode] = None, sigma_data: float | Sequence[float] = 1.0) -> None:
        self.observations = _as_list(observation)
        self.noise, self.decode, self.sigma_data = noise, decode, sigma_data
        self.terms = [ObservationGuidance(o, noise, sigma_data=sigma_data, decode=decode) for o in self.observations]
        self.sizes = [o.num_channels * o.num_sensors for o in self.observations]
        self.solver_calls = 0
        self._parts: dict[tuple[int, int, int], SparseOperator] = {}  # for_batch's views

    @property
    def values(self) -> Tensor:
        """y stacked over observations. Shapes: (B_obs, n), float64."""
        batch = max(o.values.shape[0] for o in self.observations)
        return torch.cat([o.values.double().expand(batch, -1, -1).flatten(1) for o in self.observations], dim=1)

    @property
    def noise_var(self) -> Tensor:
        """Measurement variances s². Shapes: (n,), float64."""
        return torch.cat([o.noise_std_per_channel().repeat_interleave(o.num_sensors) ** 2 for o in self.observations])

    def for_batch(self, part: slice) -> "SparseOperator":
        """This operator with per-sample values restricted to the samples ``part`` (shared values kept); a part's
        view is made once and kept (as :meth:`ObservationGuidance.for_batch`)."""
        if all(o.values.shape[0] == 1 for o in self.observations):
            return self
        key = part.indices(max(o.values.shape[0] for o in self.observations))
        view = self._parts.get(key)
        if view is None:
            view = self._parts[key] = self._batch_view()
            view.observations = [o if o.values.shape[0] == 1 else o.with_values(o.values[part])
                                 for o in self.observations]
            view.terms = [t.for_batch(part) for t in self.terms]
        return view

    def predict(self, x: Tensor) -> Tensor:
        """A decode(x), differentiable. Shapes: (B, C, *S) -> (B, n), x's dtype."""
        field = self.decode(x) if self.decode is not None else x
        return torch.cat([o.observe(field).flatten(1) for o in self.observations], dim=1)

    def linear(self, z: Tensor) -> Tensor:
        """The linear part A·(decode(z) - decode(0)) of :meth:`predict`. Shapes: (B, C, *S) -> (B, n)."""
        if self.decode is None:
            return self.predict(z)
        return self.predict(z) - self.predict(torch.zeros_like(z[:1]))

    def model_inverse(self, r: Tensor, sigma: Tensor, like: Tensor) -> Tensor:
        """K_model(σ)⁻¹ r with the covariance model of :class:`ObservationGuidance` (exact when the data
        covariance is ∝ C), block by block. Shapes: r (B, n), sigma (B,), like (B, C, *S) -> (B, n), float64."""
        out, start = [], 0
        for obs, term, size in zip(self.observations, self.terms, self.sizes):
            block = r[:, start:start + size].reshape(r.shape[0], obs.num_channels, obs.num_sensors)
            out.append(term.whiten(block, sigma, like).flatten(1))
            start += size
        return torch.cat(out, dim=1)

    def residual(self, x: Tensor) -> Tensor:
        """y - A decode(x) (float64). Shapes: (B, C, *S) -> (B, n)."""
        return self.constants_on(x.device)[0] - self.predict(x).double()

    def tangent(self, at: Tensor) -> Callable[[Tensor], Tensor]:
        """The linearisation z ↦ ∂G(at)·z of the forward model: for y = A decode(x), :meth:`linear` wherever."""
        return self.linear

    def preconditioner(self, r: Tensor, sigma: Tensor, like: Tensor) -> Callable[[Tensor], Tensor]:
        """v ↦ K_model(σ)⁻¹ v, the covariance model of :meth:`model_inverse` (MMPS's CG preconditioner and
        trust-region metric). Shapes: v (B, n) -> (B, n), float64."""
        return lambda v: self.model_inverse(v, sigma, like)


class SolverOperator(_DeviceConstants):
    """y = A S(decode(x)[:, input]): sensors on the output of a numerical solver run on the state's input channel.

    Args:
        observation: sensors of the *solver output* (``channels`` index the solver output's channels, i.e. 0),
            values (B_obs, 1, N) in physical units.
        solver: S, physical input (B, 1, *S) -> physical output (B, 1, *S); differentiable for gradient methods.
        input_channel: index of the input channel in the model state.
        decode: map from model state to physical units (None = identity).
    Every :meth:`predict` call runs S once per sample and adds B to ``solver_calls``.
    """

    is_linear = False
    sigma_data = 1.0  # no covariance model of the state behind a solver: unit data std (MMPS's trust region)

    def __init__(self, observation: SparseObservation, solver: Solver, input_channel: int, *,
                 decode: Optional[Decode] = None) -> None:
        self.observations = _as_list(observation)
        if len(self.observations) != 1:
            raise ValueError("a solver operator takes one observation of the solver's output")
        self.solver, self.input_channel, self.decode = solver, int(input_channel), decode
        self._solver_calls = DeviceCount()  # shared with the views of for_batch

    @property
    def solver_calls(self) -> int:
        """Solver runs so far, per sample, through this operator and its views of parts of the batch."""
        return int(self._solver_calls)

    @property
    def observation(self) -> SparseObservation:
        return self.observations[0]

    @property
    def values(self) -> Tensor:
        return self.observation.values.double().flatten(1)

    @property
    def noise_var(self) -> Tensor:
        o = self.observation
        return o.noise_std_per_channel().repeat_interleave(o.num_sensors) ** 2

    def for_batch(self, part: slice) -> "SolverOperator":
        if self.observation.values.shape[0] == 1:
            return self
        view = self._batch_view()
        view.observations = [self.observation.with_values(self.observation.values[part])]
        return view

    def solve(self, x: Tensor) -> Tensor:
        """S applied to the decoded input channel. Shapes: (B, C, *S) -> (B, 1, *S) physical units."""
        field = self.decode(x) if self.decode is not None else x
        self._solver_calls.add(x.shape[0], x.device)
        return self.solver(field[:, self.input_channel:self.input_channel + 1])

    def predict(self, x: Tensor) -> Tensor:
        """A S(decode(x)_input). Shapes: (B, C, *S) -> (B, n)."""
        return self.observation.observe(self.solve(x)).flatten(1)

    def residual(self, x: Tensor) -> Tensor:
        return self.values.to(x.device) - self.predict(x).double()

    def tangent(self, at: Tensor, rel_step: float = 1e-3) -> Callable[[Tensor], Tensor]:
        """The tangent-linear model z ↦ ∂G(at)·z = A ∂S(decode(at)) decode'(z) by a central difference (two
        solves per product; exact up to rounding for a linear solver: Poisson, Helmholtz). The step is
        ``rel_step`` × (‖at‖ + 1) / ‖z‖ per sample. Shapes: at, z (B, C, *S) -> (B, n), float64."""
        at = at.detach()

        def apply(z: Tensor) -> Tensor:
            with torch.no_grad():
                size = at.flatten(1).norm(dim=1) + 1.0
                eps = rel_step * size / z.flatten(1).norm(dim=1).clamp(min=1e-30)
                step = eps.reshape(-1, *[1] * (z.ndim - 1)).to(z.dtype) * z
                diff = self.predict(at + step).double() - self.predict(at - step).double()
                return diff / (2 * eps[:, None].double())

        return apply

    def preconditioner(self, r: Tensor, sigma: Tensor, like: Tensor) -> Callable[[Tensor], Tensor]:
        """v ↦ v / (‖r‖²/n + s²): the residual-normalised plug-in covariance of :class:`OperatorLikelihood`
        (a solver in the loop has no closed-form covariance model), fixed for this step by the residual ``r``.
        Shapes: r, v (B, n) -> (B, n), float64."""
        k = plug_in_variance(r.double(), self.noise_var.to(r.device))
        return lambda v: v / k


class OperatorLikelihood(GuidanceTerm):
    """Guidance term ½ rᵀK⁻¹r, r = y - G(D), for :class:`~funcdiff.guidance.GuidedDenoiser` (``dps-physics``).

    K = (‖r‖²/n + s²) I per sample: the residual-norm normalisation of DPS (Chung et al. 2023, Alg. 1) read as a
    plug-in residual variance; a nonlinear solver in the loop has no closed-form covariance model. K⁻¹r is
    detached, so the gradient in D is -∇Gᵀ K⁻¹ r, taken through the solver (Darcy: its adjoint). The term is
    *damped* (see ``GuidedDenoiser``): the correction is shortened to the Kalman step length along its
    direction with the Gauss–Newton curvature δᵀ∇GᵀK⁻¹∇Gδ (∇Gδ by a central difference: two more solves),
    without which the σ² C ∇ step overshoots by orders of magnitude at large σ (measured on a small Darcy
    model: observation misfit 0.58 against 0.34 unguided). Call: ``term(denoised, sigma) -> (B,)``.
    """

    damped = True

    def __init__(self, operator: SolverOperator, weight: float = 1.0) -> None:
        self.operator, self.weight = operator, float(weight)
        self._k: Optional[Tensor] = None

    def for_batch(self, part: slice) -> "OperatorLikelihood":
        return OperatorLikelihood(self.operator.for_batch(part), self.weight)

    def __call__(self, denoised: Tensor, sigma: Tensor) -> Tensor:
        pred = self.operator.predict(denoised)
        r = self.operator.values.to(device=pred.device, dtype=pred.dtype) - pred
        s2 = self.operator.noise_var.to(device=pred.device, dtype=pred.dtype)
        k = plug_in_variance(r, s2)  # (B, n)
        self._k = k
        return self.weight * gaussian_nll((r / k).detach(), r)

    def curvature(self, denoised: Tensor, direction: Tensor, sigma: Tensor) -> Tensor:
        """δᵀHδ = w (∇G δ)ᵀ K⁻¹ (∇G δ) per sample, ∇Gδ by a central difference. Shapes: (B, C, *S) -> (B,)."""
        with torch.no_grad():
            view = (-1, *[1] * (denoised.ndim - 1))
            eps = 1e-3 * (denoised.flatten(1).norm(dim=1) + 1.0) / direction.flatten(1).norm(dim=1).clamp(min=1e-30)
            step = eps.reshape(view) * direction
            jvp = (self.operator.predict(denoised + step) - self.operator.predict(denoised - step)) / (2 * eps[:, None])
            return self.weight * (jvp.pow(2) / self._k).sum(dim=1)
