"""Numerical PDE solvers (to make data) and differentiable PDE residuals (for guidance).

Modules:
    navier_stokes  2-D vorticity NS on the periodic unit square: pseudo-spectral, CN/Heun, adaptive CFL step
    burgers        1-D viscous Burgers on [0, 1): pseudo-spectral, ETDRK4 (Kassam & Trefethen 2005)
    elliptic       Darcy (FV, harmonic averaging, sparse LU), Poisson and Helmholtz (exact DST-I solve),
                   Dirichlet u = 0 on the node grid x_i = i / (N - 1)
    grf            periodic (FFT) and cosine-basis (DCT) Gaussian random fields, Darcy thresholding
    spectral       wavenumbers, 2/3 de-aliasing, spectral resampling
    registry       named data generators (``Problem``, ``PROBLEMS``, ``get_problem``)

Shapes: fields ``(B, 1, *S)``, trajectories ``(B, 1, T, *S)``; registry outputs drop the channel axis.
"""

from funcdiff.pde._common import mean_square
from funcdiff.pde.burgers import burgers_residual, burgers_rhs, cole_hopf_solution, solve_burgers
from funcdiff.pde.elliptic import (
    darcy_operator,
    darcy_residual,
    dirichlet_residual,
    helmholtz_residual,
    laplacian_5point,
    node_grid,
    poisson_residual,
    solve_darcy,
    solve_helmholtz,
    solve_poisson,
)
from funcdiff.pde.grf import cosine_grf_expansion, sample_cosine_grf, sample_periodic_grf, threshold_coefficient
from funcdiff.pde.navier_stokes import (
    kinetic_energy,
    make_forcing,
    navier_stokes_residual,
    navier_stokes_rhs,
    solve_navier_stokes,
    taylor_green_vorticity,
    velocity_from_vorticity,
)
from funcdiff.pde.registry import PROBLEMS, Problem, get_problem
from funcdiff.pde.spectral import periodic_grid

__all__ = [
    "PROBLEMS",
    "Problem",
    "burgers_residual",
    "burgers_rhs",
    "cole_hopf_solution",
    "darcy_operator",
    "darcy_residual",
    "dirichlet_residual",
    "get_problem",
    "helmholtz_residual",
    "kinetic_energy",
    "laplacian_5point",
    "make_forcing",
    "mean_square",
    "navier_stokes_residual",
    "navier_stokes_rhs",
    "node_grid",
    "periodic_grid",
    "poisson_residual",
    "sample_cosine_grf",
    "sample_periodic_grf",
    "solve_burgers",
    "solve_darcy",
    "solve_helmholtz",
    "solve_navier_stokes",
    "solve_poisson",
    "taylor_green_vorticity",
    "threshold_coefficient",
    "cosine_grf_expansion",
    "velocity_from_vorticity",
]
