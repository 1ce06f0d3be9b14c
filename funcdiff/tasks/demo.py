"""``funcdiff demo``: the whole pipeline on built-in data, in about five minutes on two CPU cores.

1. Draw synthetic non-Gaussian periodic fields (fronts and bumps; no files needed) at ``resolution``².
2. Train a small noise-conditioned FNO denoiser with GRF noise (EDM loss, EMA, checkpoints).
3. Sample at the training resolution and at twice it with the *same* checkpoint; write netCDF files and a PNG
   comparing samples with data (fields and radially averaged power spectra).
4. Reconstruct a held-out field at twice the training resolution from 3 % of its points by guided posterior
   sampling; write the posterior (mean, std) to netCDF and a PNG with truth, sensors, posterior mean,
   standard deviation and error, beside piecewise-linear interpolation of the same sensors.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from funcdiff.config import RunConfig, config_from_dict
from funcdiff.data import make_synthetic_fields
from funcdiff.guidance import SparseObservation, guided_sample, random_sensors
from funcdiff.io.netcdf import add_field, fields_to_dataset, write_netcdf
from funcdiff.io.plots import plot_panels, plot_samples_vs_data
from funcdiff.metrics import log_spectrum_distance, relative_l2
from funcdiff.sampling import sample
from funcdiff.schedules import SCHEDULE_KEYS
from funcdiff.tasks.baselines import interpolate_observations
from funcdiff.tasks.problems import Task
from funcdiff.tasks.solve import Posterior
from funcdiff.training import Trainer

log = logging.getLogger(__name__)

# Built-in data: tanh fronts of a large-scale periodic GRF plus one smooth bump (funcdiff.data.synthetic),
# non-Gaussian, with features large enough that 3 % of a 64² grid constrains them.
DEMO_FIELDS = {"n_modes": 3, "n_bumps": 1}
# The reconstruction as a task, so that posterior.nc has the layout of `funcdiff solve`'s output.
DEMO_TASK = Task(name="synthetic-reconstruct", problem="synthetic", direction="reconstruct", channels=("a",),
                 observed=("a",), target=("a",), grid="periodic",
                 description="reconstruct a synthetic field from sparse point values")


def demo_fields(num_samples: int, resolution: int, seed: int) -> torch.Tensor:
    """The demo's synthetic fields, the same continuous functions at every resolution; (B, 1, n, n)."""
    return make_synthetic_fields(num_samples, resolution, torch.Generator().manual_seed(seed), **DEMO_FIELDS)


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo; the defaults take about five minutes on two CPU cores, ``quick()`` seconds."""

    resolution: int = 32
    num_samples: int = 512
    train_steps: int = 1500
    batch_size: int = 16
    hidden_channels: int = 32
    n_modes: int = 12
    sample_steps: int = 24
    num_generated: int = 8
    obs_fraction: float = 0.03
    posterior_samples: int = 8
    seed: int = 0
    device: str = "auto"

    @classmethod
    def quick(cls, **overrides) -> "DemoSettings":
        """CI-sized settings: a few hundred training steps on 16² fields."""
        base = dict(resolution=16, num_samples=96, train_steps=60, batch_size=8, hidden_channels=8, n_modes=6,
                    sample_steps=6, num_generated=4, posterior_samples=2, obs_fraction=0.1)
        return cls(**{**base, **overrides})


def demo_config(settings: DemoSettings, out_dir: Path) -> RunConfig:
    """The run config the demo trains with (saved beside its checkpoints)."""
    s = settings
    return config_from_dict({
        "name": "demo-synthetic",
        "data": {"source": "synthetic", "channels": ["a"], "resolution": s.resolution,
                 "num_samples": s.num_samples, "test_fraction": 0.125, "seed": s.seed},
        "noise": {"smoothness": 2.0, "length_scale": 0.05},
        "model": {"backbone": "fno", "n_modes": [s.n_modes, s.n_modes], "hidden_channels": s.hidden_channels,
                  "n_layers": 4},
        "train": {"steps": s.train_steps, "batch_size": s.batch_size, "lr": 2e-3,
                  "warmup_steps": max(1, s.train_steps // 20), "eval_every": max(1, s.train_steps // 5),
                  "checkpoint_every": max(1, s.train_steps // 4), "log_every": 25, "seed": s.seed,
                  "out_dir": str(out_dir / "run"), "device": s.device},
        "sample": {"steps": s.sample_steps, "solver": "heun"},
    })


def run_demo(settings: DemoSettings, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Train, sample at two resolutions and reconstruct from sparse sensors; returns a summary dict.

    Writes into ``out_dir``: ``run/`` (checkpoints, log.jsonl, config.yaml), ``samples_<n>.nc`` for the
    training resolution n and 2n, ``samples.png``, ``posterior.nc``, ``reconstruction.png``, ``summary.json``.
    Re-running with the same ``out_dir`` resumes training from the newest checkpoint.
    """
    out_dir = Path(out_dir)
    config = demo_config(settings, out_dir)
    fields = demo_fields(settings.num_samples, settings.resolution, settings.seed)
    trainer = Trainer.from_config(config, fields=fields, progress=progress)
    trainer.resume()
    history = trainer.fit()
    if trainer.step > 0 and not any(True for _ in (out_dir / "run" / "checkpoints").glob("*.pt")):
        trainer.save_checkpoint()
    summary = {"train_steps": trainer.step, "val_loss_first": _first_val(trainer, history),
               "val_loss_last": trainer.validation_loss(ema=True)}
    summary.update(_sample_two_resolutions(trainer, settings, out_dir, progress))
    summary.update(_reconstruct(trainer, settings, out_dir, progress))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _first_val(trainer: Trainer, history: list[dict]) -> float | None:
    vals = [r["val_loss_ema"] for r in history if "val_loss_ema" in r]
    return vals[0] if vals else None


def _schedule(trainer: Trainer) -> dict:
    """The run's schedule (its config's ``sample`` section), as every sampler entry point reads it."""
    return {k: float(getattr(trainer.config.sample, k)) for k in SCHEDULE_KEYS}


def _sample_two_resolutions(trainer: Trainer, s: DemoSettings, out_dir: Path, progress: bool) -> dict:
    """Samples at n² and (2n)² from the EMA denoiser, decoded to data units; netCDF + comparison PNG."""
    denoiser = trainer.ema.ema_model.eval()
    data = demo_fields(s.num_generated, s.resolution, s.seed + 99)
    rows, result = {"data": data}, {}
    for n in (s.resolution, 2 * s.resolution):
        x = sample(denoiser, (s.num_generated, 1, n, n), trainer.noise, steps=s.sample_steps, solver="heun",
                   seed=s.seed, device=trainer.device, progress=progress, **_schedule(trainer))
        fields = trainer.normalizer.decode(x.cpu())
        attrs = {"resolution": n, "training_resolution": s.resolution, "solver": "heun", "steps": s.sample_steps,
                 "seed": s.seed, "config": trainer.config.to_dict()}
        write_netcdf(fields_to_dataset(fields, trainer.channel_names, attrs), out_dir / f"samples_{n}.nc",
                     title=f"funcdiff demo samples at {n} points per axis")
        rows[f"samples {n}²"] = fields
        result[f"spectrum_distance_{n}"] = log_spectrum_distance(fields, data)
    noise = trainer.noise.sample((s.num_generated, 1, s.resolution, s.resolution),
                                 generator=torch.Generator().manual_seed(s.seed))
    result["spectrum_distance_noise"] = log_spectrum_distance(noise, data)
    plot_samples_vs_data(rows, out_dir / "samples.png", channel_name="a")
    return result


def _reconstruct(trainer: Trainer, s: DemoSettings, out_dir: Path, progress: bool) -> dict:
    """Guided posterior sampling of a held-out field at 2n² from ``obs_fraction`` of its grid points."""
    n = 2 * s.resolution
    truth = demo_fields(1, n, s.seed + 12345)
    coords = random_sensors(s.obs_fraction, (n, n), generator=torch.Generator().manual_seed(s.seed + 1))
    obs = SparseObservation(coords, channels=(0,), noise_std=0.0, grid="periodic", channel_names=("a",))
    obs = obs.with_values(obs.observe(truth))
    x = guided_sample(trainer.ema.ema_model.eval(), trainer.noise, obs, (s.posterior_samples, 1, n, n),
                      steps=s.sample_steps, seed=s.seed, decode=trainer.normalizer.decode,
                      sigma_data=float(trainer.model_config.get("sigma_data", 1.0)), device=trainer.device,
                      progress=progress, **_schedule(trainer))
    post = Posterior(DEMO_TASK, tuple(trainer.channel_names), trainer.normalizer.decode(x.cpu()), obs, truth,
                     tuple(trainer.channel_names))
    mean, std = post.mean, post.std
    interpolated = interpolate_observations(coords, obs.values, (n, n), grid="periodic")
    result = {"reconstruction_resolution": n, "num_sensors": obs.num_sensors,
              "reconstruction_rel_l2": relative_l2(mean, truth).item(),
              "reconstruction_rel_l2_single_sample": relative_l2(post.samples[:1], truth).item(),
              "interpolation_rel_l2": relative_l2(interpolated, truth).item(),
              "reconstruction_obs_rmse": (obs.observe(mean) - obs.values).pow(2).mean().sqrt().item()}
    post.settings = {**result, "obs_fraction": s.obs_fraction, "seed": s.seed, "steps": s.sample_steps,
                     "solver": "heun", "training_resolution": s.resolution, "resolution": [n, n]}
    ds = add_field(post.to_dataset(), "a_interpolated", interpolated[0, 0], "a")
    write_netcdf(ds, out_dir / "posterior.nc", title="funcdiff demo posterior samples")
    panels = [("truth", truth[0, 0]), (f"{obs.num_sensors} sensors", truth[0, 0]),
              (f"posterior mean (err {result['reconstruction_rel_l2']:.2f})", mean[0, 0]),
              ("posterior std", std[0, 0]), ("|mean - truth|", (mean - truth)[0, 0].abs()),
              (f"interpolation (err {result['interpolation_rel_l2']:.2f})", interpolated[0, 0])]
    plot_panels(panels, out_dir / "reconstruction.png", cmaps=("RdBu_r", "RdBu_r", "RdBu_r", "viridis", "magma"),
                points=coords, point_panels=(1,), shared=(0, 1, 2, 5), reference=0)
    return result
