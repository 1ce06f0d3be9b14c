"""The SFNO backbone: one operator at every resolution, rotation-equivariant along longitude, EDM-wrapped."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torch_harmonics", reason="the sfno backbone needs the sphere extra (torch-harmonics)")

from funcdiff.config import config_from_dict  # noqa: E402
from funcdiff.models import build_denoiser  # noqa: E402
from funcdiff.sphere import GridSHT  # noqa: E402

MODEL = {"backbone": "sfno", "in_channels": 2, "out_channels": 2, "n_modes": [12, 12], "hidden_channels": 16,
         "n_layers": 2, "norm_groups": 4, "cond_channels": 1}


def band_limited(shape, channels=3, degrees=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    coeffs = torch.tril(torch.complex(torch.randn(2, channels, degrees, degrees, generator=g),
                                      torch.randn(2, channels, degrees, degrees, generator=g)))
    return GridSHT().isht(coeffs, s=shape)


@pytest.mark.parametrize("coarse, fine, rows, cols", [
    ((32, 64), (96, 192), slice(1, None, 3), slice(0, None, 3)),  # WB2 grids without poles: 5.625° and 1.875°
    ((33, 64), (65, 128), slice(0, None, 2), slice(0, None, 2)),  # grids with poles: 5.625° and 2.8125°
])
def test_same_band_limited_input_same_output_at_two_resolutions(coarse, fine, rows, cols):
    torch.manual_seed(0)
    denoiser = build_denoiser(MODEL).eval()
    sigma = torch.tensor([0.3, 2.0])
    with torch.no_grad():
        a, b = band_limited(coarse), band_limited(fine)
        out_coarse = denoiser(a[:, :2], sigma, cond=a[:, 2:])
        out_fine = denoiser(b[:, :2], sigma, cond=b[:, 2:])
    error = (out_fine[..., rows, cols] - out_coarse).norm() / out_coarse.norm()
    assert error < 1e-4, float(error)  # measured 1.3e-7 (without poles) and 8e-5 (with poles)
    assert out_coarse.std() > 0.1


def test_equivariant_under_rotation_about_the_axis():
    """Without positional features every layer commutes with a rotation by whole grid columns."""
    torch.manual_seed(1)
    denoiser = build_denoiser({**MODEL, "positional_embedding": None}).eval()
    x = band_limited((32, 64), seed=3)
    with torch.no_grad():
        out = denoiser(x[:, :2], torch.tensor([0.5, 0.5]), cond=x[:, 2:])
        rotated = denoiser(x[:, :2].roll(5, -1), torch.tensor([0.5, 0.5]), cond=x[:, 2:].roll(5, -1))
    torch.testing.assert_close(rotated, out.roll(5, -1), atol=1e-5, rtol=1e-4)


def test_per_sample_noise_levels_and_config_checks():
    torch.manual_seed(2)
    denoiser = build_denoiser(MODEL).eval()
    x = band_limited((32, 64))
    with torch.no_grad():
        both = denoiser(x[:, :2], torch.tensor([0.1, 5.0]), cond=x[:, 2:])
        first = denoiser(x[:1, :2], torch.tensor([0.1]), cond=x[:1, 2:])
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=1e-4)  # one sample's level never touches another
    with pytest.raises(ValueError, match="regular lat-lon grid"):
        denoiser(torch.randn(1, 2, 32, 60), torch.tensor([1.0]), cond=torch.randn(1, 1, 32, 60))
    with pytest.raises(ValueError, match="too coarse"):
        denoiser(torch.randn(1, 2, 8, 16), torch.tensor([1.0]), cond=torch.randn(1, 1, 8, 16))
    config = config_from_dict({"model": {"backbone": "sfno", "n_modes": [8, 8], "positional_embedding": "sphere"}})
    assert config.model["backbone"] == "sfno"
    with pytest.raises(ValueError, match="positional_embedding"):
        build_denoiser({**MODEL, "positional_embedding": "grid"})


def _reference_layer(conv):
    """neuraloperator's own ``SphericalConv`` with funcdiff's quadrature SHT and ``conv``'s weights: the layer the
    SFNO blocks used before they ran on the row layout."""
    from neuralop.layers.spherical_convolution import SphericalConv

    ref = SphericalConv(conv.in_channels, conv.out_channels, n_modes=tuple(conv.n_modes), factorization=None,
                        implementation="reconstructed").to(conv.bias.dtype)
    ref.sht_handle = GridSHT()
    ref.load_state_dict(conv.state_dict())  # the same parameters and keys: checkpoints load unchanged
    return ref


@pytest.mark.parametrize("shape, modes", [((33, 64), (12, 10)), ((32, 64), (8, 8)), ((19, 36), (19, 18))])
def test_row_layout_spherical_conv_is_neuralops_layer(shape, modes):
    """SphericalRowsConv (rfft, per-order Legendre GEMMs, per-degree weight GEMMs on the row layout) against
    neuraloperator's SphericalConv with the same SHT and weights: outputs and gradients (input, weight, bias) to
    float64 round-off, with all degrees kept (lmax = H) and truncated."""
    from funcdiff.models.spherical_conv import SphericalRowsConv

    torch.manual_seed(3)
    ours = SphericalRowsConv(3, 5, n_modes=(modes[0], 2 * modes[1]), init_std=0.3).double()
    ref = _reference_layer(ours)
    x = torch.randn(2, 3, *shape, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 5, *shape, dtype=torch.float64)
    out, expected = ours(x), ref(x)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)
    for a, b in zip(torch.autograd.grad((out * v).sum(), [x, *ours.parameters()]),
                    torch.autograd.grad((expected * v).sum(), [x, *ref.parameters()])):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-11)


def test_sfno_on_the_row_layout_equals_the_channels_first_model():
    """The whole SFNO denoiser (row layout, fused GroupNorm+FiLM and MLP paths) against the same weights in the
    channels-first path with neuraloperator's layers: outputs, gradient in x (guidance) and parameter gradients
    (training) to float64 round-off."""
    import copy

    torch.manual_seed(4)
    new = build_denoiser({**MODEL, "cond_channels": 0, "n_modes": [12, 10]}).double()
    old = copy.deepcopy(new)
    for block in old.backbone.blocks:
        block.spectral = _reference_layer(block.spectral)  # not a row-layout layer: the channels-first path
    assert new.state_dict().keys() == old.state_dict().keys()
    x = torch.randn(2, 2, 25, 48, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor([0.3, 2.0], dtype=torch.float64)
    out, expected = new(x, sigma), old(x, sigma)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)
    grads = [torch.autograd.grad(y.square().sum(), [x, *m.parameters()]) for y, m in ((out, new), (expected, old))]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_sht_tables_are_shared_by_every_block_and_model_copy():
    """The blocks of an SFNO and a deep copy of the model (EMA) use one set of SHT tables per grid, degrees, dtype and
    device (funcdiff.sphere.sht_tables), not one each."""
    import copy

    torch.manual_seed(6)
    denoiser = build_denoiser({**MODEL, "cond_channels": 0}).eval()
    twin = copy.deepcopy(denoiser)
    x = band_limited((32, 64))[:, :2]
    with torch.no_grad():
        torch.testing.assert_close(denoiser(x, torch.tensor([0.5, 0.5])), twin(x, torch.tensor([0.5, 0.5])))
    lmax, mmax = MODEL["n_modes"]
    tables = [block.spectral.sht_handle._tables(lmax, mmax, 32, 64, torch.float32, "cpu")
              for model in (denoiser, twin) for block in model.backbone.blocks]
    assert all(t[0] is tables[0][0] and t[1] is tables[0][1] for t in tables)
