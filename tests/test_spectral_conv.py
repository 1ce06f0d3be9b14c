"""The FNO's spectral convolution and the denoiser built on it: checkpoints made before issue 20 still load and
give the same output, and the same seed gives the same sample (fixture made at the commit before the change by
tests/data/make_fno_checkpoint_v0.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from funcdiff.models import build_denoiser

FIXTURE = Path(__file__).parent / "data" / "fno_checkpoint_v0.pt"


def _fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def test_checkpoint_from_before_loads_and_gives_the_same_output():
    for name, entry in _fixture().items():
        denoiser = build_denoiser(entry["config"]).eval()
        denoiser.load_state_dict(entry["state_dict"])
        for case in entry["cases"]:
            with torch.no_grad():
                out = denoiser(case["x"], case["sigma"])
            torch.testing.assert_close(out, case["out"], rtol=1e-5, atol=1e-5, msg=f"{name} {tuple(case['x'].shape)}")


def test_same_seed_gives_the_same_sample_as_before():
    from funcdiff.noise import GaussianRandomField
    from funcdiff.sampling import sample

    entry = _fixture()["2d"]
    denoiser = build_denoiser(entry["config"]).eval()
    denoiser.load_state_dict(entry["state_dict"])
    noise = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.1)
    with torch.no_grad():
        x = sample(denoiser, (2, 2, 16, 12), noise, steps=6, solver="heun", seed=3)
    torch.testing.assert_close(x, entry["sample"], rtol=1e-5, atol=1e-5)
