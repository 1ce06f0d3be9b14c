"""Checkpoints: atomic files, weights_only round trip with metadata, clear errors for bad files/architectures."""

import pytest
import torch

from funcdiff.config import config_from_dict
from funcdiff.io.checkpoint import (FORMAT, latest_checkpoint, list_checkpoints, load_denoiser, load_module_state,
                                    read_checkpoint, save_checkpoint)
from funcdiff.training import Trainer
from funcdiff.utils import fourier_resample



def tiny_config(out_dir, hidden=8, **train):
    return config_from_dict({
        "name": "ckpt-test",
        "data": {"resolution": 16, "num_samples": 24, "channels": ["a", "u"], "test_fraction": 0.25},
        "model": {"n_modes": [6, 6], "hidden_channels": hidden, "n_layers": 1, "emb_dim": 8, "norm_groups": 4},
        "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "log_every": 0, "eval_every": 0,
                  "checkpoint_every": 2, "keep_checkpoints": 2, "out_dir": str(out_dir), **train},
    })


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    trainer = Trainer.from_config(tiny_config(out), progress=False)
    trainer.fit()
    return trainer, out


def test_checkpoints_are_written_atomically_and_pruned(trained):
    trainer, out = trained
    names = [p.name for p in list_checkpoints(out)]
    assert names == ["step_00000002.pt", "step_00000004.pt"]
    assert latest_checkpoint(out).name == "step_00000004.pt"
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    state = read_checkpoint(latest_checkpoint(out))
    assert state["format"] == FORMAT and state["step"] == 4 and state["version"]


def test_load_denoiser_round_trip_and_metadata(trained):
    trainer, out = trained
    denoiser, meta = load_denoiser(out)  # a run directory resolves to its latest checkpoint
    x = torch.randn(3, 2, 20, 20, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.1, 1.0, 10.0])
    with torch.no_grad():
        torch.testing.assert_close(denoiser(x, sigma), trainer.ema.ema_model(x, sigma), rtol=0, atol=0)
        raw, _ = load_denoiser(latest_checkpoint(out), ema=False)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(raw.state_dict()[key], value), key
    assert meta.channel_names == ("a", "u") and meta["channel_names"] == ("a", "u")
    assert meta.resolution == (16, 16) and meta.task == "ckpt-test" and meta.step == 4
    assert meta.noise == trainer.noise and meta.model_config["in_channels"] == 2
    torch.testing.assert_close(meta.normalizer.mean, trainer.normalizer.mean)
    assert meta.config["train"]["steps"] == 4 and meta.config["data"]["channels"] == ["a", "u"]
    # the same weights define the same operator on a finer grid: a band-limited input agrees after resampling
    smooth = fourier_resample(fourier_resample(x, 8), 20)
    with torch.no_grad():
        fine = denoiser(fourier_resample(smooth, 40), sigma)
        coarse = denoiser(smooth, sigma)
    torch.testing.assert_close(fine[..., ::2, ::2], coarse, rtol=0.05, atol=0.05)


def test_truncated_and_foreign_files_are_clear_errors(trained, tmp_path):
    _, out = trained
    data = latest_checkpoint(out).read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    for path in (truncated, garbage, foreign):
        with pytest.raises(ValueError, match="is truncated or not a funcdiff checkpoint"):
            load_denoiser(path)
    with pytest.raises(FileNotFoundError):
        load_denoiser(tmp_path / "missing.pt")


def test_other_architecture_is_a_clear_error(trained, tmp_path):
    _, out = trained
    wider = Trainer.from_config(tiny_config(out, hidden=12), progress=False)
    with pytest.raises(ValueError, match=r"do not match the model architecture.*shape mismatches.*backbone"):
        wider.resume()
    deeper = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"missing keys \['1\.bias', '1\.weight'\]"):
        load_module_state(deeper, torch.nn.Sequential(torch.nn.Linear(2, 2)).state_dict(), "model", "x.pt")


def test_save_is_atomic_when_serialisation_fails(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"step": 1, "model": {}, "ema": {}, "meta": "{}"})
    before = path.read_bytes()

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"step": 2, "model": {"w": Unsaveable()}, "ema": {}, "meta": "{}"})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["ck.pt"]
