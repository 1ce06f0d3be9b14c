"""Tasks a user runs: forward/inverse PDE problems and reconstruction from sparse observations.

- :mod:`~funcdiff.tasks.problems`: the task registry (``Task``, ``TASKS``, ``get_task``): PDE problem, channels,
  which channel is observed and which reported, grid convention, PDE residual, metrics threshold.
- :mod:`~funcdiff.tasks.solve`: ``solve(checkpoint, task, observation, ...) -> Posterior`` (guided posterior
  sampling, metrics, netCDF and PNG output), ``make_observation``, ``load_truth``.
- :mod:`~funcdiff.tasks.samplers`: the posterior methods of ``solve(method=...)``, a registry of factories
  (``POSTERIOR_METHODS``: dps, mmps, enkg, dps-physics, mmps-physics, enkg-physics) that wrap the denoiser for
  :func:`funcdiff.sampling.sample`, and their checks.
- :mod:`~funcdiff.tasks.settings`: ``SolveSettings``, every setting that changes a solve's result (frozen; also
  the signature of a batch run).
- :mod:`~funcdiff.tasks.baselines`: interpolation (+ numerical solver) and FNO-regression baselines.
- :mod:`~funcdiff.tasks.forecast`: ``forecast(model, initial, lead_steps, ...) -> Forecast`` (autoregressive and
  rolling diffusion rollouts, ensembles, sensors assimilated during the rollout), ``rollout`` (a generator).
- :mod:`~funcdiff.tasks.forecast_io`: the resumable streaming save, the forecast PNG, initial states from files.
- :mod:`~funcdiff.tasks.evaluate`: per-lead scores of a forecast against the truth, with reference forecasts.
"""

from funcdiff.tasks.problems import DARCY_THRESHOLD, TASKS, Task, get_task, task_names
from funcdiff.tasks.settings import SolveSettings
from funcdiff.tasks.solve import Posterior, check_compatible, load_model, load_truth, make_observation, solve

__all__ = ["DARCY_THRESHOLD", "Posterior", "TASKS", "Task", "check_compatible", "get_task", "load_model",
           "load_truth", "make_observation", "solve", "SolveSettings", "task_names"]
