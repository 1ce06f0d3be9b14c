"""Guided steps and rollouts for ``benchmarks/denoiser_speed.py`` (issue 20): rows of the same table, built only
from public APIs (``funcdiff.training.train``, ``funcdiff.tasks.solve``, ``funcdiff.sampling.sample``,
``funcdiff.tasks.forecast``) on untrained models of the issue-20 size (one training step: the weights do not change
the cost of a call).

guided-step rows (impl ``dps`` / ``mmps``): a posterior solve (``task="reconstruct"``, 3 % of the grid observed in
both channels, ``num_samples`` samples in one batch, ``steps`` Euler steps: one denoiser call per step) against
unguided sampling of the same model, shape, steps and solver (``funcdiff.sampling.sample``), the runs interleaved;
every denoiser call of the solver is timed (the guided denoiser that ``solve`` builds, instrumented by patching its
class in the benchmark; the plain denoiser wrapped), the first call of each run left out. ``seconds`` = the median
call, i.e. the cost of a sampler step without a solve's fixed costs (checks, sensors, the observation covariance,
decoding, metrics), and medians of single calls are not moved by slow drifts of a shared machine's speed as
differences of whole runs were; ``guided_ratio`` = guided / unguided. ``mmps`` is timed at two CG iteration counts;
``per_cg_iter_s`` = the difference per iteration per step (each CG iteration is one VJP through the denoiser).
On CUDA every run is repeated with its steps replayed from CUDA graphs (``sample``/``solve(..., cuda_graphs=True)``;
``graphed`` true; the replays of :class:`~funcdiff.models.graphs.GraphedDenoiser` are timed, the first call, which
captures, left out): ``guided_ratio`` there is over the graphed unguided step and ``vs_eager`` = graphed over eager.

rollout rows (impl ``autoregressive`` / ``rolling``): ``configs/forecast/kolmogorov-{kind}.yaml`` (width 32, 16²
modes, 4 layers) trained one step on advected GRFs at 64², then rolled out at the grid of the row (a model is grid
independent) with the Euler solver, so that both kinds cost exactly ``steps_per_frame`` denoiser calls per frame
(Heun's last step of an autoregressive block costs one call less); ``frames_per_s_per_member`` = emitted frames ×
members / seconds, measured in steady state (from the first emitted block to the last; the start-up phase is
``startup_s``). On CUDA each kind is also rolled out with its calls replayed from CUDA graphs
(``funcdiff.tasks.forecast.with_cuda_graphs``; ``graphed`` true, ``vs_eager`` = seconds per frame over the eager
rollout's; the captures happen in the warm-up run).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from _common import sync

ROOT = Path(__file__).resolve().parents[1]
FIELD_MODEL = {"backbone": "fno", "n_modes": [16, 16], "hidden_channels": 32, "n_layers": 4, "sigma_data": 0.5}
ONE_STEP = {"steps": 1, "batch_size": 2, "warmup_steps": 0, "log_every": 0, "eval_every": 0, "checkpoint_every": 0,
            "device": "cpu"}


def field_checkpoint(workdir: Path, device: str) -> Path:
    """A two-channel field model of the issue-20 size, trained one step on synthetic GRFs at 64²."""
    from funcdiff.config import config_from_dict
    from funcdiff.training import train

    out = workdir / "field"
    raw = {"name": "speed-field", "noise": {"smoothness": 2.0, "length_scale": 0.05}, "model": FIELD_MODEL,
           "data": {"source": "synthetic", "channels": ["a", "u"], "resolution": 64, "num_samples": 4,
                    "test_fraction": 0.25, "dim": 2, "seed": 0},
           "train": {**ONE_STEP, "out_dir": str(out), "device": device}}
    train(config_from_dict(raw), progress=False)
    return out


class _CallTimes:
    """The wall time of every call of a denoiser (plain callable or a guided denoiser class), device synchronised."""

    def __init__(self, device: str) -> None:
        self.device, self.times = device, []

    def timed(self, fn):
        def call(*args, **kwargs):
            sync(self.device)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            sync(self.device)
            self.times.append(time.perf_counter() - start)
            return out
        return call

    @contextmanager
    def patched(self, cls):
        """Time the calls of every instance of ``cls`` (a guided denoiser that ``solve`` builds) inside the block."""
        original = cls.__call__
        cls.__call__ = self.timed(original)
        try:
            yield
        finally:
            cls.__call__ = original


def guided_rows(grids, device: str, steps: int = 8, num_samples: int = 2, repeats: int = 2,
                cg_iters: tuple[int, int] = (1, 5), graphed: bool | None = None) -> list[dict]:
    """The guided-step rows (module docstring); ``graphed``: also the graphed runs (default: on CUDA)."""
    from funcdiff.guidance import GuidedDenoiser, SparseObservation, random_sensors
    from funcdiff.guidance.mmps import MomentMatchingDenoiser
    from funcdiff.models.graphs import GraphedDenoiser
    from funcdiff.sampling import sample
    from funcdiff.tasks import solve
    from funcdiff.tasks.solve import load_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(field_checkpoint(Path(tmp), device), device)
        denoiser, meta = model
        from funcdiff.noise import GaussianRandomField

        noise = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.05)
        for n in grids:
            gen = torch.Generator().manual_seed(0)
            coords = random_sensors(0.03, (n, n), generator=gen)
            obs = SparseObservation(coords, channels=(0, 1), values=torch.randn(1, 2, coords.shape[0], generator=gen),
                                    noise_std=0.05, channel_names=("a", "u"))
            common = dict(solver="euler", num_samples=num_samples, resolution=n, seed=0, device=device, steps=steps)
            graph_options = (False, True) if (device.startswith("cuda") if graphed is None else graphed) else (False,)

            def unguided(timer, graphs):
                with torch.no_grad(), timer.patched(GraphedDenoiser) if graphs else nullcontext():
                    sample(denoiser if graphs else timer.timed(denoiser), (num_samples, 2, n, n), noise, steps=steps,
                           solver="euler", seed=0, device=device, cuda_graphs=graphs)

            def guided(timer, graphs, method, cls, **extra):
                with timer.patched(GraphedDenoiser if graphs else cls):
                    solve(model, "reconstruct", obs, method=method, cuda_graphs=graphs, **common, **extra)

            runs = {}  # (name, graphed) -> run(timer)
            for g in graph_options:
                runs[("unguided", g)] = lambda t, g=g: unguided(t, g)
                runs[("dps", g)] = lambda t, g=g: guided(t, g, "dps", GuidedDenoiser)
                runs.update({(f"mmps {k}", g): (lambda t, g=g, k=k: guided(t, g, "mmps", MomentMatchingDenoiser,
                                                                          cg_iters=k)) for k in cg_iters})
            timers = {key: _CallTimes(device) for key in runs}
            for run in runs.values():
                run(_CallTimes(device))  # warm-up
            for _ in range(repeats):
                for key, run in runs.items():  # interleaved, one solve of `steps` Euler steps (one call each)
                    before = len(timers[key].times)
                    run(timers[key])
                    del timers[key].times[before]  # the first call of a solve: its caches (or its graph) are made
            sec = {key: statistics.median(timer.times) for key, timer in timers.items()}
            for graphs in graph_options:
                rows += _guided_step_rows(sec, graphs, n, num_samples, steps, cg_iters)
    return rows


def _guided_step_rows(sec: dict, graphs: bool, n: int, num_samples: int, steps: int, cg_iters: tuple[int, int]
                      ) -> list[dict]:
    """The guided-step rows of one grid, eager or graphed, from the median seconds per step ``sec[(name, graphed)]``
    (name: unguided, dps, mmps k); printed too."""
    common_row = {"grid": n, "pass": "guided-step", "graphed": graphs, "batch": num_samples,
                  "threads": torch.get_num_threads(), "dtype": "float32", "steps": steps}
    base = sec[("unguided", graphs)]

    def vs_eager(name):
        return {"vs_eager": sec[(name, True)] / sec[(name, False)]} if graphs else {}

    rows = [{**common_row, "impl": "unguided", "seconds": base, **vs_eager("unguided")},
            {**common_row, "impl": "dps", "seconds": sec[("dps", graphs)],
             "guided_ratio": sec[("dps", graphs)] / base, **vs_eager("dps")}]
    lo, hi = cg_iters
    per_iter = (sec[(f"mmps {hi}", graphs)] - sec[(f"mmps {lo}", graphs)]) / (hi - lo)
    for k in cg_iters:
        rows.append({**common_row, "impl": "mmps", "cg_iters": k, "seconds": sec[(f"mmps {k}", graphs)],
                     "guided_ratio": sec[(f"mmps {k}", graphs)] / base, "per_cg_iter_s": per_iter,
                     "per_cg_iter_vs_unguided": per_iter / base, **vs_eager(f"mmps {k}")})
    print(f"{n}² guided step ({num_samples} samples, s/step{', graphed' if graphs else ''}): " + ", ".join(
        f"{name} {v:.4g}" for (name, g), v in sec.items() if g == graphs)
        + f"; dps/unguided {sec[('dps', graphs)] / base:.2f}×, mmps per CG iteration {per_iter:.4g} s", flush=True)
    return rows


def _advected(n: int, frames: int, count: int, seed: int) -> torch.Tensor:
    """(count, 1, frames, n, n): smooth periodic GRFs translated one grid point per frame along x."""
    from funcdiff.noise import GaussianRandomField

    grf = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.08)
    u0 = grf.sample((count, 1, n, n), generator=torch.Generator().manual_seed(seed))
    return torch.stack([torch.roll(u0, t, dims=-1) for t in range(frames)], dim=2)


def forecaster_checkpoint(kind: str, workdir: Path, device: str) -> Path:
    from funcdiff.config import load_config
    from funcdiff.data import generate_to_hdf5
    from funcdiff.data.synthetic import SyntheticProblem
    from funcdiff.training import train

    def generate(num_samples, resolution, *, generator, device="cpu", dtype=torch.float32, frames=12):
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        w = _advected(resolution, frames, num_samples, seed)[:, 0]  # (N, T, n, n)
        return {"w": w.to(device, dtype), "t": torch.arange(frames, dtype=dtype) * 0.1}

    data = workdir / "adv.h5"
    if not data.exists():
        problem = SyntheticProblem("advection-2d", "trajectory", ("w",), {"frames": 12}, generate, "advected GRFs")
        generate_to_hdf5(problem, data, num_samples=6, resolution=64, seed=0, batch_size=6, progress=False)
    out = workdir / kind
    overrides = [f"data.path={data}", f"train.out_dir={out}", "train.steps=1", "train.batch_size=2",
                 "train.warmup_steps=0", "train.eval_every=0", "train.log_every=0", "train.checkpoint_every=0",
                 f"train.device={device}", "data.test_fraction=0.34"]
    train(load_config(ROOT / "configs" / "forecast" / f"kolmogorov-{kind}.yaml", overrides), progress=False)
    return out


def rollout_rows(grids, device: str, members: int = 2, steps_per_frame: int = 4, lead_steps: int = 8,
                 repeats: int = 2) -> list[dict]:
    from funcdiff.tasks.forecast import forecast, load_forecaster, with_cuda_graphs

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fcs = {(kind, False): load_forecaster(forecaster_checkpoint(kind, Path(tmp), device), device)
               for kind in ("autoregressive", "rolling")}
        if device.startswith("cuda"):
            fcs.update({(kind, True): with_cuda_graphs(fc) for (kind, _), fc in list(fcs.items())})
        for n in grids:
            initial = _advected(n, 2, 1, 1)[0]  # (C, T0, n, n), T0 = history
            runs = {key: forecast(fc, initial, lead_steps, members=members, seed=0, device=device,
                                  steps_per_frame=steps_per_frame, solver="euler") for key, fc in fcs.items()}
            results: dict[tuple, list[tuple[float, float, int]]] = {k: [] for k in runs}
            for rep in range(repeats + 1):  # the first is a warm-up
                for key, fcst in runs.items():  # interleaved
                    sync(device)
                    start = time.perf_counter()
                    stamps = []
                    for leads, _, _ in fcst.blocks(0):
                        sync(device)
                        stamps.append((time.perf_counter(), len(leads)))
                    if rep:
                        first = stamps[0][0]
                        frames = sum(k for _, k in stamps[1:])
                        results[key].append((first - start, stamps[-1][0] - first, frames))
            for (kind, graphed), res in results.items():
                steady = statistics.median(r[1] / r[2] for r in res)  # seconds per frame (all members)
                row = {"grid": n, "pass": "rollout", "impl": kind, "graphed": graphed, "batch": members,
                       "threads": torch.get_num_threads(), "dtype": "float32", "seconds": steady,
                       "nfe_per_frame": runs[kind, graphed].nfe_per_frame, "steps_per_frame": steps_per_frame,
                       "frames_per_s_per_member": members / steady, "startup_s": statistics.median(r[0] for r in res)}
                if graphed:
                    eager = next(r for r in rows if r["grid"] == n and r["impl"] == kind and not r["graphed"])
                    row["vs_eager"] = steady / eager["seconds"]
                rows.append(row)
            print(f"{n}² rollout ({members} members, Euler, {steps_per_frame} steps/frame): " + ", ".join(
                f"{r['impl']}{' graphed' if r['graphed'] else ''} {r['frames_per_s_per_member']:.3g} frames/s/member "
                f"(NFE/frame {r['nfe_per_frame']:g})" for r in rows if r["grid"] == n), flush=True)
    return rows
