"""The ``transform:`` config section: identity by default, and bit-identical training with it spelled out."""

import pytest
import torch

from funcdiff.config import TransformConfig, config_from_dict
from funcdiff.training import Trainer


def tiny_config(out_dir, **extra):
    return config_from_dict({
        "name": "tiny",
        "data": {"resolution": 16, "num_samples": 32, "test_fraction": 0.25},
        "model": {"n_modes": [4, 4], "hidden_channels": 8, "n_layers": 1, "emb_dim": 8, "norm_groups": 4},
        "train": {"steps": 4, "batch_size": 8, "warmup_steps": 2, "log_every": 0, "eval_every": 0,
                  "checkpoint_every": 0, "out_dir": str(out_dir)},
        **extra,
    })


def test_training_with_transform_identity_is_bit_identical_to_the_physical_path(tmp_path):
    plain = Trainer.from_config(tiny_config(tmp_path / "a"), progress=False)
    plain.fit()
    spelled = Trainer.from_config(tiny_config(tmp_path / "b", transform={"kind": "identity"}), progress=False)
    spelled.fit()
    assert plain.config.transform == spelled.config.transform == TransformConfig()
    for a, b in zip(plain.model.state_dict().values(), spelled.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(plain.ema.state_dict().values(), spelled.ema.state_dict().values()):
        assert torch.equal(a, b)


def test_transform_section_round_trips_and_rejects_unknown_kinds(tmp_path):
    config = tiny_config(tmp_path, transform={"kind": "wavelet", "levels": 2, "axes": ["time", "x"]})
    assert config.transform.axes == ("time", "x")
    assert config_from_dict(config.to_dict()).transform == config.transform
    assert config.replace(["transform.levels=3"]).transform.levels == 3
    with pytest.raises(ValueError, match="identity"):
        tiny_config(tmp_path, transform={"kind": "fourier"})
    with pytest.raises(ValueError, match="levls"):
        tiny_config(tmp_path, transform={"levls": 2})


def test_wavelet_section_builds_the_transform(tmp_path):
    pytest.importorskip("ptwt")
    from funcdiff.transforms import WaveletTransform, build_transform

    config = tiny_config(tmp_path, transform={"kind": "wavelet", "wavelet": "haar", "levels": 2, "axes": ["x", "y"]})
    transform = build_transform(**config.transform.options())
    assert isinstance(transform, WaveletTransform)
    assert transform.forward(torch.zeros(1, 1, 16, 16)).shape == (1, 16, 4, 4)
    assert build_transform(**TransformConfig().options()).state_dict() == {"kind": "identity"}
