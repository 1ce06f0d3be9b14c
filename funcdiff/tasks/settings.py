"""``SolveSettings``: every setting of :func:`funcdiff.tasks.solve` that changes its result, in one frozen object.

It is what a run is (the posterior's ``settings`` attribute records it) and the signature of a batch run
(``funcdiff solve --cases``): a folder of parts is continued only by a run with equal settings, so a flag that
does not change results (where output goes, progress bars, the device, the chunk size) never invalidates it.
Imports nothing heavy (the CLI builds it before torch is loaded).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Optional

FEW_STEPS = 7  # trust_region="auto": the guidance trust region is on at or below this many steps


@dataclass(frozen=True)
class SolveSettings:
    """How posterior samples are drawn (:func:`funcdiff.tasks.solve`; docs: "Posterior samplers").

    Attributes:
        method: the posterior sampler, a key of :data:`funcdiff.tasks.samplers.POSTERIOR_METHODS`.
        num_samples, steps, solver, seed: the samples drawn, the ODE steps and solver, the seed.
        resolution: sampling grid (int per axis or tuple); None: the truth's grid, else the training grid.
        guidance_strength: ζ (1 = Bayesian).  scaling: the DPS likelihood's covariance (``"likelihood"`` or
            ``"residual"``).  cg_iters: MMPS conjugate-gradient iterations per step.
        pde_guidance, pde_weight, pde_start_sigma: the task's PDE residual as a soft constraint (dps).
        trust_region: κ of the guidance trust region; None = off; ``"auto"``: 1 for ≤ ``FEW_STEPS`` steps.
        sigma_max: largest noise level; None: the checkpoint's schedule.
        pushforward: forward tasks: the target by the numerical solver applied to each sample's input.
        obs_fraction, obs_count, obs_noise: how twin sensors are drawn from a truth (batch cases; unused when an
            observation is given).
    """

    method: str = "dps"
    num_samples: int = 8
    steps: int = 100
    solver: str = "heun"
    resolution: Optional[int | tuple[int, ...]] = None
    seed: int = 0
    guidance_strength: float = 1.0
    scaling: str = "likelihood"
    cg_iters: int = 5
    pde_guidance: bool = False
    pde_weight: float = 1e-3
    pde_start_sigma: float = 1.0
    trust_region: Optional[float | str] = "auto"
    sigma_max: Optional[float] = None
    pushforward: bool = False
    obs_fraction: Optional[float] = None
    obs_count: Optional[int] = None
    obs_noise: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.resolution, list):
            object.__setattr__(self, "resolution", tuple(self.resolution))

    @property
    def kappa(self) -> Optional[float]:
        """The trust region's κ this run uses (``"auto"`` resolved by the number of steps; None = off)."""
        if self.trust_region == "auto":
            return 1.0 if self.steps <= FEW_STEPS else None
        return self.trust_region

    @property
    def physics(self) -> bool:
        """Whether the method runs the task's numerical solver in the loop (``*-physics``)."""
        return self.method.endswith("-physics")

    def updated(self, **changes) -> "SolveSettings":
        """A copy with ``changes`` (TypeError naming an unknown setting)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(f"unknown solve settings {unknown}; valid: {[f.name for f in fields(self)]}")
        return replace(self, **changes)

    def signature(self) -> dict:
        """The JSON-able settings (a batch run's signature)."""
        out = asdict(self)
        if isinstance(out["resolution"], tuple):
            out["resolution"] = list(out["resolution"])
        return out
