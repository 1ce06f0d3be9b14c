"""The README's forecasting commands, run at tiny sizes on held-out trajectories (issue 18): the trajectories the
README forecasts are the ones its own config holds out, and the whole sequence (generate, train, data info,
forecast with twin sensors, evaluate) runs from the command line without a training-data warning."""

from __future__ import annotations

import re
from pathlib import Path

import xarray as xr

from funcdiff.cli import main
from funcdiff.config import load_config
from funcdiff.training.forecast import trajectory_split

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _indices(command_start: str) -> list[int]:
    """The --index values of the README command line(s) that start with ``command_start``."""
    i = README.index(command_start)
    command = README[i:README.index("\n", README.index("--out", i))]
    return [int(v) for v in re.findall(r"--index (\d+)", command)]


def test_readme_forecasts_held_out_trajectories():
    kolmogorov = load_config(ROOT / "configs/forecast/kolmogorov-rolling.yaml")
    n = int(re.search(r"generate kolmogorov --num-samples (\d+)", README).group(1))
    held = trajectory_split(n, kolmogorov)[1].tolist()
    assert _indices("funcdiff forecast --checkpoint runs/kolmogorov-rolling") == held
    assert f"held-out trajectories: {held}" in README
    burgers = load_config(ROOT / "configs/wavelet/burgers-shock-wavelet.yaml")
    n = int(re.search(r"generate burgers_shock --num-samples (\d+)", README).group(1))
    held = trajectory_split(n, burgers)[1].tolist()
    for start in ("funcdiff forecast --checkpoint runs/burgers-shock-wavelet",
                  "funcdiff upsample --checkpoint runs/burgers-shock-superres --input datasets/"):
        assert set(_indices(start)) <= set(held) and _indices(start), start


def test_readme_forecasting_sequence_at_tiny_size(tmp_path, capsys):
    data, run = tmp_path / "kolmogorov.h5", tmp_path / "run"
    assert main(["data", "generate", "kolmogorov", "--num-samples", "10", "--resolution", "16", "--set",
                 "num_frames=12", "--set", "spin_up=0.5", "--out", str(data), "--no-progress"]) == 0
    tiny = ["train.steps=3", "train.batch_size=4", "model.n_modes=[4, 4]", "model.hidden_channels=8",
            "model.n_layers=1", "model.emb_dim=8", "model.norm_groups=4", "data.test_fraction=0.2",
            f"data.path={data}", "train.log_every=0", "train.eval_every=0", "train.checkpoint_every=0"]
    argv = ["train", "--config", str(ROOT / "configs/forecast/kolmogorov-rolling.yaml"), "--out-dir", str(run),
            "--no-progress"]
    assert main(argv + [a for item in tiny for a in ("--set", item)]) == 0
    printed = re.search(r"held out for validation \(use these to evaluate\): trajectories \[(\d+), (\d+)\]",
                        capsys.readouterr().out)
    assert main(["data", "info", "--checkpoint", str(run)]) == 0
    held = [int(printed.group(1)), int(printed.group(2))]
    assert f"held out for validation (trajectories of 10): {held}" in capsys.readouterr().out
    out = tmp_path / "forecast.nc"
    assert main(["forecast", "--checkpoint", str(run), "--initial", str(data), "--index", str(held[0]), "--index",
                 str(held[1]), "--lead-steps", "4", "--members", "2", "--steps-per-frame", "1", "--seed", "0",
                 "--sensor-fraction", "0.05", "--sensor-every", "2", "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err, captured.err
    assert out.with_suffix(".png").exists()
    with xr.open_dataset(out.with_suffix(".sensors.nc")) as sensors:
        assert sensors["init_index"].values.tolist() == held
    assert main(["evaluate", "--forecast", str(out), "--truth", str(data), "--out", str(tmp_path / "scores.nc"),
                 "--json", str(tmp_path / "scores.json"), "--plot", str(tmp_path / "scores.png")]) == 0
    assert "warning" not in capsys.readouterr().err
