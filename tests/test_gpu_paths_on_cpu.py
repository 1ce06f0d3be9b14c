"""The GPU's code paths of the row-layout backbones, checked on a CPU (CI has no GPU).

One switch, :func:`funcdiff.models.fno.cache_sized`, sends a field down the paths written for a CPU core's cache
(chunks of ``CHUNK_BYTES``, two-pass GroupNorm statistics, a multiply and an add, guidance's backward pass by
sensor columns) or down those for a GPU (one chunk of ``CUDA_CHUNK_BYTES``, one Welford ``var_mean``, one
``addcmul``, always the dense backward pass). Here the GPU's paths run on CPU tensors in float64 and must give the
CPU's answers: inference, a training step's gradients, guidance's vector-Jacobian product and whole DPS and MMPS
steps, for every backbone that runs on the row layout, with one chunk and with many. What only a GPU can check
(kernels, CUDA graphs, bf16 autocast on CUDA, timings) is in ``tests/test_cuda.py`` and
``benchmarks/gpu_smoke.sh``.
"""

from __future__ import annotations

import pytest
import torch

from funcdiff.models import build_denoiser, fno

BACKBONES = {
    "fno": ({"backbone": "fno", "n_modes": [6, 6], "hidden_channels": 8, "n_layers": 2}, (24, 27)),
    "local_fno": ({"backbone": "local_fno", "n_modes": [6, 6], "hidden_channels": 8, "norm_groups": 4}, (24, 27)),
    # a UNO keeps the row layout under autograd from a coarsest side of 64 (uno.ROWS_MIN_SIDE_UNDER_AUTOGRAD)
    "uno": ({"backbone": "uno", "n_modes": [6, 6], "hidden_channels": 8, "norm_groups": 4}, (20, 256)),
    "sfno": ({"backbone": "sfno", "n_modes": [8, 8], "hidden_channels": 8, "n_layers": 2}, (12, 24)),
}


@pytest.fixture(params=list(BACKBONES))
def backbone(request):
    """(model in float64, input grid) of one row-layout backbone."""
    if request.param == "sfno":
        pytest.importorskip("torch_harmonics")
    config, grid = BACKBONES[request.param]
    torch.manual_seed(0)
    model = build_denoiser({"in_channels": 2, "out_channels": 2, "sigma_data": 0.5, **config}).double()
    return model, grid


def _inputs(grid: tuple[int, int], batch: int = 2):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 2, *grid, generator=gen, dtype=torch.float64)
    return x, torch.tensor([0.3, 2.0][:batch], dtype=torch.float64)


def _gpu_paths(monkeypatch, chunk: int | None = None) -> None:
    """Every later call takes the GPU's code paths (with ``chunk``: chunks of that many bytes, i.e. many)."""
    monkeypatch.setattr(fno, "cache_sized", lambda t: False)
    if chunk is not None:
        monkeypatch.setattr(fno, "CUDA_CHUNK_BYTES", chunk)


def _on_both_paths(monkeypatch, run, chunk: int | None = None):
    """``run()`` on the CPU's paths, then on the GPU's: the two results."""
    cpu = run()
    _gpu_paths(monkeypatch, chunk)
    return cpu, run()


def _assert_rows(model, grid) -> None:
    """The test exercises the row layout (where the two paths differ), under autograd too."""
    with torch.enable_grad():
        assert model.backbone.on_rows(grid)


@pytest.mark.parametrize("chunk", [None, 2048], ids=["one-chunk", "many-chunks"])
def test_inference_on_the_gpu_paths_equals_the_cpu_paths(monkeypatch, backbone, chunk):
    model, grid = backbone
    _assert_rows(model, grid)
    x, sigma = _inputs(grid)

    def run():
        with torch.no_grad():
            return model.eval()(x, sigma)

    cpu = run()
    _gpu_paths(monkeypatch, chunk)
    counts, row_chunks = [], fno._row_chunks
    monkeypatch.setattr(fno, "_row_chunks", lambda *a: counts.append(len(row_chunks(*a))) or row_chunks(*a))
    gpu = run()
    torch.testing.assert_close(gpu, cpu, rtol=1e-12, atol=1e-12)
    assert counts and (max(counts) > 1 if chunk else set(counts) == {1})  # many chunks, or one per block


def test_training_gradients_on_the_gpu_paths_equal_the_cpu_paths(monkeypatch, backbone):
    model, grid = backbone
    x, sigma = _inputs(grid)
    target = torch.randn_like(x)

    def run():
        model.train().zero_grad()
        loss = (model(x, sigma) - target).square().mean()
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    (loss_cpu, grads_cpu), (loss_gpu, grads_gpu) = _on_both_paths(monkeypatch, run)
    torch.testing.assert_close(loss_gpu, loss_cpu, rtol=1e-12, atol=0)
    assert grads_gpu.keys() == grads_cpu.keys() and len(grads_cpu) == len(list(model.parameters()))
    for name, grad in grads_cpu.items():
        torch.testing.assert_close(grads_gpu[name], grad, rtol=1e-10, atol=1e-13, msg=name)


def test_guidance_vjp_on_the_gpu_paths_equals_the_cpu_paths(monkeypatch, backbone):
    """The gradient with respect to the input through the frozen network (DPS's backward pass), for a loss on all
    of the field and for one at a few grid points (on a CPU the latter goes by columns)."""
    model, grid = backbone
    model.eval().requires_grad_(False)
    x, sigma = _inputs(grid)
    weights = torch.randn_like(x), torch.zeros_like(x)
    weights[1][:, :, 3, 5] = weights[1][:, :, 7, 2] = 1.0

    def run():
        grads = []
        for w in weights:
            x_in = x.clone().requires_grad_(True)
            grads.append(torch.autograd.grad((model(x_in, sigma) * w).sum(), x_in)[0])
        return grads

    cpu, gpu = _on_both_paths(monkeypatch, run)
    for a, b in zip(gpu, cpu):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("method", ["dps", "mmps"])
def test_guided_steps_on_the_gpu_paths_equal_the_cpu_paths(monkeypatch, method):
    """A whole guided denoiser call at 12 sensors through an FNO (DPS: one VJP; MMPS: 3 CG iterations, 4 VJPs)."""
    from guided_fno import guided_fno

    model, guided, x, sigma = guided_fno(method, BACKBONES["fno"][1])
    cpu, gpu = _on_both_paths(monkeypatch, lambda: guided(x, sigma))
    torch.testing.assert_close(gpu, cpu, rtol=1e-11, atol=1e-12)
    assert not torch.allclose(gpu, model(x, sigma))  # the guidance moved the step
