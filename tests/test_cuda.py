"""The denoiser on a CUDA device equals the same denoiser on the CPU: the row-layout paths written for speed (issue
20: the spectral layer with its skip and hand-written adjoint, the chunked MLPs, GroupNorm's statistics) in
inference, in a training step and in guidance's vector-Jacobian product, with one chunk and with many; bf16 autocast
stays close to float32; a seeded sample repeats. Skipped without CUDA (CI has none; run on a GPU machine:
``pytest tests/test_cuda.py``)."""

from __future__ import annotations

import pytest
import torch

from funcdiff.models import build_denoiser
from funcdiff.models import fno

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

MODEL = {"backbone": "fno", "in_channels": 2, "out_channels": 2, "n_modes": [8, 8], "hidden_channels": 16,
         "n_layers": 2, "sigma_data": 0.5}


@pytest.fixture(autouse=True)
def exact_float32_matmuls():
    """TF32 off, so that CUDA's float32 GEMMs are comparable with the CPU's."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _pair():
    torch.manual_seed(0)
    cpu = build_denoiser(MODEL)
    gpu = build_denoiser(MODEL).cuda()
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu


def _inputs(n: int = 40, batch: int = 2):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(batch, 2, n, n + 3, generator=gen), torch.tensor([0.3, 2.0][:batch])


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| (a on any device; 0 when both are zero, e.g. a gradient that vanishes at initialisation)."""
    return float((a.cpu() - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.parametrize("chunk", [None, 4096])  # the default (one chunk here) and many chunks of a few rows
def test_inference_on_cuda_equals_cpu(monkeypatch, chunk):
    if chunk is not None:
        monkeypatch.setattr(fno, "CUDA_CHUNK_BYTES", chunk)
    cpu, gpu = _pair()
    x, sigma = _inputs()
    with torch.no_grad():
        assert _relative(gpu.eval()(x.cuda(), sigma.cuda()), cpu.eval()(x, sigma)) < 1e-5


@pytest.mark.parametrize("chunk", [None, 4096])
def test_training_gradients_on_cuda_equal_cpu(monkeypatch, chunk):
    if chunk is not None:
        monkeypatch.setattr(fno, "CUDA_CHUNK_BYTES", chunk)
    cpu, gpu = _pair()
    x, sigma = _inputs()
    target = torch.randn_like(x)
    for model, device in ((cpu, "cpu"), (gpu, "cuda")):
        model.train()
        (model(x.to(device), sigma.to(device)) - target.to(device)).square().mean().backward()
    for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters()):
        assert _relative(p_gpu.grad, p_cpu.grad) < 1e-4, name


def test_guidance_vjp_on_cuda_equals_cpu():
    """The gradient with respect to the input through a frozen network (DPS's backward pass)."""
    cpu, gpu = _pair()
    x, sigma = _inputs()
    grads = []
    for model, device in ((cpu, "cpu"), (gpu, "cuda")):
        model.eval().requires_grad_(False)
        x_in = x.to(device).requires_grad_(True)
        grads.append(torch.autograd.grad(model(x_in, sigma.to(device)).square().sum(), x_in)[0])
    assert _relative(grads[1], grads[0]) < 1e-5


def test_bf16_autocast_on_cuda_is_close_to_float32():
    _, gpu = _pair()
    x, sigma = _inputs(64, 1)
    x, sigma = x.cuda(), sigma.cuda()
    with torch.no_grad():
        exact = gpu.eval()(x, sigma)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = gpu(x, sigma)
    assert torch.isfinite(low).all()
    assert _relative(low.float(), exact.cpu()) < 3e-2


def test_seeded_sample_on_cuda_repeats_and_matches_cpu():
    from funcdiff.noise import GaussianRandomField
    from funcdiff.sampling import sample

    cpu, gpu = _pair()
    noise = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.1)
    runs = [sample(gpu.eval(), (2, 2, 32, 32), noise, steps=6, seed=3, device="cuda") for _ in range(2)]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    reference = sample(cpu.eval(), (2, 2, 32, 32), noise, steps=6, seed=3, device="cpu")
    assert _relative(runs[0], reference) < 1e-4


def test_graphed_denoiser_equals_eager_calls():
    """:class:`~funcdiff.models.graphs.GraphedDenoiser`: replays with new inputs give the eager outputs, under no
    grad in float32 and under bf16 autocast (separate graphs), and autograd falls through to the eager call."""
    from funcdiff.models.graphs import GraphedDenoiser

    _, gpu = _pair()
    gpu.eval()
    graphed = GraphedDenoiser(gpu)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for _ in range(3):
            x, sigma = torch.randn(2, 2, 48, 48, generator=gen).cuda(), torch.rand(2, generator=gen).cuda() + 0.1
            torch.testing.assert_close(graphed(x, sigma), gpu(x, sigma), rtol=1e-6, atol=1e-6)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                torch.testing.assert_close(graphed(x, sigma), gpu(x, sigma), rtol=1e-6, atol=1e-6)
    assert len(graphed._graphs) == 2
    x.requires_grad_(True)
    graphed(x, sigma).sum().backward()  # eager under autograd
    assert x.grad is not None and len(graphed._graphs) == 2


def test_sample_with_cuda_graphs_equals_eager_sample():
    from funcdiff.noise import GaussianRandomField
    from funcdiff.sampling import sample

    _, gpu = _pair()
    noise = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.1)
    for solver in ("heun", "euler"):
        eager = sample(gpu.eval(), (3, 2, 32, 32), noise, steps=6, solver=solver, seed=4, device="cuda")
        graphed = sample(gpu.eval(), (3, 2, 32, 32), noise, steps=6, solver=solver, seed=4, device="cuda",
                         batch_size=2, cuda_graphs=True)
        torch.testing.assert_close(graphed, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", [
    {"backbone": "uno", "n_modes": [6, 6], "hidden_channels": 8, "norm_groups": 4},
    {"backbone": "local_fno", "n_modes": [6, 6], "hidden_channels": 8, "norm_groups": 4},
    {"backbone": "sfno", "n_modes": [12, 12], "hidden_channels": 16, "n_layers": 2},
], ids=lambda c: c["backbone"])
def test_every_backbone_replays_from_a_cuda_graph(config):
    """The other backbones are captured too (their caches and transforms made outside the graph), the same
    outputs as eager calls; the sphere's grid is (n, 2n)."""
    if config["backbone"] == "sfno":
        pytest.importorskip("torch_harmonics")
    from funcdiff.models.graphs import GraphedDenoiser

    torch.manual_seed(0)
    model = build_denoiser({"in_channels": 2, "out_channels": 2, "sigma_data": 0.5, **config}).cuda().eval()
    graphed = GraphedDenoiser(model)
    shape = (2, 2, 24, 48) if config["backbone"] == "sfno" else (2, 2, 24, 24)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for _ in range(2):
            x, sigma = torch.randn(*shape, generator=gen).cuda(), torch.rand(2, generator=gen).cuda() + 0.1
            torch.testing.assert_close(graphed(x, sigma), model(x, sigma), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["autoregressive", "rolling"])
def test_forecast_with_cuda_graphs_equals_eager_forecast(kind):
    """A rollout replays its conditional denoiser (window, per-frame sigma, history) from CUDA graphs: the same frames
    as the eager rollout, with a smaller last chunk of members captured on its own."""
    from funcdiff.config import ForecastConfig
    from funcdiff.kinds.base import Forecaster
    from funcdiff.noise import GaussianRandomField
    from funcdiff.tasks.forecast import forecast, with_cuda_graphs

    history, horizon = 2, 2
    torch.manual_seed(0)
    model = build_denoiser({**MODEL, "in_channels": horizon, "out_channels": horizon, "cond_channels": history,
                            "noise_per_channel": kind == "rolling"}).cuda().eval()
    fc = Forecaster(model, GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.1),
                    ForecastConfig(kind=kind, history=history, horizon=horizon, steps_per_frame=2), ("u",),
                    device="cuda")
    initial = torch.randn(1, history, 24, 24, generator=torch.Generator().manual_seed(3))
    options = dict(members=3, seed=5, batch_size=2, solver="heun")
    eager = forecast(fc, initial, 5, **options).to_tensor()
    graphed_fc = with_cuda_graphs(fc)
    graphed = forecast(graphed_fc, initial, 5, **options).to_tensor()
    torch.testing.assert_close(graphed, eager, rtol=1e-5, atol=1e-5)
    assert len(graphed_fc.denoiser._graphs) >= 2  # two chunk sizes of members (2 and 1)


def _guided_problem(seed: int):
    """The frozen CUDA model of :func:`_pair`, GRF noise, and 30 sensors on both channels of a 32² grid."""
    from funcdiff.guidance import SparseObservation, random_sensors
    from funcdiff.noise import GaussianRandomField

    _, gpu = _pair()
    gpu.eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    obs = SparseObservation(random_sensors(30, (32, 32), generator=gen), channels=(0, 1), noise_std=0.05)
    return gpu, GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.1), obs.with_values(
        torch.randn(1, 2, 30, generator=gen))


def test_guided_sample_with_cuda_graphs_equals_eager_guided_sample():
    """A dps step (the network's forward pass, its vector-Jacobian product, the likelihood and the covariance's
    FFTs) replayed from a CUDA graph: possible because a guided step copies nothing from the host after its first
    call (``tests/test_host_sync.py``); the samples equal the eager ones."""
    from funcdiff.guidance import GuidedDenoiser, ObservationGuidance
    from funcdiff.sampling import sample

    gpu, noise, obs = _guided_problem(6)
    guided = GuidedDenoiser(gpu, [ObservationGuidance(obs, noise, sigma_data=0.5)], noise, sigma_data=0.5,
                            trust_region=1.0)
    eager = sample(guided, (2, 2, 32, 32), noise, steps=6, solver="heun", seed=3, device="cuda")
    graphed = sample(guided, (2, 2, 32, 32), noise, steps=6, solver="heun", seed=3, device="cuda", cuda_graphs=True)
    torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-4)


def test_a_model_that_cannot_be_recorded_is_one_clear_user_error():
    """A denoiser that waits for the device inside its call (here ``.item()``) cannot be recorded in a CUDA graph:
    a :class:`~funcdiff.errors.UserError` (one line from the CLI, exit status 2) naming the cause and the way out."""
    from funcdiff.errors import UserError
    from funcdiff.models.graphs import GraphedDenoiser

    def syncing(x, sigma):
        return x * float(sigma.max())

    x, sigma = torch.randn(2, 1, 8, 8, device="cuda"), torch.full((2,), 0.5, device="cuda")
    with torch.no_grad(), pytest.raises(UserError, match="cannot be recorded in a CUDA graph.*without cuda_graphs="):
        GraphedDenoiser(syncing)(x, sigma)


def test_mmps_sample_with_cuda_graphs_equals_eager_and_counts_its_vjps():
    """An mmps step replayed from a CUDA graph (its fixed-iteration CG runs without host syncs): the eager samples,
    and the VJPs counted on the device (:class:`funcdiff.utils.DeviceCount`) include the replayed ones."""
    from funcdiff.guidance.mmps import MomentMatchingDenoiser
    from funcdiff.guidance.operators import SparseOperator
    from funcdiff.sampling import sample

    gpu, noise, obs = _guided_problem(7)
    runs = []
    for graphs in (False, True):
        guided = MomentMatchingDenoiser(gpu, SparseOperator(obs, noise, sigma_data=0.5), noise, cg_iters=3)
        out = sample(guided, (2, 2, 32, 32), noise, steps=4, solver="euler", seed=3, device="cuda",
                     cuda_graphs=graphs)
        runs.append((out, guided.vjps))
    torch.testing.assert_close(runs[1][0], runs[0][0], rtol=1e-4, atol=1e-4)
    assert runs[0][1] == 4 * (3 + 1) and runs[1][1] >= runs[0][1], (runs[0][1], runs[1][1])


@pytest.mark.parametrize("method", ["dps", "mmps"])
def test_solve_with_cuda_graphs_equals_eager_solve(tmp_path, method):
    """``solve(..., cuda_graphs=True)`` (``funcdiff solve --cuda-graphs``): every guided step of a posterior solve
    from a checkpoint (sensors bound to the model's channels, the checkpoint's normaliser and schedule) replayed
    from a CUDA graph gives the eager solve's samples."""
    from funcdiff.config import config_from_dict
    from funcdiff.guidance import SparseObservation, random_sensors
    from funcdiff.tasks import solve
    from funcdiff.tasks.solve import load_model
    from funcdiff.training import train

    raw = {"name": "graphed-solve", "noise": {"smoothness": 2.0, "length_scale": 0.1},
           "model": {k: v for k, v in MODEL.items() if k not in ("in_channels", "out_channels")},
           "data": {"source": "synthetic", "channels": ["a", "u"], "resolution": 32, "num_samples": 4,
                    "test_fraction": 0.25, "dim": 2, "seed": 0},
           "train": {"steps": 2, "batch_size": 2, "warmup_steps": 0, "log_every": 0, "eval_every": 0,
                     "checkpoint_every": 0, "device": "cpu", "out_dir": str(tmp_path / "run")}}
    train(config_from_dict(raw), progress=False)
    model = load_model(tmp_path / "run", "cuda")
    gen = torch.Generator().manual_seed(2)
    coords = random_sensors(30, (32, 32), generator=gen)
    obs = SparseObservation(coords, channels=(0, 1), values=torch.randn(1, 2, 30, generator=gen), noise_std=0.05,
                            channel_names=("a", "u"))
    options = dict(method=method, num_samples=2, steps=4, solver="heun", seed=3, device="cuda", cg_iters=2)
    eager = solve(model, "reconstruct", obs, **options)
    graphed = solve(model, "reconstruct", obs, cuda_graphs=True, **options)
    torch.testing.assert_close(graphed.samples, eager.samples, rtol=1e-4, atol=1e-4)
