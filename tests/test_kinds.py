"""The model-kind contract: one registry lookup per config name, each kind a class of the contract, wrong verbs
refused by the kind, moved names still importable (with a DeprecationWarning naming the new path)."""

from __future__ import annotations

import importlib

import pytest

from funcdiff.config import FORECAST_KINDS, RunConfig, config_from_dict
from funcdiff.errors import UserError
from funcdiff.kinds import KINDS, model_kind
from funcdiff.kinds.base import ROLES, ModelKind


def test_the_registry_holds_one_contract_class_per_config_name():
    assert tuple(KINDS) == tuple(FORECAST_KINDS)
    for name in KINDS:
        cls = KINDS[name]
        assert issubclass(cls, ModelKind) and cls.name == name and cls.role in ROLES
    with pytest.raises(KeyError, match="valid"):
        KINDS["flow"]


def test_model_kind_of_a_config_is_an_instance_that_owns_the_layout():
    cfg = config_from_dict({"forecast": {"kind": "rolling", "history": 2, "horizon": 3}})
    kind = model_kind(cfg)
    assert isinstance(kind, KINDS["rolling"])
    mc = kind.model_config(2)
    assert (mc["in_channels"], mc["cond_channels"], mc["noise_per_channel"]) == (6, 4, True)
    assert cfg.model_config(2) == mc
    assert model_kind(RunConfig()).model_config(3)["in_channels"] == 3


@pytest.mark.parametrize("name, wanted, text", [
    ("none", "forecaster", "not a forecaster"), ("rolling", "field", "is a forecaster"),
    ("super_resolution", "forecaster", "super-resolution model, not a forecaster"),
    ("trajectory", "super_resolution", "not a super-resolution model")])
def test_a_kind_refuses_the_verbs_it_does_not_serve(name, wanted, text):
    with pytest.raises(UserError, match=text):
        KINDS[name].require(wanted, "ckpt.pt")
    KINDS[name].require(KINDS[name].role, "ckpt.pt")


@pytest.mark.parametrize("old, name, new", [
    ("funcdiff.training.trajectory", "TrajectoryCoder", "funcdiff.kinds.trajectory"),
    ("funcdiff.training.trajectory", "CoefficientNoise", "funcdiff.kinds.trajectory"),
    ("funcdiff.training.super_resolution", "SuperResolutionCoder", "funcdiff.kinds.super_resolution"),
    ("funcdiff.tasks.trajectory", "TrajectoryDiffusion", "funcdiff.kinds.trajectory")])
def test_moved_names_still_import_with_a_deprecation_naming_the_new_path(old, name, new):
    with pytest.warns(DeprecationWarning, match=new):
        obj = getattr(importlib.import_module(old), name)
    assert obj is getattr(importlib.import_module(new), name)
