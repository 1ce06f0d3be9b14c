"""The posterior samplers behind ``solve(..., method=...)``: one denoiser, one ODE solver, several guidance rules.

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
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from funcdiff.errors import UserError
from funcdiff.guidance import GuidedDenoiser, SparseObservation, guided_sample
from funcdiff.guidance.enkg import EnsembleKalmanDenoiser
from funcdiff.guidance.mmps import MomentMatchingDenoiser
from funcdiff.guidance.operators import OperatorLikelihood, SolverOperator, SparseOperator
from funcdiff.sampling import num_denoiser_calls, sample
from funcdiff.tasks.problems import Task

METHODS = ("dps", "mmps", "enkg", "dps-physics", "mmps-physics", "enkg-physics")


def check_method(task: Task, method: str, *, num_samples: int, pde_guidance: bool = False,
                 pushforward: bool = False, batch_size: Optional[int] = None) -> None:
    """UserError (one line) for a method the task or the other options cannot use."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    physics = method.endswith("-physics")
    if physics and task.physics_solver is None:
        raise UserError(f"method {method!r} runs the task's numerical solver in the loop, but task {task.name!r} "
                         f"has no such solver; use dps, mmps or enkg")
    if pde_guidance and method != "dps":
        raise UserError(f"PDE-residual guidance combines with method 'dps' only, not {method!r}")
    if pushforward and physics:
        raise UserError(f"--pushforward is implied by method {method!r} (it reports the solver's output)")
    if method.startswith("enkg"):
        if num_samples < 2:
            raise UserError(f"method {method!r} is an ensemble method: draw at least 2 samples, got {num_samples}")
        if batch_size is not None and batch_size < num_samples:
            raise UserError(f"method {method!r} needs the whole ensemble in one batch: drop --batch-size or make "
                             f"it at least the number of samples ({num_samples})")


def _model_observation(task: Task, obs: SparseObservation, names: Sequence[str], channel: str) -> SparseObservation:
    """The observation of ``channel`` re-indexed into the model's channels ``names``."""
    return SparseObservation(coords=obs.coords, channels=(list(names).index(channel),), values=obs.values,
                             noise_std=obs.noise_std, grid=obs.grid, channel_names=(channel,))


def posterior_states(method: str, task: Task, denoiser, meta, obs: SparseObservation, shape: Sequence[int], *,
                     steps: int, solver: str, seed: int, strength: float, cg_iters: int,
                     chunk_size: Optional[int], device, progress: bool, trust_region: Optional[float],
                     schedule: dict) -> tuple[Tensor, dict]:
    """Samples of the model state (model units) by ``method`` (not ``dps`` without physics: that is
    :func:`funcdiff.guidance.guided_sample`) and the counts {"vjps", "solver_calls"} they cost (VJPs through
    the denoiser for the whole batch; solver calls per sample summed over the batch).

    ``obs`` indexes the model's channels, or the task's channels for the ``*-physics`` methods.
    Shapes: ``shape`` = (B, C_model, *S); returns (B, C_model, *S).
    """
    names = tuple(meta.channel_names)
    decode = meta.normalizer.decode if meta.normalizer is not None else None
    sigma_data = meta.model_config.get("sigma_data", 1.0)
    noise = meta.noise
    physics = method.endswith("-physics")
    inverse_physics = physics and task.direction == "inverse"
    if physics and not inverse_physics:
        obs = _model_observation(task, obs, names, task.input_channel)
    if inverse_physics:
        sensors = SparseObservation(coords=obs.coords, channels=(0,), values=obs.values, noise_std=obs.noise_std,
                                    grid=obs.grid, channel_names=obs.channel_names)
        op = SolverOperator(sensors, task.physics_solver, names.index(task.input_channel), decode=decode)
    else:
        op = SparseOperator(obs, noise, decode=decode, sigma_data=sigma_data)
    run = dict(steps=steps, solver=solver, seed=seed, device=device, progress=progress, **schedule)
    if method == "dps-physics" and not inverse_physics:
        x = guided_sample(denoiser, noise, obs, shape, guidance_strength=strength, decode=decode,
                          sigma_data=sigma_data, chunk_size=chunk_size, trust_region=trust_region, **run)
        return x, {"vjps": num_denoiser_calls(solver, steps), "solver_calls": 0}
    if method == "dps-physics":
        guided = GuidedDenoiser(denoiser, [OperatorLikelihood(op)], noise, strength=strength,
                                chunk_size=chunk_size, trust_region=trust_region, sigma_data=sigma_data)
    elif method in ("mmps", "mmps-physics"):
        guided = MomentMatchingDenoiser(denoiser, op, noise, strength=strength, cg_iters=cg_iters,
                                        chunk_size=chunk_size, sigma_data=sigma_data)
    else:  # enkg, enkg-physics
        guided = EnsembleKalmanDenoiser(denoiser, op, noise, strength=strength)
    x = sample(guided, shape, noise, **run)
    vjps = num_denoiser_calls(solver, steps) if method == "dps-physics" else int(getattr(guided, "vjps", 0))
    return x, {"vjps": vjps, "solver_calls": int(op.solver_calls)}


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
