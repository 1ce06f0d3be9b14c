"""Reconstruction from stations with a model trained on ERA5-like frames: an unconditional SFNO on the sphere
(frames of a store as samples), guided by 5 % of the grid observed at (latitude, longitude) stations."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torch_harmonics", reason="the SFNO backbone and the generator need the sphere extra")
dask = pytest.importorskip("dask")
pytest.importorskip("zarr")

from funcdiff.config import config_from_dict  # noqa: E402
from funcdiff.data import FieldDataset  # noqa: E402
from funcdiff.data.era5 import read_era5, write_era5_zarr  # noqa: E402
from funcdiff.tasks.era5_synthetic import write_shallow_water_era5  # noqa: E402
from funcdiff.guidance import SparseObservation, guided_sample, random_sensors  # noqa: E402
from funcdiff.io.checkpoint import load_denoiser  # noqa: E402
from funcdiff.pde.shallow_water import ShallowWaterRun  # noqa: E402
from funcdiff.training import train  # noqa: E402


def tiny_sfno_config(path, channels, out_dir, *, steps: int, log_every: int = 0):
    """The config of a tiny sphere model (sphere noise, SFNO 8 hidden channels, area-weighted loss) trained on
    the zarr store ``path`` for ``steps`` steps on the CPU, with one checkpoint and evaluation at the end."""
    return config_from_dict({
        "data": {"source": "file", "path": str(path), "channels": list(channels)},
        "noise": {"domain": "sphere", "smoothness": 2.0, "length_scale": 0.1},
        "model": {"backbone": "sfno", "n_modes": [8, 8], "hidden_channels": 8, "n_layers": 2, "emb_dim": 16,
                  "norm_groups": 4},
        "train": {"steps": steps, "batch_size": 4, "warmup_steps": 4, "lr": 3e-3, "out_dir": str(out_dir),
                  "checkpoint_every": steps, "eval_every": steps, "log_every": log_every,
                  "latitude_weighted": True, "device": "cpu"}})


def test_stations_guide_a_trained_sphere_model(tmp_path):
    with dask.config.set(scheduler="synchronous"):
        written = write_shallow_water_era5(tmp_path / "swe", ShallowWaterRun(nlat=33, spinup_days=1), days=4,
                                           layout="wb2")
        write_era5_zarr(read_era5(written["wb2"], "z500,u500"), tmp_path / "frames.zarr", res=5.625,
                        attrs={"segment": "1D"})
    frames = FieldDataset.from_file(tmp_path / "frames.zarr", channels=("z500", "u500"))
    assert frames.fields.shape == (16, 2, 32, 64)  # 4 one-day trajectories of 4 frames, every frame a sample
    config = tiny_sfno_config(tmp_path / "frames.zarr", ["z500", "u500"], tmp_path / "run", steps=40, log_every=20)
    train(config, progress=False)
    denoiser, meta = load_denoiser(tmp_path / "run", ema=False)
    assert meta.noise.as_dict()["domain"] == "sphere"

    truth = frames.fields[-1:].double()  # physical units
    g = torch.Generator().manual_seed(0)
    stations = random_sensors(0.05, (32, 64), grid="latlon", on_grid=False, generator=g)
    obs = SparseObservation(coords=stations, channels=(0, 1), noise_std=[20.0, 0.5], grid="latlon")
    obs = obs.with_values(obs.observe(truth))
    decode = meta.normalizer.decode
    kwargs = dict(steps=12, dtype=torch.float32, seed=3, sigma_max=20.0)
    with torch.no_grad():
        guided = decode(guided_sample(denoiser, meta.noise, obs, (4, 2, 32, 64), decode=decode, **kwargs)).double()
        free = decode(guided_sample(denoiser, meta.noise, None, (4, 2, 32, 64), **kwargs)).double()
    misfit = [float(obs.residual(x).pow(2).mean(-1).mean(0)[0]) for x in (guided, free)]
    # measured: mean squared z500 residual 6.0e2 guided (rms 25 m² s⁻², the station noise is 20) vs 2.1e7 unguided
    assert torch.isfinite(guided).all() and misfit[0] < 1e-2 * misfit[1] and misfit[0] < (3 * 20.0) ** 2, misfit
