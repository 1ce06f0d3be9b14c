"""Training: LR schedule, EMA, the EDM loss against its closed form, learning real structure, exact resume,
clear data errors, and the `funcdiff train` / `funcdiff sample` verbs end to end."""

import argparse
import json
import math

import pytest
import torch
import xarray as xr

from funcdiff.config import config_from_dict
from funcdiff.noise import GaussianRandomField
from funcdiff.sampling import sample
from funcdiff.training import EMA, EDMLoss, Trainer, ema_decay_at, warmup_cosine
from funcdiff.training.schedule import WarmupCosineSchedule



def tiny_config(out_dir, **train):
    return config_from_dict({
        "name": "tiny",
        "data": {"resolution": 16, "num_samples": 128, "test_fraction": 0.25},
        "noise": {"smoothness": 2.0, "length_scale": 0.1},
        "model": {"n_modes": [6, 6], "hidden_channels": 16, "n_layers": 2, "emb_dim": 16, "norm_groups": 4,
                  "sigma_data": 1.0},
        "train": {"steps": 300, "batch_size": 16, "lr": 3e-3, "warmup_steps": 20, "ema_decay": 0.99,
                  "log_every": 0, "eval_every": 0, "checkpoint_every": 0, "out_dir": str(out_dir), **train},
        "sample": {"steps": 8, "solver": "heun"},
    })


def radial_log_spectrum(x):
    """Log of the radially averaged power spectrum of fields (B, C, n, n), shells |k| = 0 .. n/2 - 1."""
    n = x.shape[-1]
    power = (torch.fft.fftn(x.double(), dim=(-2, -1), norm="ortho").abs() ** 2).mean((0, 1))
    k = torch.fft.fftfreq(n, 1 / n)
    shell = (k[:, None] ** 2 + k[None, :] ** 2).sqrt().round().long().flatten()
    total = torch.bincount(shell, power.flatten())
    count = torch.bincount(shell)
    return (total / count)[: n // 2].log()


def test_warmup_then_cosine_at_known_steps():
    lr = lambda s: warmup_cosine(s, 1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert lr(0) == pytest.approx(0.1) and lr(4) == pytest.approx(0.5) and lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the cosine
    assert lr(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr(110) == pytest.approx(0.1) and lr(500) == pytest.approx(0.1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)
    schedule = WarmupCosineSchedule(opt, 2.0, 10, 110, 0.1)
    for _ in range(35):
        schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2 * lr(35))
    restored = WarmupCosineSchedule(opt, 2.0, 10, 110, 0.1)
    restored.load_state_dict(schedule.state_dict())
    assert restored.lr() == schedule.lr()


def test_ema_update_formula():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    start = [p.detach().clone() for p in ema.ema_model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)  # first update: beta = min(0.9, 1/10) = 0.1
    for p0, p_ema, p in zip(start, ema.ema_model.parameters(), model.parameters()):
        torch.testing.assert_close(p_ema, 0.1 * p0 + 0.9 * p)
    assert ema_decay_at(0, 0.9) == pytest.approx(0.1) and ema_decay_at(10_000, 0.9) == 0.9
    ema.num_updates = 10_000
    before = [p.detach().clone() for p in ema.ema_model.parameters()]
    ema.update(model)
    for b, p_ema, p in zip(before, ema.ema_model.parameters(), model.parameters()):
        torch.testing.assert_close(p_ema, 0.9 * b + 0.1 * p)
    assert not any(p.requires_grad for p in ema.ema_model.parameters())


class IdentityDenoiser(torch.nn.Module):
    """D(y; sigma) = y, with the EDM loss weight for sigma_data."""

    def __init__(self, sigma_data):
        super().__init__()
        self.sigma_data = sigma_data

    def forward(self, x, sigma):
        return x

    def loss_weight(self, sigma):
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2


@pytest.mark.parametrize("n", [16, 33])
def test_edm_loss_matches_closed_form_at_every_resolution(n):
    # For D(y) = y the loss is λ(σ)σ²·mean(ε²) -> E[(σ² + σ_d²)/σ_d²] = 1 + exp(2 P_mean + 2 P_std²)/σ_d²,
    # as the GRF has unit pointwise variance on every grid: the loss means the same at every resolution.
    P_mean, P_std, sigma_data = -1.0, 0.5, 0.5
    loss = EDMLoss(GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.1), P_mean, P_std)
    x = torch.randn(4000, 1, n, n, generator=torch.Generator().manual_seed(0))
    value = loss(IdentityDenoiser(sigma_data), x, torch.Generator().manual_seed(1))
    expected = 1 + math.exp(2 * P_mean + 2 * P_std**2) / sigma_data**2
    assert float(value) == pytest.approx(expected, rel=0.03)


def test_training_lowers_validation_loss_and_learns_the_spectrum(tmp_path):
    trainer = Trainer.from_config(tiny_config(tmp_path, eval_every=100, log_every=50), progress=False)
    initial = trainer.validation_loss()
    history = trainer.fit()
    evaluated = [r for r in history if "val_loss" in r]
    assert [r["step"] for r in evaluated] == [100, 200, 300]
    assert evaluated[-1]["val_loss_ema"] < 0.85 * initial
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [50, 100, 150, 200, 250, 300]
    assert {"step", "loss", "lr", "grad_norm", "seconds"} <= set(logged[0]) and "val_loss" in logged[1]

    x = sample(trainer.ema.ema_model, (64, 1, 16, 16), trainer.noise, steps=10, solver="heun", seed=0)
    noise = trainer.noise.sample((64, 1, 16, 16), generator=torch.Generator().manual_seed(3))
    target = radial_log_spectrum(trainer.train_x)
    d_samples = (radial_log_spectrum(x) - target).abs().mean()
    d_noise = (radial_log_spectrum(noise) - target).abs().mean()
    assert d_samples < 0.4 * d_noise, (float(d_samples), float(d_noise))
    assert (tmp_path / "checkpoints" / "step_00000300.pt").exists() and (tmp_path / "config.yaml").exists()


def test_resume_reproduces_an_uninterrupted_run_exactly(tmp_path):
    straight = Trainer.from_config(tiny_config(tmp_path / "a", steps=12, warmup_steps=4), progress=False)
    straight.fit()
    config = tiny_config(tmp_path / "b", steps=12, warmup_steps=4, checkpoint_every=5, log_every=1)
    interrupted = Trainer.from_config(config, progress=False)
    step = interrupted.train_step

    def crash_after_seven():
        if interrupted.step == 7:
            raise KeyboardInterrupt  # killed mid-run: the newest checkpoint is step 5, the log reaches step 7
        return step()

    interrupted.train_step = crash_after_seven
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = Trainer.from_config(config, progress=False)
    assert resumed.resume().name == "step_00000005.pt" and resumed.step == 5
    resumed.fit()
    logged = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 13))  # records of the lost steps 6-7 were dropped on resume
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)
    opt_a, opt_b = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    for key, state in opt_a["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_b["state"][key][name]))
    assert opt_a["param_groups"][0]["lr"] == opt_b["param_groups"][0]["lr"]
    assert torch.equal(straight.generator.get_state(), resumed.generator.get_state())


def test_data_errors_are_clear(tmp_path):
    config = tiny_config(tmp_path)
    fields = torch.randn(32, 1, 16, 16)
    fields[3, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        Trainer.from_config(config, fields=fields)
    with pytest.raises(ValueError, match="2 channels but data.channels names 1"):
        Trainer.from_config(config, fields=torch.randn(32, 2, 16, 16))
    with pytest.raises(ValueError, match="spatial dims"):
        Trainer.from_config(config, fields=torch.randn(32, 1, 16))
    with pytest.raises(ValueError, match="batch_size=64 is larger"):
        Trainer.from_config(config.replace(["train.batch_size=64"]), fields=torch.randn(32, 1, 16, 16))


def run_cli(argv):
    """``funcdiff.cli.main``; until every verb module exists, a parser with just train and sample."""
    from funcdiff import cli

    try:
        return cli.main(argv)
    except ModuleNotFoundError as err:
        if "funcdiff.cli." not in str(err):
            raise
    from funcdiff.cli import sample as sample_verb, train as train_verb

    parser = argparse.ArgumentParser(prog="funcdiff")
    subparsers = parser.add_subparsers(dest="verb", required=True)
    train_verb.register(subparsers)
    sample_verb.register(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_train_then_sample_to_netcdf(tmp_path):
    config_path = tmp_path / "tiny.yaml"
    import yaml

    config_path.write_text(yaml.safe_dump(tiny_config(tmp_path / "unused").to_dict()))
    run = tmp_path / "run"
    assert run_cli(["train", "--config", str(config_path), "--set", "train.steps=6", "--set", "data.num_samples=40",
                    "--set", "data.channels=[a, u]", "--out-dir", str(run), "--seed", "3", "--device", "cpu",
                    "--no-progress"]) == 0
    out = tmp_path / "samples.nc"
    assert run_cli(["sample", "--checkpoint", str(run), "--resolution", "24", "--num-samples", "3", "--seed", "1",
                    "--out", str(out), "--steps", "3", "--batch-size", "2", "--no-progress"]) == 0
    with xr.open_dataset(out) as ds:
        assert set(ds.data_vars) == {"a", "u"} and ds["a"].dims == ("sample", "x", "y")
        assert ds.sizes == {"sample": 3, "x": 24, "y": 24}
        assert ds["x"].values[1] == pytest.approx(1 / 24)
        assert ds.attrs["checkpoint_step"] == 6 and ds.attrs["seed"] == 1
        assert json.loads(ds.attrs["config"])["train"]["seed"] == 3 and json.loads(ds.attrs["noise"])["smoothness"] == 2
        assert bool(torch.isfinite(torch.as_tensor(ds["u"].values)).all())
    assert (tmp_path / "samples_a.png").stat().st_size > 0 and (tmp_path / "samples_u.png").stat().st_size > 0
    with pytest.raises(ValueError, match="too small for n_modes"):
        run_cli(["sample", "--checkpoint", str(run), "--resolution", "6", "--num-samples", "1",
                 "--out", str(tmp_path / "bad.nc"), "--no-progress"])
    assert not (tmp_path / "bad.nc").exists()


def test_checkpoint_records_the_pde_of_a_generated_data_file(tmp_path):
    from funcdiff.data import generate_to_hdf5
    from funcdiff.io.checkpoint import load_denoiser
    from funcdiff.pde import get_problem

    path = generate_to_hdf5(get_problem("poisson"), tmp_path / "poisson.h5", num_samples=12, resolution=12,
                            batch_size=12, progress=False)
    config = tiny_config(tmp_path / "run", steps=2, batch_size=4).replace(
        ["data.source=file", f"data.path={path}", "data.channels=[a, u]", "model.n_modes=[4, 4]"])
    trainer = Trainer.from_config(config, progress=False)
    trainer.fit()
    _, meta = load_denoiser(tmp_path / "run")
    assert meta.extra["pde"] == "poisson" and meta.channel_names == ("a", "u")
