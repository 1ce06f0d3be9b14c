"""A guided denoiser at 12 sensors through a tiny float64 FNO on the row layout: DPS (one VJP per call) or MMPS
(3 CG iterations, 4 VJPs). Shared by the tests of guidance's backward passes (by columns, and on the GPU's code
paths)."""

from __future__ import annotations

import torch

from funcdiff.guidance import GuidedDenoiser, ObservationGuidance, SparseObservation, random_sensors
from funcdiff.guidance.mmps import MomentMatchingDenoiser
from funcdiff.guidance.operators import SparseOperator
from funcdiff.models import build_denoiser
from funcdiff.noise import GaussianRandomField

VJPS = {"dps": 1, "mmps": 4}  # the network's VJPs per guided call


def guided_fno(method: str, grid: tuple[int, int] = (24, 24)):
    """(frozen model, guided denoiser, x (2, 2, *grid), sigma (2,)) for ``method`` in ``VJPS``, all float64."""
    torch.manual_seed(0)
    model = build_denoiser({"backbone": "fno", "in_channels": 2, "out_channels": 2, "n_modes": [6, 6],
                            "hidden_channels": 8, "n_layers": 2, "sigma_data": 0.5}).double().requires_grad_(False)
    noise = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.1)
    gen = torch.Generator().manual_seed(1)
    obs = SparseObservation(random_sensors(12, grid, generator=gen), channels=(1,), noise_std=0.05)
    obs = obs.with_values(torch.randn(1, 1, 12, generator=gen, dtype=torch.float64))
    guided = (GuidedDenoiser(model, [ObservationGuidance(obs, noise)], noise) if method == "dps"
              else MomentMatchingDenoiser(model, SparseOperator(obs, noise), noise, cg_iters=VJPS["mmps"] - 1))
    x = torch.randn(2, 2, *grid, generator=gen, dtype=torch.float64)
    return model, guided, x, torch.tensor([0.8, 2.0], dtype=torch.float64)
