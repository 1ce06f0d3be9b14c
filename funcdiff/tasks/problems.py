"""Task registry: what is observed, what is reported, and which PDE ties the channels together.

A *task* is a question asked of a jointly trained diffusion model. The model is trained unconditionally on
the stacked channels of a PDE problem (e.g. Darcy's coefficient ``a`` and solution ``u`` as one field
(B, 2, *S)); the task decides which channel the sparse sensors read (``observed``) and which channel is the
answer (``target``):

=========================  ============  ==========  ========  ========  =========
task                       PDE problem   channels    observed  target    grid
=========================  ============  ==========  ========  ========  =========
darcy-forward / -inverse   darcy         a, u        a / u     u / a     node
poisson-forward / -inverse poisson       a, u        a / u     u / a     node
helmholtz-forward/-inverse helmholtz     a, u        a / u     u / a     node
navier-stokes-forward/-inv navier_stokes w0, wT      w0 / wT   wT / w0   periodic
burgers                    burgers       u (T, x)    u         u         periodic
reconstruct                (the model's) all         any       all       the model's
=========================  ============  ==========  ========  ========  =========

``reconstruct`` is generic: it is not tied to a PDE but built for each checkpoint (:func:`reconstruct_task`) from
the model's channels and grid (``"latlon"`` for a model trained on an ERA5 store: stations at (latitude,
longitude) in degrees); the sensors read any subset of the channels and every channel is reported and scored.

Grids: ``"node"`` is x_i = i/(N-1) on [0, 1] with u = 0 on the boundary (Darcy, Poisson, Helmholtz);
``"periodic"`` is x_i = i/N on [0, 1) (Navier–Stokes; Burgers in x, with time as a second axis).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from funcdiff.pde.darcy_adjoint import solve_darcy_adjoint
from funcdiff.pde import (burgers_residual, darcy_residual, dirichlet_residual, get_problem, helmholtz_residual,
                          solve_darcy, solve_helmholtz, solve_navier_stokes,
                          threshold_coefficient)

DARCY_THRESHOLD = 7.5  # midway between the coefficient values 3 and 12 (physical units)
DIRECTIONS = ("forward", "inverse", "reconstruct")

Residual = Callable[[Tensor], Tensor]
ForwardSolver = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Task:
    """One forward, inverse or reconstruction task on a jointly modelled PDE state.

    Attributes:
        name: registry name, e.g. ``"darcy-inverse"``.
        problem: name of the PDE problem in :func:`funcdiff.pde.get_problem` (the training data).
        direction: ``"forward"`` (observe the input, report the solution), ``"inverse"`` (observe the
            solution, report the input) or ``"reconstruct"`` (observe and report the same channel).
        channels: channel names of the joint state, in model order.
        observed: channels the sensors read.  target: channels reported and scored.
        grid: ``"node"`` or ``"periodic"`` (sensor convention, see :mod:`funcdiff.guidance.observations`).
        residual: pointwise PDE residual of a physical joint state (B, C, *S) -> (B, R, *S'), or None.
        residual_scale_channel: channel whose data std normalises the residual (None: the residual is already
            in units of an O(1) source term, as Darcy's f = 1).
        threshold: binarisation threshold of the target (Darcy coefficient: 7.5 between 3 and 12), or None.
        forward_solver: numerical solver input channel (B, 1, *S) -> solution (B, 1, *S) (physical units),
            used by the interpolation baseline of forward tasks; None where there is none.
        trajectory: True when the state is a trajectory (B, C, T, *S).
        physics_solver: differentiable numerical solver, input channel (B, 1, *S) -> solution (B, 1, *S)
            (physical units), for posterior sampling with the solver in the loop (methods ``dps-physics``,
            ``enkg-physics``); it applies ``solver_input`` first. None where the task has none.
        solver_input: the input the physics solver actually uses (Darcy: a floored at 0.1 so the harmonic face
            averages stay defined); the physics methods report it as the input channel.
    """

    name: str
    problem: str
    direction: str
    channels: tuple[str, ...]
    observed: tuple[str, ...]
    target: tuple[str, ...]
    grid: str
    residual: Optional[Residual] = None
    residual_scale_channel: Optional[str] = None
    threshold: Optional[float] = None
    forward_solver: Optional[ForwardSolver] = field(default=None, repr=False)
    trajectory: bool = False
    description: str = ""
    physics_solver: Optional[ForwardSolver] = field(default=None, repr=False)
    solver_input: Optional[Callable[[Tensor], Tensor]] = field(default=None, repr=False)

    @property
    def input_channel(self) -> str:
        """The PDE's input channel (coefficient, source, initial vorticity): observed when forward, target when
        inverse."""
        return self.observed[0] if self.direction == "forward" else self.target[0]

    @property
    def output_channel(self) -> str:
        """The PDE's solution channel (the other one of the pair)."""
        return self.target[0] if self.direction == "forward" else self.observed[0]

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"task direction must be one of {DIRECTIONS}, got {self.direction!r}")
        for group in (self.observed, self.target):
            unknown = [c for c in group if c not in self.channels]
            if unknown:
                raise ValueError(f"task {self.name!r}: channels {unknown} not in {list(self.channels)}")

    @property
    def observed_index(self) -> tuple[int, ...]:
        return tuple(self.channels.index(c) for c in self.observed)

    @property
    def target_index(self) -> tuple[int, ...]:
        return tuple(self.channels.index(c) for c in self.target)

    @property
    def netcdf_grid(self) -> str:
        """Grid name used by :func:`funcdiff.io.netcdf.fields_to_dataset`: the task's own ("node" or "periodic")."""
        return self.grid

    def residual_loss(self, x: Tensor, scale: float = 1.0) -> Tensor:
        """Mean square of the PDE residual of the physical state ``x``, divided by ``scale²``.

        Shapes: x (B, C, *S) -> (B,). Dimensionless when ``scale`` carries the residual's units.
        """
        if self.residual is None:
            raise ValueError(f"task {self.name!r} has no PDE residual; run it without PDE guidance")
        r = self.residual(x) / scale
        return r.pow(2).flatten(1).mean(dim=1)


def _pair(x: Tensor) -> tuple[Tensor, Tensor]:
    if x.ndim != 4 or x.shape[1] != 2:
        raise ValueError(f"expected a joint (a, u) state of shape (B, 2, N, N), got {tuple(x.shape)}")
    return x[:, :1], x[:, 1:]


DARCY_A_FLOOR = 0.1  # estimated coefficients are floored here so the solver's harmonic face average stays defined


def _darcy_residual(x: Tensor, f: float = 1.0) -> Tensor:
    """Darcy interior residual -div(a grad u) - f with the data solver's stencil (harmonic face averages of a,
    floored at 0.1 since a denoised estimate may dip below 0), and u on the boundary.
    Shapes: (B, 2, N, N) -> (B, 2, N, N), units of f."""
    a, u = _pair(x)
    return torch.cat([darcy_residual(a.clamp_min(DARCY_A_FLOOR), u, f), dirichlet_residual(u)], dim=1)


def _helmholtz_residual(k: float) -> Residual:
    def residual(x: Tensor) -> Tensor:
        """Lap u + k² u - a inside and u on the boundary. Shapes: (B, 2, N, N) -> (B, 2, N, N), units of a."""
        a, u = _pair(x)
        return torch.cat([helmholtz_residual(a, u, k), dirichlet_residual(u)], dim=1)
    return residual


def _burgers_residual(x: Tensor) -> Tensor:
    p = get_problem("burgers").defaults
    return burgers_residual(x, p["times"], p["nu"])


def _darcy_forward(a: Tensor) -> Tensor:
    """Project an estimated coefficient onto {a_low, a_high} (threshold 7.5), then solve Darcy with f = 1."""
    p = get_problem("darcy").defaults
    binary = threshold_coefficient(a.double() - 0.5 * (p["a_low"] + p["a_high"]), p["a_high"], p["a_low"])
    return solve_darcy(binary, p["f"]).to(a.dtype)


def _darcy_input(a: Tensor) -> Tensor:
    return a.clamp_min(DARCY_A_FLOOR)


def _darcy_physics(a: Tensor) -> Tensor:
    """Darcy solve with f = 1 on the floored coefficient, differentiable by the adjoint (no thresholding, so a
    gradient exists). Shapes: (B, 1, N, N) -> (B, 1, N, N)."""
    f = get_problem("darcy").defaults["f"]
    return solve_darcy_adjoint(_darcy_input(a.double()), f).to(a.dtype)


def _helmholtz_forward(k: float) -> ForwardSolver:
    return lambda a: solve_helmholtz(a.double(), k).to(a.dtype)


def _ns_forward(w0: Tensor) -> Tensor:
    """Vorticity at t_final from w0 with the data solver's settings (float64; differentiable in w0).
    Shapes: (B, 1, N, N) -> (B, 1, N, N)."""
    p = get_problem("navier_stokes").defaults
    w = solve_navier_stokes(w0.double(), [0.0, float(p["t_final"])], nu=p["nu"], forcing=p["forcing"],
                            drag=p["drag"], cfl=p["cfl"], max_dt=p["max_dt"])
    return w[:, :, -1].to(w0.dtype)


def _ns_residual(x: Tensor) -> Tensor:
    """Solver consistency of a (w0, wT) pair: S_T(w0) - wT, the data solver run from w0 to t_final (the
    PDE integrated over [0, T]; a pointwise residual of two snapshots one time unit apart means nothing).
    Differentiable in both channels (autograd through every solver step: an adjoint of the PDE).
    Shapes: (B, 2, N, N) -> (B, 1, N, N), units of vorticity."""
    w0, wt = _pair(x)
    return _ns_forward(w0) - wt


def _elliptic_pair(problem: str, residual: Residual, forward: ForwardSolver, scale_channel: Optional[str],
                   threshold: Optional[float], physics: Optional[ForwardSolver] = None,
                   solver_input: Optional[Callable[[Tensor], Tensor]] = None) -> list[Task]:
    base = dict(problem=problem, channels=("a", "u"), grid="node", residual=residual,
                residual_scale_channel=scale_channel, forward_solver=forward, physics_solver=physics or forward,
                solver_input=solver_input)
    return [
        Task(name=f"{problem}-forward", direction="forward", observed=("a",), target=("u",),
             description=f"{problem}: observe the coefficient/source a at sensors, recover the solution u", **base),
        Task(name=f"{problem}-inverse", direction="inverse", observed=("u",), target=("a",), threshold=threshold,
             description=f"{problem}: observe the solution u at sensors, recover the coefficient/source a", **base),
    ]


def _build_tasks() -> dict[str, Task]:
    helmholtz_k = float(get_problem("helmholtz").defaults["k"])
    ns = dict(problem="navier_stokes", channels=("w0", "wT"), grid="periodic", forward_solver=_ns_forward,
              residual=_ns_residual, residual_scale_channel="wT", physics_solver=_ns_forward)
    tasks = [
        *_elliptic_pair("darcy", _darcy_residual, _darcy_forward, None, DARCY_THRESHOLD, _darcy_physics, _darcy_input),
        *_elliptic_pair("poisson", _helmholtz_residual(0.0), _helmholtz_forward(0.0), "a", None),
        *_elliptic_pair("helmholtz", _helmholtz_residual(helmholtz_k), _helmholtz_forward(helmholtz_k), "a", None),
        Task(name="navier-stokes-forward", direction="forward", observed=("w0",), target=("wT",),
             description="2-D Navier-Stokes: observe the initial vorticity, recover the vorticity at t_final", **ns),
        Task(name="navier-stokes-inverse", direction="inverse", observed=("wT",), target=("w0",),
             description="2-D Navier-Stokes: observe the final vorticity, recover the initial vorticity", **ns),
        Task(name="burgers", problem="burgers", direction="reconstruct", channels=("u",), observed=("u",),
             target=("u",), grid="periodic", residual=_burgers_residual, trajectory=True,
             residual_scale_channel="u",
             description="1-D Burgers: reconstruct the trajectory u(t, x) from sparse space-time sensors"),
    ]
    return {t.name: t for t in tasks}


TASKS: dict[str, Task] = _build_tasks()


def get_task(name: str | Task) -> Task:
    """The registered task ``name`` (a :class:`Task` is returned as is); ValueError lists the valid names."""
    if isinstance(name, Task):
        return name
    key = str(name).strip().lower().replace("_", "-")  # one spelling shown, both accepted
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[key]


RECONSTRUCT = "reconstruct"  # the generic task of any checkpoint (:func:`reconstruct_task`)


def is_reconstruct(task: "str | Task") -> bool:
    """Whether ``task`` names the generic ``reconstruct`` task (built per checkpoint, not in :data:`TASKS`)."""
    return isinstance(task, str) and task.strip().lower() == RECONSTRUCT


def reconstruct_task(channels: tuple[str, ...], observed: Optional[tuple[str, ...]], grid: str,
                     problem: str = "") -> Task:
    """The generic reconstruction task of a model with state ``channels`` on ``grid`` (``"periodic"``, ``"node"``
    or ``"latlon"``): sensors read ``observed`` (default: every channel), every channel is the target.

    ValueError naming the model's channels for an observed name it does not have.
    """
    observed = tuple(observed or channels)
    unknown = [c for c in observed if c not in channels]
    if unknown:
        raise ValueError(f"variables {unknown} are not channels of the model; it has {list(channels)}")
    kind = {"latlon": "stations at (latitude, longitude)"}.get(grid, f"sensors on the {grid} grid")
    return Task(name=RECONSTRUCT, problem=problem, direction="reconstruct", channels=tuple(channels),
                observed=observed, target=tuple(channels), grid=grid,
                description=f"reconstruct every channel {list(channels)} from {kind} of {list(observed)}")


def task_names() -> list[str]:
    """The registered tasks (``reconstruct``, built per checkpoint, is not among them)."""
    return sorted(TASKS)
