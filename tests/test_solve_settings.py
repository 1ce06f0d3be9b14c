"""The posterior-method registry and SolveSettings: one lookup per method, a frozen settings object that the old
keyword calls of ``solve`` still reach, and equal results whichever way the settings come."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from funcdiff.tasks import SolveSettings, load_truth, make_observation, solve
from funcdiff.errors import UserError
from funcdiff.tasks import get_task
from funcdiff.tasks.samplers import HOST_BOUND, METHODS, POSTERIOR_METHODS, check_graphable

from golden_cases import GOLDEN


def test_every_method_is_a_registered_factory():
    assert METHODS == ("dps", "mmps", "enkg", "dps-physics", "mmps-physics", "enkg-physics")
    assert set(POSTERIOR_METHODS) == set(METHODS) and all(callable(f) for f in POSTERIOR_METHODS.values())


@pytest.mark.parametrize("task, method, pde_guidance, graphable", [
    ("darcy-inverse", "dps", False, True), ("darcy-inverse", "mmps", False, True),
    ("darcy-forward", "dps-physics", False, True), ("darcy-forward", "mmps-physics", False, True),
    ("darcy-inverse", "dps", True, False), ("darcy-inverse", "enkg", False, False),
    ("darcy-forward", "enkg-physics", False, False), ("darcy-inverse", "dps-physics", False, False),
    ("darcy-inverse", "mmps-physics", False, False)])
def test_whether_a_method_can_be_graphed_follows_from_task_and_settings(task, method, pde_guidance, graphable):
    """Every method states, before anything is built, whether its steps wait for the host: a forward ``*-physics``
    run is dps/mmps on the input's sensors (graphable); an inverse one runs the solver on the host."""
    assert set(HOST_BOUND) == set(METHODS)
    settings = SolveSettings(method=method, pde_guidance=pde_guidance, num_samples=2)
    if graphable:
        check_graphable(get_task(task), settings)
    else:
        with pytest.raises(UserError, match=f"method '{method}' cannot be replayed from CUDA graphs here: .*host"):
            check_graphable(get_task(task), settings)


def test_settings_are_frozen_and_resolve_the_trust_region():
    s = SolveSettings(steps=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 6  # type: ignore[misc]
    assert s.kappa == 1.0 and SolveSettings(steps=50).kappa is None
    assert SolveSettings(trust_region=None, steps=5).kappa is None and SolveSettings(trust_region=2.0).kappa == 2.0
    assert SolveSettings(resolution=[8, 8]).resolution == (8, 8) and s.signature()["steps"] == 5
    with pytest.raises(TypeError, match="unknown solve settings"):
        s.updated(stepz=3)


def test_keywords_and_settings_object_give_the_same_posterior():
    truth = load_truth(GOLDEN / "cases.nc", ("a", "u"), index=1)
    obs = make_observation("darcy-forward", truth, fraction=0.3, seed=1)
    settings = SolveSettings(method="mmps", num_samples=2, steps=3, seed=1, cg_iters=2)
    a = solve(GOLDEN / "field.pt", "darcy-forward", obs, settings, truth=truth)
    b = solve(GOLDEN / "field.pt", "darcy-forward", obs, num_samples=2, steps=3, seed=1, method="mmps", cg_iters=2,
              truth=truth)
    assert torch.equal(a.samples, b.samples) and a.settings == b.settings
    assert a.settings["vjps"] == a.settings["nfe"] * (2 + 1)  # fixed CG: cg_iters + 1 batched VJPs per call
    with pytest.raises(TypeError):
        solve(GOLDEN / "field.pt", "darcy-forward", obs, stepz=3)
