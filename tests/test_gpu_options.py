"""GPU options checked on the CPU where possible: bf16 autocast through the FNO denoiser and its loss, and the
``train.compile`` wiring (with dynamo's eager backend, which traces like the GPU path but needs no compiler)."""

from __future__ import annotations

import functools

import torch

from funcdiff.config import config_from_dict
from funcdiff.training import Trainer


def _config(tmp_path, **train):
    return config_from_dict({
        "data": {"resolution": 16, "num_samples": 16, "test_fraction": 0.25},
        "model": {"n_modes": [4, 4], "hidden_channels": 8, "n_layers": 1, "emb_dim": 8, "norm_groups": 4},
        "train": {"steps": 3, "batch_size": 4, "warmup_steps": 1, "log_every": 0, "eval_every": 0,
                  "checkpoint_every": 0, "out_dir": str(tmp_path), "device": "cpu", **train}})


def test_bf16_autocast_loss_and_gradients_track_fp32(tmp_path):
    """The CUDA branch of ``Trainer._autocast`` runs the forward pass under bf16 autocast; on the CPU the same
    autocast (device "cpu") must run the FNO (FFTs included) and give a loss and gradients close to fp32."""
    trainer = Trainer.from_config(_config(tmp_path), progress=False)
    x = trainer.train_x[:4]
    draws = trainer.loss_fn.draw_batch(x, torch.Generator().manual_seed(0))

    def loss_and_grads(autocast: bool):
        trainer.model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = trainer.loss_fn(trainer.model, x, draws=draws)
        loss.backward()
        return float(loss.detach()), torch.cat([p.grad.flatten().real.float() for p in trainer.model.parameters()
                                       if p.grad is not None])

    loss32, grad32 = loss_and_grads(False)
    loss16, grad16 = loss_and_grads(True)
    assert torch.isfinite(grad16).all()
    assert abs(loss16 - loss32) < 0.05 * abs(loss32)
    cosine = torch.nn.functional.cosine_similarity(grad16, grad32, dim=0)
    assert cosine > 0.98, float(cosine)
    with trainer._autocast():  # bf16 off (default): no autocast anywhere
        assert not torch.is_autocast_enabled("cpu")
    trainer_bf16 = Trainer.from_config(_config(tmp_path, bf16=True), progress=False)
    with trainer_bf16._autocast():  # train.bf16 autocasts on the CPU too
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_bf16_training_loss_decreases_as_fp32s_does(tmp_path):
    """``train.bf16`` on the CPU: 40 steps of a tiny model lower the fixed-draw validation loss as float32 does
    (same seed, same data order and draws): both decrease, and bf16's decrease is within 10 % of float32's."""
    drops = {}
    for bf16 in (False, True):
        trainer = Trainer.from_config(_config(tmp_path / str(bf16), bf16=bf16, steps=40, lr=3e-3, warmup_steps=2),
                                      progress=False)
        before = trainer.validation_loss()
        trainer.fit()
        drops[bf16] = before - trainer.validation_loss()
    assert drops[False] > 0 and drops[True] > 0, drops
    assert abs(drops[True] - drops[False]) < 0.1 * drops[False], drops


def test_bf16_sampling_is_close_to_float32(tmp_path):
    """``sample(..., bf16=True)`` (``sample.bf16``) runs the denoiser under bf16 autocast and stays within 3 %
    relative L2 of the float32 sample of the same seed; the state it returns is float32."""
    from funcdiff.sampling import sample

    trainer = Trainer.from_config(_config(tmp_path), progress=False)
    trainer.fit()
    model = trainer.model.eval()
    out = {bf16: sample(model, (2, 1, 16, 16), trainer.noise, steps=6, seed=3, bf16=bf16) for bf16 in (False, True)}
    assert out[True].dtype == torch.float32
    assert not torch.equal(out[True], out[False])  # autocast did act
    error = float((out[True] - out[False]).norm() / out[False].norm())
    assert error < 0.03, error


def test_compile_option_wraps_the_network_and_trains_like_eager(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    eager = Trainer.from_config(_config(tmp_path / "eager"), progress=False)
    eager.fit()
    compiled = Trainer.from_config(_config(tmp_path / "compiled", compile=True), progress=False)
    assert compiled.network is not compiled.model and hasattr(compiled.network, "_orig_mod")
    compiled.fit()
    path = compiled.save_checkpoint()
    state = torch.load(path, weights_only=True)["model"]
    assert not any(k.startswith("_orig_mod") for k in state)  # checkpoints hold the plain model's names
    for name, value in eager.model.state_dict().items():
        torch.testing.assert_close(compiled.model.state_dict()[name], value, rtol=0, atol=1e-6)
