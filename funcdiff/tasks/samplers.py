"""The posterior samplers behind ``solve(..., method=...)``: a registry of factories that wrap one denoiser into a
guided denoiser; every one of them is run by the one :func:`funcdiff.sampling.sample`.

=================  =====================================================================  ==================
method             correction of the denoised estimate                                     per step costs
=================  =====================================================================  ==================
``dps``            σ² C ∇ log N(y; A D, K_model(σ)) (:mod:`funcdiff.guidance.dps`)          1 call + 1 VJP
``mmps``           Kalman update with the Tweedie covariance σ² J C (CG on sensors)        1 call + k+1 VJPs
``enkg``           the same update, derivatives from the ensemble (no backward pass)      1 call
``dps-physics``    dps with y = A S(a): the solver S in the loop, gradient by its adjoint  1 call + 1 VJP + S
``mmps-physics``   mmps with y = A S(a), S linearised at the estimate (exact: linear PDE)  1 call + k+1 VJPs
                                                                                           + (2k+3) S
``enkg-physics``   enkg with y = A S(a): the solver as a black box                        1 call + S
=================  =====================================================================  ==================

The ``*-physics`` methods use the prior of the input channel only (a joint model's input channel is the
marginal prior of the input) and report (input, S(input)): every sample satisfies the discrete PDE. For a
forward task the sensors read the input itself, so the solver runs once per sample at the end.

A new method is one factory ``(problem, settings, chunk_size) -> GuidedSampler`` registered in
:data:`POSTERIOR_METHODS` with :func:`register`, which also takes what makes its steps wait for the host
(``host_bound``, from the task and settings alone: a batch refuses CUDA graphs before its first case).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from funcdiff.errors import UserError
from funcdiff.guidance import GuidedDenoiser, SparseObservation, observation_guided
from funcdiff.guidance.enkg import EnsembleKalmanDenoiser
from funcdiff.guidance.mmps import MomentMatchingDenoiser
from funcdiff.guidance.operators import OperatorLikelihood, SolverOperator, SparseOperator
from funcdiff.sampling import Denoiser, num_denoiser_calls, sample
from funcdiff.tasks.problems import Task
from funcdiff.tasks.settings import SolveSettings


@dataclass
class PosteriorProblem:
    """What every posterior method is built from.

    Attributes:
        task: the task.  denoiser, meta: the model and its checkpoint metadata.
        observation: sensors with values (B_obs = 1), channels indexing the model's channels (the task's channels
            for the ``*-physics`` methods).
        shape: (B, C_model, *S) of the sampled state.  schedule: sigma_min / sigma_max / rho of the sampler.
        pde_terms: extra guidance terms (the PDE residual of ``pde_guidance``; dps only).
    """

    task: Task
    denoiser: Denoiser
    meta: object
    observation: SparseObservation
    shape: tuple[int, ...]
    schedule: dict
    pde_terms: list = field(default_factory=list)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.meta.channel_names)

    @property
    def decode(self):
        return self.meta.normalizer.decode if self.meta.normalizer is not None else None

    @property
    def sigma_data(self):
        return self.meta.model_config.get("sigma_data", 1.0)

    @property
    def noise(self):
        return self.meta.noise


@dataclass
class GuidedSampler:
    """A guided denoiser ``(x, sigma) -> denoised`` and what its run cost: ``counts() -> {"vjps",
    "solver_calls"}`` (VJPs through the denoiser for the whole batch; solver calls per sample, summed)."""

    denoiser: Denoiser
    counts: Callable[[], dict]


Factory = Callable[[PosteriorProblem, SolveSettings, Optional[int]], GuidedSampler]
HostBound = Callable[[Task, SolveSettings], Optional[str]]
POSTERIOR_METHODS: dict[str, Factory] = {}
HOST_BOUND: dict[str, HostBound] = {}


def _never(task: Task, settings: SolveSettings) -> None:
    return None


def register(name: str, host_bound: HostBound = _never) -> Callable[[Factory], Factory]:
    """Register ``factory`` as the posterior method ``name`` (a decorator); ``host_bound(task, settings)``: why
    its steps wait for the host, so that they cannot be replayed from a CUDA graph (None: they can)."""
    def add(factory: Factory) -> Factory:
        POSTERIOR_METHODS[name] = factory
        HOST_BOUND[name] = host_bound
        return factory
    return add


def check_method(task: Task, settings: SolveSettings, batch_size: Optional[int] = None) -> None:
    """UserError (one line) for a method the task or the other settings cannot use."""
    method = settings.method
    if method not in POSTERIOR_METHODS:
        raise UserError(f"unknown method {method!r}; valid methods: {', '.join(POSTERIOR_METHODS)}")
    if settings.physics and task.physics_solver is None:
        raise UserError(f"method {method!r} runs the task's numerical solver in the loop, but task {task.name!r} "
                         f"has no such solver; use dps, mmps or enkg")
    if settings.pde_guidance and method != "dps":
        raise UserError(f"PDE-residual guidance combines with method 'dps' only, not {method!r}")
    if settings.pushforward and settings.physics:
        raise UserError(f"pushforward=True is implied by method {method!r} (it reports the solver's output)")
    if method.startswith("enkg"):
        if settings.num_samples < 2:
            raise UserError(f"method {method!r} is an ensemble method: draw at least 2 samples, got "
                             f"{settings.num_samples}")
        if batch_size is not None and batch_size < settings.num_samples:
            raise UserError(f"method {method!r} needs the whole ensemble in one batch: batch_size={batch_size} is "
                             f"less than the number of samples ({settings.num_samples}); leave the batch size unset "
                             "or make it at least that")


def build(problem: PosteriorProblem, settings: SolveSettings, chunk_size: Optional[int] = None) -> GuidedSampler:
    """The guided denoiser of ``settings.method`` for ``problem`` (one registry lookup)."""
    return POSTERIOR_METHODS[settings.method](problem, settings, chunk_size)


def check_graphable(task: Task, settings: SolveSettings) -> None:
    """UserError (one line) when the steps of ``settings.method`` wait for the host, so that they cannot be
    replayed from CUDA graphs (the method's registered ``host_bound``)."""
    reason = HOST_BOUND[settings.method](task, settings)
    if reason is not None:
        raise UserError(f"method {settings.method!r} cannot be replayed from CUDA graphs here: {reason}; run "
                        "without cuda_graphs=True")


def draw(problem: PosteriorProblem, sampler: GuidedSampler, settings: SolveSettings, *, device="cpu",
         progress: bool = False, cuda_graphs: bool = False) -> Tensor:
    """Samples of the model state (model units) by the one :func:`funcdiff.sampling.sample`; ``cuda_graphs``: every
    guided step (the network, its vector-Jacobian products, the likelihood) replayed from a CUDA graph (UserError
    for a method whose steps wait for the host, :func:`check_graphable`).
    Shapes: returns ``problem.shape`` = (B, C_model, *S)."""
    if cuda_graphs:
        check_graphable(problem.task, settings)
    return sample(sampler.denoiser, problem.shape, problem.noise, steps=settings.steps, solver=settings.solver,
                  seed=settings.seed, device=device, progress=progress, cuda_graphs=cuda_graphs, **problem.schedule)


def _model_observation(obs: SparseObservation, names: Sequence[str], channel: str) -> SparseObservation:
    """The observation of ``channel`` re-indexed into the model's channels ``names``."""
    return SparseObservation(coords=obs.coords, channels=(list(names).index(channel),), values=obs.values,
                             noise_std=obs.noise_std, grid=obs.grid, channel_names=(channel,))


def _inverse_physics(task: Task, settings: SolveSettings) -> bool:
    return settings.physics and task.direction == "inverse"


def _operator(problem: PosteriorProblem, settings: SolveSettings) -> SparseOperator | SolverOperator:
    """The observation operator: sensors on the model state, or (inverse ``*-physics``) on the solver's output."""
    task, obs = problem.task, problem.observation
    if _inverse_physics(problem.task, settings):
        sensors = SparseObservation(coords=obs.coords, channels=(0,), values=obs.values, noise_std=obs.noise_std,
                                    grid=obs.grid, channel_names=obs.channel_names)
        return SolverOperator(sensors, task.physics_solver, problem.names.index(task.input_channel),
                              decode=problem.decode)
    if settings.physics:  # forward: the sensors read the input channel itself
        obs = _model_observation(obs, problem.names, task.input_channel)
    return SparseOperator(obs, problem.noise, decode=problem.decode, sigma_data=problem.sigma_data)


def _solver_on_host(task: Task, settings: SolveSettings) -> Optional[str]:
    """Inverse ``*-physics``: the numerical solver checks its input and solves on the host at every step."""
    if _inverse_physics(task, settings):
        return "the numerical solver checks its input and solves on the host at every step"
    return None


def _pde_gate_on_host(task: Task, settings: SolveSettings) -> Optional[str]:
    if settings.pde_guidance:
        return "PDE guidance decides on the host at every step whether the noise level is below its start"
    return None


def _ensemble_on_host(task: Task, settings: SolveSettings) -> str:
    return "the ensemble's largest noise level is read on the host at every step"


def _dps_counts(settings: SolveSettings, op=None) -> Callable[[], dict]:
    """One batched VJP per denoiser call; the solver calls of a solver operator."""
    return lambda: {"vjps": num_denoiser_calls(settings.solver, settings.steps),
                    "solver_calls": int(op.solver_calls) if op is not None else 0}


@register("dps", host_bound=_pde_gate_on_host)
def dps(problem: PosteriorProblem, settings: SolveSettings, chunk_size: Optional[int]) -> GuidedSampler:
    """Gradient guidance with the σ-aware likelihood model (:func:`funcdiff.guidance.observation_guided`)."""
    guided = observation_guided(problem.denoiser, problem.noise, problem.observation, problem.shape[0],
                                pde_terms=problem.pde_terms, decode=problem.decode, sigma_data=problem.sigma_data,
                                scaling=settings.scaling, strength=settings.guidance_strength,
                                chunk_size=chunk_size, trust_region=settings.kappa)
    return GuidedSampler(guided, _dps_counts(settings))


@register("mmps", host_bound=_solver_on_host)
def mmps(problem: PosteriorProblem, settings: SolveSettings, chunk_size: Optional[int]) -> GuidedSampler:
    """Moment matching with the Tweedie covariance (:class:`~funcdiff.guidance.mmps.MomentMatchingDenoiser`)."""
    op = _operator(problem, settings)
    guided = MomentMatchingDenoiser(problem.denoiser, op, problem.noise, strength=settings.guidance_strength,
                                    cg_iters=settings.cg_iters, chunk_size=chunk_size, sigma_data=problem.sigma_data)
    return GuidedSampler(guided, lambda: {"vjps": int(guided.vjps), "solver_calls": int(op.solver_calls)})


@register("enkg", host_bound=_ensemble_on_host)
def enkg(problem: PosteriorProblem, settings: SolveSettings, chunk_size: Optional[int]) -> GuidedSampler:
    """Derivative-free ensemble Kalman guidance (:class:`~funcdiff.guidance.enkg.EnsembleKalmanDenoiser`)."""
    op = _operator(problem, settings)
    guided = EnsembleKalmanDenoiser(problem.denoiser, op, problem.noise, strength=settings.guidance_strength)
    return GuidedSampler(guided, lambda: {"vjps": 0, "solver_calls": int(op.solver_calls)})


@register("dps-physics", host_bound=_solver_on_host)
def dps_physics(problem: PosteriorProblem, settings: SolveSettings, chunk_size: Optional[int]) -> GuidedSampler:
    """dps through the solver (:class:`~funcdiff.guidance.operators.OperatorLikelihood`, a damped term); for a
    forward task plain dps on the input channel's sensors."""
    if not _inverse_physics(problem.task, settings):
        obs = _model_observation(problem.observation, problem.names, problem.task.input_channel)
        guided = observation_guided(problem.denoiser, problem.noise, obs, problem.shape[0], decode=problem.decode,
                                    sigma_data=problem.sigma_data, strength=settings.guidance_strength,
                                    chunk_size=chunk_size, trust_region=settings.kappa)
        return GuidedSampler(guided, _dps_counts(settings))
    op = _operator(problem, settings)
    guided = GuidedDenoiser(problem.denoiser, [OperatorLikelihood(op)], problem.noise,
                            strength=settings.guidance_strength, chunk_size=chunk_size,
                            trust_region=settings.kappa, sigma_data=problem.sigma_data)
    return GuidedSampler(guided, _dps_counts(settings, op))


register("mmps-physics", host_bound=_solver_on_host)(mmps)
register("enkg-physics", host_bound=_ensemble_on_host)(enkg)
METHODS = tuple(POSTERIOR_METHODS)


def solve_physics(task: Task, samples: Tensor, names: Sequence[str]) -> tuple[Tensor, tuple[str, ...]]:
    """(input, S(input)) in the task's channel order from samples of the model's channels (physical units).

    The input is the one the solver uses (``task.solver_input``). Shapes: (K, C_model, *S) -> (K, 2, *S).
    """
    a = samples[:, [list(names).index(task.input_channel)]]
    if task.solver_input is not None:
        a = task.solver_input(a)
    with torch.no_grad():
        u = task.physics_solver(a.double()).to(samples.dtype)
    channels = {task.input_channel: a, task.output_channel: u}
    return torch.cat([channels[c] for c in task.channels], dim=1), tuple(task.channels)
