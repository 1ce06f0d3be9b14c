"""The hand-written backward passes added for speed (issue 20) equal autograd's through the plain formulas."""

from __future__ import annotations

import pytest
import torch

from funcdiff.models.spectral import _ModeMix


def test_mode_mix_gradients_equal_autograds_of_the_broadcast_product():
    gen = torch.Generator().manual_seed(0)
    for batch in (1, 2, 3):
        x = torch.randn(batch, 5, 3, 4, generator=gen, dtype=torch.complex128, requires_grad=True)  # (B, m, C_in, k)
        w = torch.randn(3, 6, 5, 4, generator=gen, dtype=torch.complex128, requires_grad=True)  # (C_in, C_out, m, k)
        target = torch.randn(batch, 5, 6, 4, generator=gen, dtype=torch.complex128)

        def loss(out):  # a real loss of a complex output, not holomorphic: exercises the conjugate convention
            return (out * target.conj()).real.sum() + out.abs().square().sum()

        ours = torch.autograd.grad(loss(_ModeMix.apply(x, w)), (x, w))
        plain = torch.autograd.grad(loss(torch.einsum("bmik,iomk->bmok", x, w)), (x, w))
        for a, b in zip(ours, plain):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        (only_x,) = torch.autograd.grad(loss(_ModeMix.apply(x, w.detach())), (x,))  # guidance: no weight gradient
        torch.testing.assert_close(only_x, plain[0], rtol=1e-12, atol=1e-12)


def test_spectral_skip_rows_equals_autograd_through_the_two_paths():
    """``K x + W x + b`` as one function with a hand-written adjoint (:class:`_SpectralSkipRows`): the same output and
    the same gradients for x, the spectral weight and the skip's weight and bias as autograd through the spectral
    layer accumulating into the skip, on 1-, 2- and 3-D grids, odd and even, batch 1-3, each layer trainable or frozen."""
    from funcdiff.models.conditioning import PointwiseLinear
    from funcdiff.models.spectral import PeriodicSpectralConv, to_rows

    torch.manual_seed(0)
    for modes, shape, batch in (((4,), (9,), 1), ((6, 6), (11, 12), 2), ((6, 4), (12, 9), 3), ((4, 4, 4), (7, 8, 9), 2)):
        conv = PeriodicSpectralConv(3, 5, modes).double()
        skip = PointwiseLinear(3, 5).double()
        x = to_rows(torch.randn(batch, 3, *shape, dtype=torch.float64)).requires_grad_(True)
        for conv_trainable, skip_trainable in ((True, True), (False, False), (True, False), (False, True)):
            conv.requires_grad_(conv_trainable)
            skip.requires_grad_(skip_trainable)
            params = ([x] + ([conv.weight.to_tensor()] if conv_trainable else [])
                      + ([skip.linear.weight, skip.linear.bias] if skip_trainable else []))
            plain = conv.forward_rows(x, accumulate=skip.forward_rows(x))
            fused = conv.forward_rows_with_skip(x, skip)
            assert fused.grad_fn is not None and type(fused.grad_fn).__name__ == "_SpectralSkipRowsBackward"
            torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)
            grad = torch.randn_like(plain)
            for a, b in zip(torch.autograd.grad(fused, params, grad), torch.autograd.grad(plain, params, grad)):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_spectral_skip_rows_passes_gradcheck():
    from funcdiff.models.conditioning import PointwiseLinear
    from funcdiff.models.spectral import PeriodicSpectralConv, _SpectralSkipRows

    torch.manual_seed(1)
    conv = PeriodicSpectralConv(2, 2, (4, 4)).double()
    skip = PointwiseLinear(2, 2).double()
    x = torch.randn(2, 7, 2, 8, dtype=torch.float64, requires_grad=True)  # rows layout of a 7 x 8 grid
    weight = conv.weight.to_tensor().detach().to(torch.complex128).requires_grad_(True)

    def fn(x, w, sw, sb):
        return _SpectralSkipRows.apply(x, w, sw, sb, conv)

    assert torch.autograd.gradcheck(fn, (x, weight, skip.linear.weight, skip.linear.bias), eps=1e-6, atol=1e-6)


def test_gelu_mlp_keeps_its_derivatives_for_repeated_vjps(monkeypatch):
    """Built inside ``repeated_vjps`` (MMPS's CG iterations), :class:`_GeluMLPRows` keeps the GELU derivatives from
    its first backward pass: every later pass gives the same gradients as without (x only and with the weights, with
    and without the input GELU, over several chunks), and the derivatives are kept only inside the context."""
    from funcdiff.models import fno
    from funcdiff.models.fno import _GeluMLPRows
    from funcdiff.utils import expects_repeated_vjps, repeated_vjps

    monkeypatch.setattr(fno, "CHUNK_BYTES", 6 * 5 * 8 * 2)  # two tiles of (6, 5) float64 per chunk: 3 chunks
    g = torch.Generator().manual_seed(4)
    m = torch.randn(5, 4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    weights = [torch.randn(*shape, dtype=torch.float64, generator=g) for shape in ((6, 4), (6,), (3, 6), (3,))]
    residual = torch.randn(5, 3, 5, dtype=torch.float64, generator=g)
    for gelu_input in (True, False):
        for trainable in (False, True):
            params = [w.clone().requires_grad_(trainable) for w in weights]
            wrt = [m] + (params if trainable else [])
            probes = [torch.randn(5, 3, 5, dtype=torch.float64, generator=g) for _ in range(3)]
            plain = _GeluMLPRows.apply(m, *params, gelu_input, residual)
            with repeated_vjps():
                assert expects_repeated_vjps()
                kept = _GeluMLPRows.apply(m, *params, gelu_input, residual)
            assert not expects_repeated_vjps()
            assert plain.grad_fn.derivatives is None and kept.grad_fn.keep_derivatives
            for probe in probes:  # the first pass makes the derivatives, the later ones use them
                for a, b in zip(torch.autograd.grad(kept, wrt, probe, retain_graph=True),
                                torch.autograd.grad(plain, wrt, probe, retain_graph=True)):
                    torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)
            assert kept.grad_fn.derivatives is not None and plain.grad_fn.derivatives is None
            assert (kept.grad_fn.derivatives[1] is None) == (not gelu_input)
    with repeated_vjps(False):
        assert not expects_repeated_vjps()


def test_gelu_mlp_backward_by_columns_equals_the_dense_pass(monkeypatch):
    """A gradient that is zero off a few columns (guidance's loss at sensors) takes :class:`_GeluMLPRows`'s backward
    pass on those columns only: the same gradients of m, the weights and the residual as the dense pass (with and
    without the input GELU, frozen and trainable, inside ``repeated_vjps`` between dense passes too), and a dense
    gradient (training) or one with too many nonzero columns stays on the dense pass."""
    from funcdiff.models import fno
    from funcdiff.models.fno import _GeluMLPRows
    from funcdiff.utils import repeated_vjps

    by_columns, default = [], fno.SPARSE_COLUMNS
    original = _GeluMLPRows._backward_columns

    def spy(*args):
        by_columns.append(True)
        return original(*args)

    monkeypatch.setattr(_GeluMLPRows, "_backward_columns", staticmethod(spy))
    g = torch.Generator().manual_seed(5)
    m = torch.randn(6, 4, 16, dtype=torch.float64, generator=g, requires_grad=True)  # 6 tiles of 16 columns
    weights = [torch.randn(*shape, dtype=torch.float64, generator=g) for shape in ((7, 4), (7,), (3, 7), (3,))]
    residual = torch.randn(6, 3, 16, dtype=torch.float64, generator=g, requires_grad=True)
    sparse = torch.zeros(6, 3, 16, dtype=torch.float64)
    sparse[0, :, 3], sparse[2, 1, 7], sparse[5, :, 15], sparse[4, 2, 0] = 1.5, -2.0, 0.5, 3.0  # one channel or all
    dense = torch.randn(6, 3, 16, dtype=torch.float64, generator=g)
    crowded = dense * (torch.rand(6, 1, 16, generator=g) < 0.7)  # about 70 % of the columns: the dense pass

    def grads(out, wrt, seed, threshold):
        monkeypatch.setattr(fno, "SPARSE_COLUMNS", threshold)
        return torch.autograd.grad(out, wrt, seed, retain_graph=True)

    for gelu_input in (True, False):
        for trainable in (False, True):
            params = [w.clone().requires_grad_(trainable) for w in weights]
            wrt = [m, residual] + (params if trainable else [])
            out = _GeluMLPRows.apply(m, *params, gelu_input, residual)
            with repeated_vjps():
                kept = _GeluMLPRows.apply(m, *params, gelu_input, residual)
            for seed, expect_columns in ((sparse, True), (dense, False), (crowded, False)):
                by_columns.clear()
                ours = grads(out, wrt, seed, default)
                assert bool(by_columns) == expect_columns
                for a, b in zip(ours, grads(out, wrt, seed, 0.0)):  # threshold 0: always the dense pass
                    torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-14)
            for seed in (sparse, dense, sparse, dense):  # the kept derivatives are made by the first dense pass
                for a, b in zip(grads(kept, wrt, seed, default), grads(out, wrt, seed, 0.0)):
                    torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("method", ["dps", "mmps"])
def test_guided_steps_through_an_fno_are_unchanged_by_the_column_backward(monkeypatch, method):
    """A guided step at a few sensors through an FNO on the row layout (the projection's and the last block's MLP
    take their backward pass by columns: DPS's one VJP, each of MMPS's CG iterations) equals the step with every
    backward pass dense."""
    from guided_fno import VJPS, guided_fno

    from funcdiff.models import fno

    model, guided, x, sigma = guided_fno(method)
    vjps = VJPS[method]
    calls = []
    original = fno._GeluMLPRows._backward_columns
    monkeypatch.setattr(fno._GeluMLPRows, "_backward_columns", staticmethod(lambda *a: calls.append(1) or original(*a)))
    by_columns = guided(x, sigma)
    assert len(calls) == 2 * vjps  # the projection and the last block, in every VJP
    monkeypatch.setattr(fno, "SPARSE_COLUMNS", 0.0)
    dense = guided(x, sigma)
    assert len(calls) == 2 * vjps
    torch.testing.assert_close(by_columns, dense, rtol=1e-12, atol=1e-12)
    assert not torch.equal(by_columns, model(x, sigma))  # the guidance moved the step


def test_multi_vjp_guidance_builds_its_graph_for_repeated_vjps():
    """MMPS (cg_iters + 1 VJPs per call) and DPS with a damped term (one VJP per group) call the denoiser inside
    ``repeated_vjps``; MMPS without CG iterations and DPS with one group do not (one VJP: keeping would cost)."""
    from funcdiff.guidance import GuidedDenoiser, ObservationGuidance, SparseObservation
    from funcdiff.guidance.mmps import MomentMatchingDenoiser
    from funcdiff.guidance.operators import SparseOperator
    from funcdiff.guidance.terms import GuidanceTerm
    from funcdiff.noise import GaussianRandomField
    from funcdiff.utils import expects_repeated_vjps

    seen = []

    def denoiser(x, sigma):
        seen.append(expects_repeated_vjps())
        return 0.5 * x

    class Damped(GuidanceTerm):
        damped = True

        def __call__(self, denoised, sigma):
            return denoised.square().flatten(1).sum(1)

        def curvature(self, denoised, delta, sigma):
            return 2 * delta.square().flatten(1).sum(1)

    noise = GaussianRandomField(dim=1, smoothness=2.0, length_scale=0.1)
    coords = torch.tensor([[0.25], [0.5]])
    obs = SparseObservation(coords, channels=(0,), values=torch.ones(1, 1, 2), noise_std=0.1)
    x, sigma = torch.randn(2, 1, 16), torch.full((2,), 0.5)
    cases = [(MomentMatchingDenoiser(denoiser, SparseOperator(obs, noise), noise, cg_iters=2), True),
             (MomentMatchingDenoiser(denoiser, SparseOperator(obs, noise), noise, cg_iters=0), False),
             (GuidedDenoiser(denoiser, [ObservationGuidance(obs, noise), Damped()], noise), True),
             (GuidedDenoiser(denoiser, [ObservationGuidance(obs, noise)], noise), False)]
    for guided, expected in cases:
        seen.clear()
        guided(x, sigma)
        assert seen == [expected]
    assert not expects_repeated_vjps()


def test_channels_first_gelus_keep_their_derivatives_for_repeated_vjps():
    """A UNO on a small grid takes guidance's gradients channels first (its coarsest rows are short): built inside
    ``repeated_vjps`` its GELUs save GELU'(x) (:class:`_KeptGelu`), and every VJP through the graph equals the VJP
    of the plain graph."""
    from funcdiff.models.uno import NoiseConditionedUNO, UNOConfig
    from funcdiff.utils import repeated_vjps

    torch.manual_seed(0)
    model = NoiseConditionedUNO(UNOConfig(in_channels=2, out_channels=2, n_modes=(8, 8), hidden_channels=8,
                                          levels=1)).double().requires_grad_(False)
    x = torch.randn(2, 2, 20, 20, dtype=torch.float64, requires_grad=True)
    c_noise = torch.tensor([0.1, -0.3], dtype=torch.float64)
    assert not model.on_rows((20, 20))
    plain = model(x, c_noise)
    with repeated_vjps():
        kept = model(x, c_noise)
    seen, stack = {}, [kept.grad_fn]
    while stack:  # every node of the graph
        node = stack.pop()
        if node is not None and id(node) not in seen:
            seen[id(node)] = type(node).__name__
            stack += [next_fn for next_fn, _ in node.next_functions]
    assert "_KeptGeluBackward" in seen.values() and "GeluBackward0" not in seen.values()
    torch.testing.assert_close(kept, plain, rtol=0, atol=0)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        probe = torch.randn(plain.shape, dtype=torch.float64, generator=gen)
        (a,), (b,) = (torch.autograd.grad(out, x, probe, retain_graph=True) for out in (kept, plain))
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)
    with torch.no_grad():  # inference runs on the row layout: equal to round-off
        torch.testing.assert_close(model(x, c_noise), plain, rtol=1e-12, atol=1e-12)


def test_rfftn_backward_is_the_adjoint_of_torchs_rfftn():
    """``funcdiff.utils.rfftn`` (its own backward pass: one inverse real FFT) gives torch's values and gradients to
    float64 round-off in 1-3 transformed dims of even and odd sizes and every normalisation, and passes gradcheck
    and gradgradcheck; so does the SHT's longitude transform built on it, with the orders truncated."""
    from funcdiff.sphere import longitude_fourier
    from funcdiff.utils import rfftn

    gen = torch.Generator().manual_seed(0)
    cases = [((3, 8), (-1,)), ((3, 9), (-1,)), ((2, 7, 9), (-2, -1)), ((2, 3, 6, 5, 4), (2, 3, 4)), ((2, 8, 3, 10), (1, 3))]
    for shape, dim in cases:
        for norm in ("backward", "forward", "ortho"):
            x = torch.randn(*shape, dtype=torch.float64, generator=gen, requires_grad=True)
            ours, reference = rfftn(x, dim, norm), torch.fft.rfftn(x, dim=dim, norm=norm)
            assert ours.grad_fn.name().endswith("_RealFFTBackward")
            torch.testing.assert_close(ours, reference, rtol=0, atol=0)
            cotangent = torch.randn(ours.shape, dtype=ours.dtype, generator=gen)
            for a, b in zip(torch.autograd.grad(ours, x, cotangent), torch.autograd.grad(reference, x, cotangent)):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: rfftn(t, (-2, -1), "ortho"), (x,))
    assert torch.autograd.gradgradcheck(lambda t: rfftn(t, (-2, -1), "forward"), (x,))
    assert torch.autograd.gradgradcheck(lambda t: rfftn(t, (-2, -1), "ortho", keep=2, scale=3.0), (x,))
    with pytest.raises(ValueError, match="last axis"):
        rfftn(x, (-1, -2), keep=2)
    for nlon, mmax in [(16, 5), (15, 7), (8, 5), (240, 40)]:
        x = torch.randn(2, 3, nlon, dtype=torch.float64, generator=gen, requires_grad=True)
        cotangent = torch.randn(2, 3, mmax, dtype=torch.complex128, generator=gen)
        ours, = torch.autograd.grad(longitude_fourier(x, mmax), x, cotangent)
        plain = torch.fft.rfft(x, dim=-1, norm="forward")[..., :mmax] * (2 * torch.pi)
        reference, = torch.autograd.grad(plain, x, cotangent)
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-13)


class _CountOps(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the aten operators called inside (by name)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def test_input_grads_in_use_follows_the_running_backward_pass():
    """``input_grads_in_use`` narrows ``needs_input_grad`` to what the running backward pass uses: only x for
    ``autograd.grad(loss, x)``, every input that requires grad for ``loss.backward()``, aligned past non-tensor
    arguments and tensors that do not require grad."""
    from funcdiff.utils import input_grads_in_use, record_tensor_inputs

    seen = []

    class Probe(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, k, w, nothing, b):
            record_tensor_inputs(ctx, x, k, w, nothing, b)
            return x * w * k + b

        @staticmethod
        def backward(ctx, grad):
            seen.append(input_grads_in_use(ctx))
            return grad, None, grad, None, grad

    x, w = torch.randn(3, requires_grad=True), torch.randn(3, requires_grad=True)
    for b in (torch.randn(3), torch.randn(3, requires_grad=True)):
        torch.autograd.grad(Probe.apply(x * 1, 3, w, None, b).sum(), x)
        Probe.apply(x * 1, 3, w, None, b).sum().backward()
        torch.autograd.grad(Probe.apply(x * 1, 3, w, None, b).sum(), (w, b) if b.requires_grad else (w,))
    assert seen == [(True, False, False, False, False), (True, False, True, False, False),
                    (False, False, True, False, False), (True, False, False, False, False),
                    (True, False, True, False, True), (False, False, True, False, True)]


def test_a_frozen_layers_vjp_does_not_ask_the_engine(monkeypatch):
    """With one input requiring grad (a frozen spectral+skip layer's VJP: x only) ``input_grads_in_use`` answers
    from ``needs_input_grad`` without asking the autograd engine (about 15 µs a call at 64², measured)."""
    from funcdiff import utils
    from funcdiff.models import spectral
    from funcdiff.models.conditioning import PointwiseLinear

    conv = spectral.PeriodicSpectralConv(4, 4, (4, 4)).requires_grad_(False)
    skip = PointwiseLinear(4, 4).requires_grad_(False)
    x = torch.randn(2, 6, 4, 7, requires_grad=True)  # rows (B, n_1, C, n_2)
    expected, = torch.autograd.grad(conv.forward_rows_with_skip(x, skip).square().sum(), x)

    def refuse(node):
        raise AssertionError("the engine was asked")

    monkeypatch.setattr(utils, "_engine_will_run", refuse)
    grad, = torch.autograd.grad(conv.forward_rows_with_skip(x, skip).square().sum(), x)
    torch.testing.assert_close(grad, expected, rtol=0, atol=0)


def test_vjps_of_a_trainable_model_skip_the_weight_gradients(monkeypatch):
    """Guidance's VJP (x only) through layers whose weights still require grad: the fused MLP does the same work as
    with frozen weights, and the spectral+skip layer leaves out the weight-gradient GEMM and products that it makes
    when it goes by ``needs_input_grad`` alone; the gradients are the same."""
    from funcdiff.models import fno, spectral
    from funcdiff.models.conditioning import PointwiseLinear

    g = torch.Generator().manual_seed(5)
    m = torch.randn(6, 4, 7, dtype=torch.float64, generator=g)
    weights = [torch.randn(*shape, dtype=torch.float64, generator=g) for shape in ((8, 4), (8,), (4, 8), (4,))]

    def vjp(x, call):
        x = x.clone().requires_grad_(True)
        out = call(x)
        with _CountOps() as counter:
            grad, = torch.autograd.grad(out, x, torch.ones_like(out))
        return grad, counter.counts

    def mlp(train):
        return lambda x: fno._GeluMLPRows.apply(x, *[w.clone().requires_grad_(train) for w in weights], True, None)

    (frozen, frozen_ops), (trained, trained_ops) = vjp(m, mlp(False)), vjp(m, mlp(True))
    torch.testing.assert_close(trained, frozen, rtol=0, atol=0)
    assert trained_ops == frozen_ops

    conv, skip = spectral.PeriodicSpectralConv(4, 4, (4, 4)).double(), PointwiseLinear(4, 4).double()
    field = torch.randn(1, 6, 4, 7, dtype=torch.float64, generator=g)  # rows (B, n_1, C, n_2)
    ours, ours_ops = vjp(field, lambda x: conv.forward_rows_with_skip(x, skip))
    monkeypatch.setattr(spectral, "input_grads_in_use", lambda ctx: ctx.needs_input_grad)
    every, every_ops = vjp(field, lambda x: conv.forward_rows_with_skip(x, skip))
    torch.testing.assert_close(ours, every, rtol=0, atol=0)
    assert ours_ops["bmm"] == every_ops["bmm"] - 1 and sum(ours_ops.values()) < sum(every_ops.values())


def test_fourier_rescale_backward_is_the_adjoint_resampling():
    """The UNO's resampling between levels under autograd (its own backward pass: the resampling back onto the input
    grid, two real FFTs) gives torch's gradient through the plain FFTs to float64 round-off, down and up, on odd and
    even grids, in 1-3 dims and on the row layout, and passes gradcheck and gradgradcheck."""
    from funcdiff.models.uno import _rescale, fourier_rescale

    gen = torch.Generator().manual_seed(6)
    for grid, size in [((16, 16), (8, 8)), ((8, 8), (16, 16)), ((15, 12), (7, 12)), ((9, 10), (17, 21)), ((32,), (16,)),
                       ((8, 6, 10), (4, 6, 5))]:
        for rows in (False, True):
            shape = (2, *grid[:-1], 3, grid[-1]) if rows else (2, 3, *grid)
            x = torch.randn(*shape, dtype=torch.float64, generator=gen, requires_grad=True)
            out = fourier_rescale(x, size, rows)
            assert out.grad_fn.name().endswith("_FourierRescaleBackward")
            cotangent = torch.randn(out.shape, dtype=torch.float64, generator=gen)
            ours, = torch.autograd.grad(out, x, cotangent)
            reference, = torch.autograd.grad(_rescale(x, size, rows, "forward"), x, cotangent)
            torch.testing.assert_close(ours, reference, rtol=0, atol=1e-13)
    x = torch.randn(1, 2, 9, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fourier_rescale(t, (5, 16)), (x,))
    assert torch.autograd.gradgradcheck(lambda t: fourier_rescale(t, (5, 16)), (x,))


def test_local_kernels_in_the_fourier_domain_equal_the_shifted_differences():
    """The local FNO's kernels evaluated together in the Fourier domain (``fourier_local``: the differences as the
    stencil's symbol, each layer's mix before the one inverse FFT) equal the differences by shifted copies plus the
    integral kernel, values and gradients (input and both mixes) to float64 round-off, in 1-3 dims, odd and even."""
    from funcdiff.models.local_fno import GridDifferential, LocalIntegral, fourier_local

    gen = torch.Generator().manual_seed(7)
    for shape in [(16,), (15,), (12, 10), (9, 11), (6, 7, 8)]:
        torch.manual_seed(len(shape))
        diff = GridDifferential(3, 4, len(shape)).double()
        integral = LocalIntegral(3, 4, len(shape), 0.2, 2).double()
        x = torch.randn(2, 3, *shape, dtype=torch.float64, generator=gen, requires_grad=True)
        ours, reference = fourier_local([diff, integral], x), diff(x) + integral(x)
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-13)
        torch.testing.assert_close(fourier_local([diff], x), diff(x), rtol=0, atol=1e-13)
        cotangent = torch.randn(ours.shape, dtype=torch.float64, generator=gen)
        wrt = [x, diff.mix.linear.weight, integral.mix.linear.weight]
        for a, b in zip(torch.autograd.grad(ours, wrt, cotangent), torch.autograd.grad(reference, wrt, cotangent)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
