"""The FNO's spectral convolution and the denoiser built on it: checkpoints made before issue 20 still load and
give the same output, and the same seed gives the same sample (fixture made at the commit before the change by
tests/data/make_fno_checkpoint_v0.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from funcdiff.models import build_denoiser

FIXTURE = Path(__file__).parent / "data" / "fno_checkpoint_v0.pt"


def _fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def test_checkpoint_from_before_loads_and_gives_the_same_output():
    for name, entry in _fixture().items():
        denoiser = build_denoiser(entry["config"]).eval()
        denoiser.load_state_dict(entry["state_dict"])
        for case in entry["cases"]:
            with torch.no_grad():
                out = denoiser(case["x"], case["sigma"])
            torch.testing.assert_close(out, case["out"], rtol=1e-5, atol=1e-5, msg=f"{name} {tuple(case['x'].shape)}")


def test_same_seed_gives_the_same_sample_as_before():
    from funcdiff.noise import GaussianRandomField
    from funcdiff.sampling import sample

    entry = _fixture()["2d"]
    denoiser = build_denoiser(entry["config"]).eval()
    denoiser.load_state_dict(entry["state_dict"])
    noise = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.1)
    with torch.no_grad():
        x = sample(denoiser, (2, 2, 16, 12), noise, steps=6, solver="heun", seed=3, sigma_min=0.002, sigma_max=80.0,
                   rho=7.0)  # the schedule the fixture was made with (the defaults then)
    torch.testing.assert_close(x, entry["sample"], rtol=1e-5, atol=1e-5)


def test_spectral_conv_matches_neuraloperator_in_1d_2d_3d():
    """The truncated-DFT-by-GEMM transforms give neuraloperator's SpectralConv output on the same weights."""
    from neuralop.layers.spectral_convolution import SpectralConv

    from funcdiff.models.spectral import PeriodicSpectralConv

    g = torch.Generator().manual_seed(0)
    for modes, grid in (((8,), (20,)), ((6, 5), (16, 12)), ((4, 6, 3), (8, 10, 6))):
        ours = PeriodicSpectralConv(3, 2, modes)
        with torch.no_grad():
            w = ours.weight.tensor
            w.copy_(torch.randn(w.shape, dtype=w.dtype, generator=g))
        ref = SpectralConv(3, 2, modes, bias=False)
        ref.load_state_dict(ours.state_dict())
        x = torch.randn(2, 3, *grid, generator=g)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_gelu_linear_rows_gradient():
    """The fused GELU -> pointwise linear (GELU recomputed in backward) has autograd's gradients."""
    from funcdiff.models.conditioning import _GeluLinearRows

    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(6, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(_GeluLinearRows.apply, (z, w, b))
    assert torch.autograd.gradcheck(lambda z, w: _GeluLinearRows.apply(z, w, None), (z, w))


def test_training_gradients_match_the_unfused_block():
    """A training step's parameter gradients equal those of the plain (channel-first, unfused) forward."""
    entry = _fixture()["2d"]
    denoiser = build_denoiser(entry["config"]).double()
    denoiser.load_state_dict(entry["state_dict"])
    case = entry["cases"][0]
    x, sigma = case["x"].double(), case["sigma"].double()
    backbone = denoiser.backbone

    def unfused(x_in, c_noise):
        from funcdiff.models.fno import split_noise

        c_sample, c_field = split_noise(c_noise, x_in)
        emb = backbone.embedding(c_sample)
        h = backbone.lifting(backbone._input_features(x_in, c_noise, c_field, None))
        for block in backbone.blocks:
            z = block.act(block.film(block.norm(block.spectral(h) + block.pointwise(h)), emb))
            h = h + block.mlp(z)
        return backbone.projection(h)

    grads = []
    for fused in (True, False):
        denoiser.zero_grad()
        if fused:
            out = denoiser(x, sigma)
        else:
            c_skip, c_out, c_in, c_noise = denoiser.coefficients(sigma, x)
            from funcdiff.models.precond import _compact_noise

            out = c_skip * x + c_out * unfused(c_in * x, _compact_noise(c_noise, x.shape[0]))
        out.square().mean().backward()
        grads.append({k: p.grad.clone() for k, p in denoiser.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-9, atol=1e-12, msg=name)


def test_group_norm_affine_gradient():
    from funcdiff.models.fno import _GroupNormAffine

    g = torch.Generator().manual_seed(2)
    h = (torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=g) + 0.5).requires_grad_()
    a = torch.randn(2, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(2, 4, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h, a, b: _GroupNormAffine.apply(h, a, b, 2, 1e-5), (h, a, b))


def test_gelu_mlp_rows_gradient(monkeypatch):
    """The fused activation + channel MLP of a training block (chunks of tiles, GELUs recomputed in backward) has
    autograd's gradients, over several chunks and when only some inputs need a gradient (guidance's VJPs)."""
    from funcdiff.models import fno
    from funcdiff.models.fno import _GeluMLPRows

    monkeypatch.setattr(fno, "CHUNK_BYTES", 6 * 5 * 8 * 2)  # two tiles of (6, 5) float64 per chunk: 3 chunks
    g = torch.Generator().manual_seed(3)
    m = torch.randn(5, 4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    w1 = torch.randn(6, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b1 = torch.randn(6, dtype=torch.float64, generator=g, requires_grad=True)
    w2 = torch.randn(3, 6, dtype=torch.float64, generator=g, requires_grad=True)
    b2 = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)
    assert len(_GeluMLPRows._chunks(m, 6)) == 3
    assert torch.autograd.gradcheck(_GeluMLPRows.apply, (m, w1, b1, w2, b2))
    frozen = [t.detach() for t in (w1, b1, w2, b2)]
    assert torch.autograd.gradcheck(lambda m: _GeluMLPRows.apply(m, *frozen), (m,))
    # a block's residual x + mlp(gelu(m)), added chunk by chunk: gradients in m, the weights and x
    x = torch.randn(5, 3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *args: _GeluMLPRows.apply(*args[:5], True, args[5]), (m, w1, b1, w2, b2, x))
    assert torch.autograd.gradcheck(lambda m, x: _GeluMLPRows.apply(m, *frozen, True, x), (m, x))
    gelu = torch.nn.functional.gelu
    reference = torch.einsum("oh,thn->ton", w2, gelu(torch.einsum("hc,tcn->thn", w1, gelu(m)) + b1[:, None])) \
        + b2[:, None]
    torch.testing.assert_close(_GeluMLPRows.apply(m, w1, b1, w2, b2), reference)
    torch.testing.assert_close(_GeluMLPRows.apply(m, w1, b1, w2, b2, True, x), reference + x)
    # without the input GELU (the projection): gradients, and the inference path's chunks give the same map
    assert torch.autograd.gradcheck(lambda *args: _GeluMLPRows.apply(*args, False), (m, w1, b1, w2, b2))
    assert torch.autograd.gradcheck(lambda m: _GeluMLPRows.apply(m, *frozen, False), (m,))
    lin1, lin2 = torch.nn.Linear(4, 6).double(), torch.nn.Linear(6, 3).double()
    with torch.no_grad():
        lin1.weight.copy_(w1), lin1.bias.copy_(b1), lin2.weight.copy_(w2), lin2.bias.copy_(b2)
        plain = torch.einsum("oh,thn->ton", w2, gelu(torch.einsum("hc,tcn->thn", w1, m) + b1[:, None])) + b2[:, None]
        torch.testing.assert_close(fno._chunked_mlp_rows(m, lin1, lin2, gelu_input=False), plain)
        torch.testing.assert_close(_GeluMLPRows.apply(m, w1, b1, w2, b2, False), plain)
        torch.testing.assert_close(fno._chunked_mlp_rows(m, lin1, lin2, gelu_input=True), reference)


def test_frozen_weight_mode_mix_matches_the_trainable_one_and_follows_updates():
    """Sampling and guidance (weights frozen) mix modes with a cached mode-major weight and one ``bmm``; training
    with the broadcast product or einsum. Same outputs and input gradients in 1-3 dims at several batch sizes, and
    the cache follows an optimiser step and a newly assigned weight."""
    from funcdiff.models.spectral import PeriodicSpectralConv

    g = torch.Generator().manual_seed(1)
    for modes, grid in (((8,), (20,)), ((6, 5), (16, 12)), ((4, 6, 3), (8, 10, 6))):
        conv = PeriodicSpectralConv(3, 2, modes)
        for batch in (1, 2, 4):
            x = torch.randn(batch, 3, *grid, generator=g)
            x_train, x_frozen = x.clone().requires_grad_(), x.clone().requires_grad_()
            conv.requires_grad_(True)
            trained = conv(x_train)
            trained.square().sum().backward()
            conv.requires_grad_(False)
            frozen = conv(x_frozen)
            frozen.square().sum().backward()
            torch.testing.assert_close(frozen, trained, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(x_frozen.grad, x_train.grad, rtol=1e-5, atol=1e-5)
        conv.requires_grad_(True)
        opt = torch.optim.SGD(conv.parameters(), lr=0.5)
        conv(x).square().sum().backward()
        opt.step()
        with torch.no_grad():
            stepped = conv(x)
        conv.requires_grad_(False)
        torch.testing.assert_close(conv(x), stepped, rtol=1e-5, atol=1e-5)  # not the cached weight of before
        conv.weight.tensor = torch.nn.Parameter(conv.weight.tensor.detach() * 2, requires_grad=False)
        torch.testing.assert_close(conv(x), 2 * stepped, rtol=1e-5, atol=1e-5)


def test_a_model_with_filled_caches_pickles_and_copies():
    """``torch.save(model)`` and ``copy.deepcopy`` work after a frozen call filled the spectral layers' caches
    (they are left out and remade), and the copies compute the same output."""
    import copy
    import io

    denoiser = build_denoiser({"backbone": "fno", "in_channels": 2, "out_channels": 2, "n_modes": [6, 6],
                               "hidden_channels": 8, "n_layers": 2}).eval().requires_grad_(False)
    x, sigma = torch.randn(1, 2, 16, 16), torch.full((1,), 0.5)
    with torch.no_grad():
        out = denoiser(x, sigma)
        buffer = io.BytesIO()
        torch.save(denoiser, buffer)
        buffer.seek(0)
        for other in (torch.load(buffer, weights_only=False), copy.deepcopy(denoiser)):
            torch.testing.assert_close(other(x, sigma), out, rtol=0, atol=0)


def test_inference_single_pass_and_chunks_equal_the_unfused_block(monkeypatch):
    """A block at inference: one pass over the whole batch (a field within one chunk: small grids, a GPU), chunks
    of whole samples, and chunks of rows sample by sample (a CPU's large grids) give the plain channel-first block's
    output; GroupNorm's statistics by one Welford reduction (the GPU's) equal the chunked two-pass ones (the
    CPU's)."""
    from funcdiff.models import fno

    torch.manual_seed(4)
    block = fno.FNOBlock(fno.FNOConfig(in_channels=2, out_channels=2, n_modes=(4, 4), hidden_channels=8,
                                       norm_groups=2, emb_dim=8)).double().eval()
    x = torch.randn(3, 8, 10, 9, dtype=torch.float64)
    emb = torch.randn(3, 8, dtype=torch.float64)
    with torch.no_grad():
        plain = x + block.mlp(block.act(block.film(block.norm(block.spectral(x) + block.pointwise(x)), emb)))
        # the whole field at once; two whole samples per chunk (then the third); chunks of 3 rows per sample
        for chunk in (1 << 30, 16 * 9 * 8 * 20, 16 * 9 * 8 * 3):
            monkeypatch.setattr(fno, "CHUNK_BYTES", chunk)
            rows = fno.to_rows(x).contiguous()
            out = fno.from_rows(block(rows, emb, rows=True))
            torch.testing.assert_close(out, plain, rtol=1e-10, atol=1e-12)
    h = torch.randn(3, 10, 8, 9, dtype=torch.float64) + 2.0
    monkeypatch.setattr(fno, "CHUNK_BYTES", 1 << 30)
    for rows_per_chunk in (4, 20, None):  # 4 rows per sample; two whole samples, then one; the batch at once
        for a, b in zip(fno._group_norm_stats_welford(h, 2, 1e-5), fno._group_norm_stats(h, 2, 1e-5, rows_per_chunk)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_modulate_is_group_norm_then_film_on_every_path():
    """``FNOBlock._modulate`` (GroupNorm's statistics folded into FiLM) equals ``film(norm(h))``: channel-first and row
    layouts, without autograd, through ``_GroupNormAffine`` under autograd, and in float32 statistics from a bf16
    field under CPU autocast (value and gradient within bf16 round-off) -- a field with a large mean, where folding
    the mean into the offset would show a loss of precision."""
    import copy

    from funcdiff.models import fno

    torch.manual_seed(5)
    block = fno.FNOBlock(fno.FNOConfig(in_channels=2, out_channels=2, n_modes=(4, 4), hidden_channels=8,
                                       norm_groups=2, emb_dim=8))
    torch.nn.init.normal_(block.film.proj.weight, std=0.3)
    torch.nn.init.normal_(block.norm.weight, mean=1.0, std=0.2)
    torch.nn.init.normal_(block.norm.bias, std=0.2)
    h = torch.randn(3, 8, 10, 9, dtype=torch.float64) * 0.5 + 4.0
    emb = torch.randn(3, 8, dtype=torch.float64)
    double = copy.deepcopy(block).double()
    reference = double.film(double.norm(h), emb)
    with torch.no_grad():
        torch.testing.assert_close(double._modulate(h, emb, rows=False), reference, rtol=1e-10, atol=1e-10)
        rows = double._modulate(fno.to_rows(h), emb, rows=True)
        torch.testing.assert_close(fno.from_rows(rows), reference, rtol=1e-10, atol=1e-10)
    leaf = h.clone().requires_grad_(True)
    torch.testing.assert_close(double._modulate(leaf, emb, rows=False), reference, rtol=1e-10, atol=1e-10)
    # bf16 autocast: statistics and affine map in float32 from the bf16 field (FiLM's projection, a Linear, runs in
    # bf16 as autocast makes any Linear run: the reference takes the same scale and shift)
    x32, e32 = h.float(), emb.float()
    x16 = x32.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block._modulate(x16, e32, rows=False)
        scale, shift = block.film.proj(e32).float()[:, :, None, None].chunk(2, dim=1)
    x_ref = x32.bfloat16().float().requires_grad_(True)
    expected = block.norm(x_ref) * (1 + scale) + shift
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(expected)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(x16.grad.float(), x_ref.grad, rtol=2e-2, atol=2e-2)


def test_group_norm_statistics_gradient():
    """The CPU's two-pass GroupNorm statistics under autograd (:class:`~funcdiff.models.fno._GroupStats`, a
    hand-written backward pass) against finite differences."""
    from funcdiff.models import fno

    torch.manual_seed(6)
    h = (torch.randn(2, 3, 4, 5, dtype=torch.float64) + 1.5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda h: fno._group_norm_stats(h, 2, 1e-3), (h,))


@pytest.mark.parametrize("backbone", ["fno", "uno", "local_fno"])
def test_module_to_a_real_dtype_keeps_the_spectral_weights_complex(backbone):
    """``model.to(torch.float64)`` (or to bf16) computes the same operator: torch's own ``Module.to`` casts complex
    parameters to the real dtype and drops their imaginary parts (the float32 and float64 outputs then differed by
    0.04-0.12 on this model). The weights become complex128 for float64, complex64 otherwise, without a warning."""
    import copy
    import warnings

    from funcdiff.models import build_backbone

    torch.manual_seed(0)
    net = build_backbone(backbone, in_channels=2, out_channels=2, n_modes=(6, 6), hidden_channels=8, n_layers=2)
    x, c = torch.randn(2, 2, 24, 24), torch.rand(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Casting complex values to real discards the imaginary part"
        wide, narrow = copy.deepcopy(net).to(torch.float64), copy.deepcopy(net).to("cpu", torch.bfloat16)
        back = copy.deepcopy(wide).to(torch.float32)
    complex_types = [{p.dtype for p in m.parameters() if p.is_complex()} for m in (wide, narrow, back)]
    assert complex_types == [{torch.complex128}, {torch.complex64}, {torch.complex64}], complex_types
    with torch.no_grad():
        ref = net(x, c)
        torch.testing.assert_close(wide(x.double(), c.double()), ref.double(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(back(x, c), ref, rtol=1e-6, atol=1e-6)
        error = float((narrow(x.bfloat16(), c.bfloat16()).float() - ref).norm() / ref.norm())
    assert error < 0.03, error


@pytest.mark.parametrize("backbone", ["fno", "uno", "local_fno", "sfno"])
def test_compiled_model_trains_and_differentiates_like_eager_on_every_grid(backbone):
    """``torch.compile(model, fullgraph=True)`` traces every backbone in one graph (no graph break: under compile the
    layers use plain ops, whose backward pass the compiler derives, instead of their custom autograd Functions, on
    which dynamo failed with symbolic sizes; nothing is looked up in a per-grid cache), and the loss gradients
    (training), input gradients (guidance's VJP) and outputs without grad equal eager's on two grids, in float64 (a
    float64 model compiles too). With ``dynamic=True`` one graph serves both grids; the SFNO compiles per grid (static shapes), its SHT
    tables constants of the graph, made in numpy (dynamo traced that recursion op by op before, and inductor's C++
    compiler crashed on the kernel). Dynamo's graph with the eager backend: the tracing is what failed, and no
    compiler runs in the suite. No warning about an ``lru_cache`` (dynamo ignores one: the positional features are
    made in the graph, the SHT tables are constants)."""
    import copy
    import warnings

    from torch._dynamo.testing import CompileCounter

    from funcdiff.models import build_backbone

    torch._dynamo.reset()
    torch.manual_seed(0)
    net = build_backbone(backbone, in_channels=2, out_channels=2, n_modes=(6, 6), hidden_channels=8,
                         n_layers=2).to(torch.float64)
    frozen = copy.deepcopy(net).requires_grad_(False)
    counters = CompileCounter(), CompileCounter()
    dynamic = backbone != "sfno"
    compiled = torch.compile(copy.deepcopy(net), backend=counters[0], dynamic=dynamic, fullgraph=True)
    compiled_frozen = torch.compile(copy.deepcopy(frozen), backend=counters[1], dynamic=dynamic, fullgraph=True)
    grids = [(16, 32), (20, 40)] if backbone == "sfno" else [(24, 24), (20, 20)]
    for grid in grids:
        x, c = torch.randn(2, 2, *grid, dtype=torch.float64), torch.rand(2, dtype=torch.float64)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for model in (net, compiled):
                model.zero_grad()
                model(x, c).square().mean().backward()
        assert not [w for w in caught if "lru_cache" in str(w.message)]
        for p, q in zip(net.parameters(), compiled.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-10, atol=1e-13)
        x.requires_grad_(True)
        eager_vjp, = torch.autograd.grad(frozen(x, c).sum(), x)
        compiled_vjp, = torch.autograd.grad(compiled_frozen(x, c).sum(), x)
        torch.testing.assert_close(compiled_vjp, eager_vjp, rtol=1e-10, atol=1e-13)
        with torch.no_grad():  # inference: no loop over chunks of rows under compile (it fixed the sizes)
            torch.testing.assert_close(compiled_frozen(x, c), frozen(x, c), rtol=1e-10, atol=1e-13)
    per_grid = 1 if dynamic else len(grids)
    assert [counter.frame_count for counter in counters] == [per_grid, 2 * per_grid]  # frozen: with and without grad
