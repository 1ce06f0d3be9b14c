"""Normaliser, FieldDataset, TrajectoryWindowDataset, splits and the synthetic dataset."""

from __future__ import annotations

import json

import pytest
import torch

from funcdiff.data import (SYNTHETIC, FieldDataset, Normalizer, TrajectoryWindowDataset, generate_to_hdf5,
                           make_synthetic_fields, train_test_split)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_normalizer_round_trip_and_json():
    x = torch.randn(20, 3, 8, 8, generator=_gen()) * torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1, 1) + 7
    norm = Normalizer.fit(x, channel_names=["a", "b", "c"])
    z = norm.encode(x)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(norm.decode(z), x, atol=1e-5, rtol=1e-6)
    restored = Normalizer.from_state_dict(json.loads(json.dumps(norm.state_dict())))
    assert restored.channel_names == ("a", "b", "c")
    torch.testing.assert_close(restored.encode(x[0], channel_dim=0), z[0], rtol=0, atol=0)
    constant = Normalizer.fit(torch.ones(4, 1, 3))  # zero spread: std 1, no division by zero
    assert constant.std.tolist() == [1.0]
    with pytest.raises(ValueError, match="expected 3 channels on axis 1"):
        norm.encode(torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match=r"missing \['std'\]"):
        Normalizer.from_state_dict({"mean": [0.0]})
    sub = norm.select([2, 0])  # e.g. the observed channels of a task
    assert sub.channel_names == ("c", "a")
    torch.testing.assert_close(sub.encode(x[:, [2, 0]]), z[:, [2, 0]], rtol=0, atol=0)


def test_field_dataset_validation_counts_nonfinite():
    x = torch.zeros(4, 2, 5, 5)
    x[0, 1, 0, :3] = float("nan")
    x[2, 1, 1, 1] = float("inf")
    with pytest.raises(ValueError, match=r"channel 'u': 3 NaN, 1 Inf") as err:
        FieldDataset(x, ["a", "u"])
    assert "'a'" not in str(err.value)
    with pytest.raises(ValueError, match="at least 3 dims"):
        FieldDataset(torch.zeros(4, 5), ["a"])
    with pytest.raises(ValueError, match="1 channel names"):
        FieldDataset(torch.zeros(4, 2, 5), ["a"])
    with pytest.raises(ValueError, match="at least 4 dims"):
        TrajectoryWindowDataset(torch.zeros(2, 1, 5), history=1, horizon=1)


def test_field_dataset_items_and_split():
    x = torch.randn(10, 2, 4, 4, generator=_gen(1)) * 3 + 1
    ds = FieldDataset(x, ["a", "u"])
    torch.testing.assert_close(ds[3], ds.normalizer.encode(x[3:4])[0])
    train, test = train_test_split(ds, 0.3, _gen(2))
    assert (len(train), len(test)) == (7, 3)
    merged = torch.cat([train.fields, test.fields])
    assert sorted(merged.sum(dim=(1, 2, 3)).tolist()) == sorted(x.sum(dim=(1, 2, 3)).tolist())
    assert test.normalizer is train.normalizer  # no test statistics leak into training
    torch.testing.assert_close(train.normalizer.mean.float(), train.fields.mean(dim=(0, 2, 3)))
    again = train_test_split(ds, 0.3, _gen(2))
    torch.testing.assert_close(again[1].fields, test.fields, rtol=0, atol=0)


def test_joint_dataset_from_generated_file_uses_stored_stats(tmp_path):
    out = generate_to_hdf5(SYNTHETIC, tmp_path / "s.h5", num_samples=12, resolution=8, batch_size=5,
                           progress=False)
    ds = FieldDataset.from_file(out, channels=("a", "u"))
    assert ds.fields.shape == (12, 2, 8, 8) and ds.channel_names == ("a", "u")
    refit = Normalizer.fit(ds.fields)
    torch.testing.assert_close(ds.normalizer.mean, refit.mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(ds.normalizer.std, refit.std, atol=1e-6, rtol=1e-6)
    train, test = ds.split(4, _gen(3))  # file statistics include test samples: splits refit on train
    torch.testing.assert_close(train.normalizer.mean, Normalizer.fit(train.fields).mean)
    kept = FieldDataset.from_file(out, channels=("u",), normalizer=Normalizer.fit(ds.fields[:, 1:]))
    assert kept.split(4)[0].normalizer is kept.normalizer  # an explicit normaliser is kept


def test_trajectory_windows_indices():
    n, c, t, s = 3, 2, 10, 4
    # value encodes (trajectory, channel, frame) so windows can be decoded exactly
    traj = (100 * torch.arange(n).view(n, 1, 1, 1) + 10 * torch.arange(c).view(1, c, 1, 1)
            + torch.arange(t).view(1, 1, t, 1)).float().expand(n, c, t, s).contiguous()
    ident = Normalizer(torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64))
    ds = TrajectoryWindowDataset(traj, history=3, horizon=2, stride=2, normalizer=ident)
    assert ds.windows_per_trajectory == 3 and len(ds) == 9  # starts 0, 2, 4 (4 + 5 <= 10; 6 + 5 > 10)
    assert [ds.window_index(i) for i in (0, 2, 3, 8)] == [(0, 0), (0, 4), (1, 0), (2, 4)]
    hist, fut = ds[5]  # trajectory 1, start 4
    assert hist.shape == (c, 3, s) and fut.shape == (c, 2, s)
    assert hist[1, :, 0].tolist() == [114.0, 115.0, 116.0] and fut[0, :, 0].tolist() == [107.0, 108.0]
    whole = TrajectoryWindowDataset(traj, 3, 2, 2, normalizer=ident, split_window=False)[5]
    torch.testing.assert_close(whole, torch.cat([hist, fut], dim=1))
    with pytest.raises(IndexError):
        ds.window_index(9)
    with pytest.raises(ValueError, match="longer than the 10 frames"):
        TrajectoryWindowDataset(traj, history=8, horizon=3)
    fitted = TrajectoryWindowDataset(traj, 3, 2)
    torch.testing.assert_close(fitted.normalizer.mean, traj.double().mean(dim=(0, 2, 3)))
    train, test = fitted.split(1, _gen())
    assert train.traj.shape[0] == 2 and test.normalizer is train.normalizer


def test_synthetic_same_function_at_every_resolution():
    coarse = make_synthetic_fields(3, 16, _gen(5), dim=2, channels=2)
    fine = make_synthetic_fields(3, 48, _gen(5), dim=2, channels=2)
    torch.testing.assert_close(fine[..., ::3, ::3], coarse, atol=1e-5, rtol=0)
    line = make_synthetic_fields(2, 32, _gen(5), dim=1, channels=3)
    assert line.shape == (2, 3, 32) and not torch.allclose(line[:, 0], line[:, 2])
    torch.testing.assert_close(make_synthetic_fields(2, 8, _gen(9)), make_synthetic_fields(2, 8, _gen(9)))


def test_synthetic_is_smooth_non_gaussian_and_periodic():
    x = make_synthetic_fields(64, 32, _gen(0), dim=2, channels=2).double()
    power = torch.fft.fft2(x).abs().pow(2).mean(dim=0)  # (C, 32, 32)
    k = torch.fft.fftfreq(32, 1 / 32).abs()
    kmax = torch.maximum(k.view(-1, 1), k.view(1, -1))
    low, high = power[:, (kmax >= 1) & (kmax <= 3)].mean(-1), power[:, kmax >= 12].mean(-1)
    assert (low / high > 100).all()  # white noise would give a ratio near 1
    a = x[:, 0].flatten()
    excess_kurtosis = ((a - a.mean()) ** 4).mean() / a.var() ** 2 - 3
    assert excess_kurtosis < -0.5  # tanh fronts give a bimodal, strongly platykurtic marginal
    assert x[:, 1].std() == pytest.approx(1.0, abs=0.2) and abs(float(x[:, 1].mean())) < 1e-6
    with pytest.raises(ValueError, match="dim must be 1, 2 or 3"):
        make_synthetic_fields(1, 8, _gen(), dim=4)
