"""The model-kind contract: one registry lookup per config name, each kind a class of the contract, wrong verbs
refused by the kind, moved names still importable (with a DeprecationWarning naming the new path)."""

from __future__ import annotations

import importlib

import pytest
import torch

from funcdiff.cli.sample import sample_checkpoint
from funcdiff.config import FORECAST_KINDS, RunConfig, config_from_dict
from funcdiff.errors import UserError
from funcdiff.kinds import KINDS, model_kind
from funcdiff.kinds.autoregressive import AutoregressiveKind
from funcdiff.kinds.base import ROLES, ModelKind
from funcdiff.sampling import get_solver
from funcdiff.tasks.forecast import forecast, load_forecaster
from funcdiff.training import Trainer


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


class TwoStepKind(AutoregressiveKind):
    """A kind the package does not know: the autoregressive layout, rolled out with two Euler steps per block."""

    name = "two_step"

    @classmethod
    def schedule(cls, fc, steps_per_frame, solver, like):
        s = fc.sample
        return torch.tensor([s.sigma_max, 1.0, 0.0], dtype=torch.float64), get_solver("euler")

    @classmethod
    def nfe_per_frame(cls, forecast, steps_per_frame, solver="heun"):
        return 2.0 / forecast.horizon


def test_a_new_kind_is_one_class_and_one_registry_entry(tmp_path, monkeypatch):
    """Train, checkpoint, load and forecast a kind registered from outside the package: nothing branches on names."""
    import funcdiff.config
    import funcdiff.kinds

    monkeypatch.setitem(funcdiff.kinds._PATHS, "two_step", f"{__name__}:TwoStepKind")
    monkeypatch.setattr(funcdiff.config, "FORECAST_KINDS", (*funcdiff.config.FORECAST_KINDS, "two_step"))
    gen = torch.Generator().manual_seed(0)
    traj = torch.randn(6, 1, 1, 16, generator=gen).repeat(1, 1, 5, 1)  # (N, C, T, X): constant in time
    cfg = config_from_dict({
        "data": {"source": "file", "path": "unused.h5", "channels": ["u"], "dim": 1, "test_fraction": 0.2},
        "model": {"n_modes": [4], "hidden_channels": 8, "n_layers": 1, "emb_dim": 8, "norm_groups": 4},
        "train": {"steps": 2, "batch_size": 4, "warmup_steps": 1, "out_dir": str(tmp_path / "run"), "log_every": 0,
                  "eval_every": 0, "checkpoint_every": 0},
        "forecast": {"kind": "two_step", "history": 1, "horizon": 2}})
    trainer = Trainer.from_config(cfg, fields=traj, progress=False)
    assert isinstance(trainer.kind, TwoStepKind) and trainer.model_config["cond_channels"] == 1
    trainer.fit()
    trainer.save_checkpoint()
    fc = load_forecaster(tmp_path / "run")
    assert fc.model_kind is TwoStepKind
    run = forecast(fc, traj[0], 3, members=2, seed=0)
    assert run.nfe_per_frame == 1.0 and run.to_tensor().shape == (1, 2, 1, 3, 16)
    # CUDA graphs wrap the conditional denoiser; off a GPU the wrapper calls it eagerly: the same forecast
    from funcdiff.models.graphs import GraphedDenoiser
    from funcdiff.tasks.forecast import with_cuda_graphs

    graphed = fc.model_kind.graphed(fc)
    assert isinstance(graphed.denoiser, GraphedDenoiser) and graphed.model_kind is TwoStepKind
    assert torch.equal(forecast(graphed, traj[0], 3, members=2, seed=0).to_tensor(), run.to_tensor())
    with pytest.raises(ValueError, match="cuda_graphs needs a forecaster on a CUDA device"):
        with_cuda_graphs(fc)
    with pytest.raises(UserError, match="is a forecaster"):
        sample_checkpoint(tmp_path / "run", 16, 1)
