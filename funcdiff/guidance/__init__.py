"""Guided posterior sampling from sparse observations (DPS / FunDPS) and PDE-residual guidance.

- :mod:`~funcdiff.guidance.observations`: sparse point observations on or off the grid (``SparseObservation``,
  ``random_sensors``), periodic cell grids or Dirichlet node grids.
- :mod:`~funcdiff.guidance.likelihood`: ``ObservationGuidance``, the Gaussian likelihood of observations given
  the denoised estimate, with a σ-aware covariance so one default strength works across tasks.
- :mod:`~funcdiff.guidance.pde_guidance`: ``PDEResidualGuidance`` (DiffusionPDE-style physics term).
- :mod:`~funcdiff.guidance.dps`: ``GuidedDenoiser`` (a denoiser wrapper usable by every solver) and
  ``guided_sample``.
- :mod:`~funcdiff.guidance.mmps`: ``MomentMatchingDenoiser`` (MMPS, Rozet et al. 2024): the Kalman update with
  the Tweedie covariance σ² J C by vector–Jacobian products and CG on the sensors.
- :mod:`~funcdiff.guidance.enkg`: ``EnsembleKalmanDenoiser`` (EnKG, Zheng et al. 2024): the same update with
  derivatives replaced by ensemble statistics (no gradient of the denoiser or of the forward model).
- :mod:`~funcdiff.guidance.operators`: sensor-space observation operators shared by these (``SparseOperator``;
  ``SolverOperator``: a numerical solver in the loop) and ``OperatorLikelihood`` (the DPS term through a solver).
- :mod:`~funcdiff.guidance.terms`: ``GuidanceTerm``, the contract of a guidance term (``for_batch``, ``damped``,
  ``curvature``), and ``gaussian_nll`` (½ rᵀK⁻¹r with the gradient of a constant K).
- :mod:`~funcdiff.guidance.covariance`: ``ModelCovariance``, the model r²(σ) C / a² of Cov[x_0 | x_σ] shared by
  these methods, and its trust-region scale.
- :mod:`~funcdiff.guidance.linalg`: a batched conjugate gradient with a fixed iteration count (no host sync).
- :mod:`~funcdiff.guidance.io`: observations to and from netCDF.
- :mod:`~funcdiff.guidance.timed`: sensors with times for forecasts (``TimedObservation``) and ``FrameTerm``,
  a guidance term on one frame of a forecaster's window.
"""

from funcdiff.guidance.covariance import ModelCovariance
from funcdiff.guidance.dps import GuidedDenoiser, GuidedSampling, guided_sample, observation_guided
from funcdiff.guidance.io import load_observation, save_observation
from funcdiff.guidance.likelihood import ObservationGuidance, observation_covariance, posterior_variance
from funcdiff.guidance.observations import SparseObservation, random_sensors, resolve_channels
from funcdiff.guidance.pde_guidance import PDEResidualGuidance
from funcdiff.guidance.terms import GuidanceTerm

__all__ = [
    "GuidedDenoiser", "GuidanceTerm", "GuidedSampling", "ModelCovariance", "guided_sample", "observation_guided",
    "ObservationGuidance", "PDEResidualGuidance", "SparseObservation",
    "random_sensors", "resolve_channels", "observation_covariance", "posterior_variance",
    "load_observation", "save_observation",
]
