"""A guided step never waits for the device: no ``.item()``, ``bool(tensor)``, ``float(tensor)`` or
``int(tensor)`` inside a DPS or MMPS denoiser call (MMPS's conjugate gradient runs a fixed iteration count with
masked updates, :func:`funcdiff.guidance.linalg.conjugate_gradient`)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from funcdiff.guidance import GuidedDenoiser, ObservationGuidance, SparseObservation, random_sensors
from funcdiff.guidance.linalg import conjugate_gradient
from funcdiff.guidance.mmps import MomentMatchingDenoiser
from funcdiff.guidance.operators import SparseOperator
from funcdiff.noise import GaussianRandomField

N = 16
NOISE = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.1)


class Linear(torch.nn.Module):
    """A differentiable stand-in for the network (syncs of the model itself are not the guidance's)."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = torch.nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular", dtype=torch.float64)

    def forward(self, x, sigma):
        return self.mix(x) / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)


@contextlib.contextmanager
def count_syncs():
    """Counts the Tensor -> Python conversions that wait for the device, by patching them on torch.Tensor."""
    counts = {"n": 0}
    names = ("item", "__bool__", "__float__", "__int__", "tolist")
    saved = {name: getattr(torch.Tensor, name) for name in names}

    def counting(name):
        def method(self, *args, **kwargs):
            counts["n"] += 1
            return saved[name](self, *args, **kwargs)
        return method

    try:
        for name in names:
            setattr(torch.Tensor, name, counting(name))
        yield counts
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def _problem():
    g = torch.Generator().manual_seed(0)
    obs = SparseObservation(random_sensors(20, (N, N), generator=g), channels=(1,), noise_std=0.05)
    obs = obs.with_values(torch.randn(1, 1, 20, generator=g, dtype=torch.float64))
    x = torch.randn(4, 2, N, N, generator=g, dtype=torch.float64)
    return obs, x, torch.full((4,), 3.0, dtype=torch.float64)


@pytest.mark.parametrize("method", ["dps", "dps-trust", "mmps"])
def test_a_guided_step_does_not_synchronise_with_the_host(method):
    torch.manual_seed(0)
    obs, x, sigma = _problem()
    if method == "mmps":
        guided = MomentMatchingDenoiser(Linear(), SparseOperator(obs, NOISE), NOISE, cg_iters=4, chunk_size=2)
    else:
        guided = GuidedDenoiser(Linear(), [ObservationGuidance(obs, NOISE)], NOISE, chunk_size=2,
                                trust_region=1.0 if method == "dps-trust" else None)
    first = guided(x, sigma)  # the first call builds per-grid caches (eigendecomposition, decode gains)
    with count_syncs() as syncs:
        again = guided(x, sigma)
    assert syncs["n"] == 0
    assert torch.equal(first, again)


def test_conjugate_gradient_runs_its_iterations_without_syncs_and_solves():
    g = torch.Generator().manual_seed(1)
    m = torch.randn(3, 6, 6, generator=g, dtype=torch.float64)
    a = m @ m.transpose(1, 2) + 6 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(3, 6, generator=g, dtype=torch.float64)
    calls = []

    def apply(v):
        calls.append(1)
        av = (a @ v[..., None])[..., 0]
        return av, 2 * v

    with count_syncs() as syncs:
        x, side = conjugate_gradient(apply, b, torch.zeros_like(b), 8, tol=1e-12)
    assert syncs["n"] == 0 and len(calls) == 9  # one start + a fixed 8 iterations, converged rows masked
    assert torch.allclose(x, torch.linalg.solve(a, b), atol=1e-10) and torch.allclose(side, 2 * x, atol=1e-10)


class _HostCopies(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the operators that, on a GPU, copy from the host: a tensor made from Python or NumPy data
    (``lift_fresh``) and a copy to an explicitly named device (``_to_copy(device=...)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten.lift_fresh.default or (func is torch.ops.aten._to_copy.default
                                                         and "device" in kwargs):
            self.seen.append(str(func))
        return func(*args, **kwargs)


@pytest.mark.parametrize("config", [
    {"backbone": "fno", "n_modes": [6, 6], "hidden_channels": 8, "norm_groups": 4},
    {"backbone": "uno", "n_modes": [6, 6], "hidden_channels": 8, "norm_groups": 4},
    {"backbone": "local_fno", "n_modes": [6, 6], "hidden_channels": 8, "norm_groups": 4},
    {"backbone": "sfno", "n_modes": [12, 12], "hidden_channels": 16, "n_layers": 2},
], ids=lambda c: c["backbone"])
def test_a_denoiser_call_copies_nothing_from_the_host(config):
    """After the first call (caches made), a denoiser call makes no tensor from host data: the condition for
    capturing it in a CUDA graph (``sample(cuda_graphs=True)``, :mod:`funcdiff.models.graphs`; captured on a GPU in
    tests/test_cuda.py) and for not stalling a GPU with pageable host copies."""
    if config["backbone"] == "sfno":
        pytest.importorskip("torch_harmonics")
    from funcdiff.models import build_denoiser

    model = build_denoiser({"in_channels": 2, "out_channels": 2, "sigma_data": 0.5, **config}).eval()
    x = torch.randn(2, 2, 24, 48 if config["backbone"] == "sfno" else 24)
    sigma = torch.tensor([0.3, 2.0])
    with torch.no_grad():
        model(x, sigma)
        with _HostCopies() as copies:
            model(x, sigma)
    assert copies.seen == [], copies.seen


def test_a_forecasters_call_copies_nothing_from_the_host():
    """The same for a rolling forecaster's call (history as ``cond``, one sigma per frame, the noise-per-channel
    input), which ``funcdiff forecast --cuda-graphs`` replays from a CUDA graph."""
    from funcdiff.models import build_denoiser

    model = build_denoiser({"backbone": "fno", "in_channels": 2, "out_channels": 2, "cond_channels": 2,
                            "noise_per_channel": True, "n_modes": [6, 6], "hidden_channels": 8, "norm_groups": 4,
                            "sigma_data": 0.5}).eval()
    x, history = torch.randn(3, 2, 24, 24), torch.randn(3, 2, 24, 24)
    sigma = torch.tensor([0.5, 4.0]).reshape(1, 2, 1, 1).expand(3, 2, 1, 1)  # frame k's level on its channel
    with torch.no_grad():
        model(x, sigma, cond=history)
        with _HostCopies() as copies:
            model(x, sigma, cond=history)
    assert copies.seen == [], copies.seen


@pytest.mark.parametrize("method", ["dps", "dps-trust", "dps-residual-decoded", "dps-per-sample", "mmps",
                                    "mmps-per-sample"])
def test_a_guided_step_copies_nothing_from_the_host(method):
    """After its first call (caches made), a guided step on a device makes no tensor from host data and copies no
    host constant to the device (sensor stencils, observed values, noise variances, the covariance's
    eigendecomposition, the GRF multiplier, a normaliser's statistics): on a GPU each such copy stalls the host,
    and none can be recorded in a CUDA graph. The meta device stands in for a GPU here (moving a host tensor there
    dispatches the same copy). ``decode`` maps through a :class:`~funcdiff.data.Normalizer` where its gain needs no
    copy back to the host (the residual scaling); the likelihood scaling reads that gain once, on the host."""
    from funcdiff.data import Normalizer

    g = torch.Generator().manual_seed(0)
    per_sample = method.endswith("per-sample")
    obs = SparseObservation(random_sensors(20, (N, N), generator=g), channels=(0, 1), noise_std=0.05)
    obs = obs.with_values(torch.randn(4 if per_sample else 1, 2, 20, generator=g))
    decode = Normalizer(torch.tensor([1.0, -2.0], dtype=torch.float64),
                        torch.tensor([0.5, 3.0], dtype=torch.float64)).decode
    x, sigma = torch.randn(4, 2, N, N, device="meta"), torch.full((4,), 3.0, device="meta")

    def denoiser(x, sigma):
        return 0.5 * x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)

    if method.startswith("mmps"):
        guided = MomentMatchingDenoiser(denoiser, SparseOperator(obs, NOISE), NOISE, cg_iters=3, chunk_size=2)
    else:
        scaling = "residual" if method == "dps-residual-decoded" else "likelihood"
        term = ObservationGuidance(obs, NOISE, scaling=scaling, decode=decode if scaling == "residual" else None)
        guided = GuidedDenoiser(denoiser, [term], NOISE, chunk_size=2,
                                trust_region=1.0 if method == "dps-trust" else None)
    with torch.no_grad():
        guided(x, sigma)
        with _HostCopies() as copies:
            guided(x, sigma)
    assert copies.seen == [], copies.seen


class _DeviceCopies(torch.utils._python_dispatch.TorchDispatchMode):
    """Records (operator, shape) of every copy of host data to another device: ``_to_copy`` or ``copy_`` from a CPU
    tensor into a tensor elsewhere, or Python data lifted onto a device. (A tensor made on the host and kept there,
    e.g. a scalar setting, copies nothing to the device.)"""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.lift_fresh.default, torch.ops.aten.copy_.default):
            src, dst = (args[1], args[0]) if func is torch.ops.aten.copy_.default else (args[0], out)
            if src.device.type == "cpu" and dst.device.type != "cpu":
                self.seen.append((str(func), tuple(src.shape)))
        return out


@pytest.mark.parametrize("sensors", [False, True], ids=["free", "assimilating"])
@pytest.mark.parametrize("kind", ["rolling", "autoregressive"])
def test_a_rollout_step_waits_for_nothing_and_copies_only_its_fresh_noise(kind, sensors):
    """A forecast step on a device (the meta device standing in for a GPU: any ``bool(tensor)``, ``.item()`` or copy
    back to the host raises there) never waits for the device: the per-frame schedule of a rolling step is checked
    on the host and kept on the device (:func:`funcdiff.sampling._element_levels`), Heun's decisions are taken on
    the host, and with sensors at every lead the observation terms' constants are placed on the device before the
    loop (:func:`funcdiff.tasks.forecast.place_terms`; the decode gain is computed on the host). Its one host copy
    is the fresh noise that the members' CPU generators draw, which a GPU receives through pinned memory without
    blocking (:func:`funcdiff.utils.to_device`). The first steps make the caches."""
    from funcdiff.config import ForecastConfig
    from funcdiff.guidance.timed import TimedObservation
    from funcdiff.kinds.base import Forecaster, RolloutState
    from funcdiff.noise import make_generators
    from funcdiff.tasks.forecast import rollout

    def denoiser(x, sigma, cond):  # sigma (B,) for an autoregressive block, one level per frame for a rolling one
        sigma = sigma.reshape(-1, 1, 1, 1) if sigma.ndim == 1 else sigma
        return 0.5 * x / (1 + sigma**2) + cond[:, -1:]

    fc = Forecaster(denoiser, GaussianRandomField(dim=2), ForecastConfig(kind=kind, history=1, horizon=2), ("u",),
                    device="meta")
    g = torch.Generator().manual_seed(0)
    leads = 10
    observations = None
    if sensors:
        at_every_lead = SparseObservation(random_sensors(12, (N, N), generator=g), channels=(0,), noise_std=0.1)
        observations = TimedObservation(at_every_lead.with_values(torch.randn(leads, 1, 12, generator=g)),
                                        torch.arange(1, leads + 1, dtype=torch.float64))
    state = RolloutState(torch.zeros(3, 1, N, N, device="meta"), None, 0, make_generators(0, range(3)))
    steps = rollout(fc, None, leads, members=3, steps_per_frame=2, observations=observations, state=state)
    with torch.no_grad():
        next(steps), next(steps)
        with _DeviceCopies() as copies:
            for _ in range(2):
                _, frames, _ = next(steps)
    fresh = (3, 1 if kind == "rolling" else 2, N, N)  # one new frame (rolling) or a new window of 2 frames
    assert copies.seen == [("aten._to_copy.default", fresh)] * 2, copies.seen
    assert frames.device.type == "meta" and frames.shape == (3, 1, 1 if kind == "rolling" else 2, N, N)
