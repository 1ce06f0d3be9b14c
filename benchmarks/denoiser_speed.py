"""One denoiser call against neuraloperator's own FNO and against a measured floor, 64² to 1024² (issue 20).

Usage: python benchmarks/denoiser_speed.py [--quick] [--threads 1] [--grids 64 128 ...] [--latlon 721x1440]
       [--out FILE.json]

Rows: {"grid", "impl", "pass", "batch", "threads", "dtype", "seconds", "peak_mb"} with
  impl  funcdiff      the EDM-preconditioned noise-conditioned FNO denoiser ``D(x; sigma)`` (FiLM, GroupNorm, MLPs)
        neuralop-fno  ``neuralop.models.FNO`` of the same width, modes and layers (its defaults otherwise)
        floor         what one call must cost on this machine, computed from measurements made here (below)
  pass  forward       eval, ``torch.no_grad``
        train-step    train mode, forward + backward of a mean-square loss (no optimiser step)
``seconds`` is the median over repeats; funcdiff and neuraloperator are timed interleaved (call A, call B, A, B, ...)
so that load from other jobs on a shared machine hits both alike. ``peak_mb`` is the peak of the memory allocated
during one call above what was allocated before it (CPU: from the profiler's allocation events; CUDA: the
allocator's peak). funcdiff rows also carry ``vs_neuralop`` (seconds / neuraloperator's), ``vs_floor`` and
``growth`` (seconds / seconds at half the side; float32 at batch 1 from calls at half the side timed interleaved
with these, so that the load of other jobs cancels; otherwise the ratio of the two rows). ``--latlon HxW`` adds
the same rows on an H×W grid (``grid`` H, ``grid_w`` W; default in a full run: 721x1440, ERA5's 0.25° grid with its
poles, where a call is as large as at 1024²).

Guided-step rows (pass ``guided-step``: ``dps``, ``mmps`` at 1 and 5 CG iterations, ``unguided``; ``seconds`` per
sampler step, ``guided_ratio``, ``per_cg_iter_s``) and rollout rows (pass ``rollout``: ``autoregressive``,
``rolling`` at equal NFE per frame, on CUDA also replayed from CUDA graphs; ``seconds`` per frame,
``frames_per_s_per_member``) come from
``benchmarks/_posterior_speed.py`` (its docstring says how; ``--guided-grids``/``--rollout-grids`` with no value
skip them). On CUDA every timing synchronises the device before the clock is read.

``--bf16`` adds bfloat16-autocast rows of funcdiff (dtype bfloat16; the spectral transforms stay float32), a
``sample-error`` row (relative L2 of a seeded sample with ``sample.bf16`` against float32) and two ``loss-curve``
rows (the same short training run with ``train.bf16`` false/true: validation losses, final-loss ratio, wall time).
``--compile`` adds ``funcdiff-compiled`` rows (``torch.compile`` against eager at ``--compile-grids``, forward,
train-step and guidance's VJP, static sizes compiled per grid and one ``dynamic=True`` compile for all grids in turn:
first-call compile time, steady state, ratio, or the compiler's error).

The floor of a forward call (width C, L layers, batch B, grid N², fields of B·C·N² float32):
  L × (rfft2 + irfft2 of the hidden field), each timed here on a (B, C, N, N) tensor;
  the pointwise matmuls (lifting, per block the 1×1 skip C→C and the MLP C→2C→C, projection C→2C→out) at the
  GEMM rate measured here on a (2C, C) @ (C, B·N²) product;
  the elementwise passes at the memory bandwidth measured here with ``torch.add(a, b, out=c)`` (3 fields moved):
  per block GroupNorm statistics (read 1 field), normalise+FiLM+GELU fused (read+write 1 field: 2), the MLP's GELU
  at 2C (4), the projection's GELU at 2C (4); the additions (spectral + skip, residual) are counted as fused into
  the GEMMs. A train step's floor is 2× the FFTs, 3× the GEMMs and 3× the elementwise traffic of the forward.

    python benchmarks/denoiser_speed.py --quick --out benchmarks/results/denoiser_speed_quick.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, print_table, sync, timed, write_json  # noqa: E402

from funcdiff.models import build_denoiser  # noqa: E402

WIDTH, MODES, LAYERS, CHANNELS = 32, 16, 4, 2
MODEL = {"backbone": "fno", "in_channels": CHANNELS, "out_channels": CHANNELS, "n_modes": [MODES, MODES],
         "hidden_channels": WIDTH, "n_layers": LAYERS, "sigma_data": 0.5}
COLUMNS = ["grid", "grid_w", "impl", "pass", "batch", "threads", "dtype", "seconds", "peak_mb", "vs_neuralop", "vs_floor",
           "growth"]
GUIDED_COLUMNS = ["grid", "impl", "pass", "graphed", "batch", "threads", "steps", "cg_iters", "seconds",
                  "guided_ratio", "per_cg_iter_s", "per_cg_iter_vs_unguided", "vs_eager"]
ROLLOUT_COLUMNS = ["grid", "impl", "pass", "graphed", "batch", "threads", "steps_per_frame", "nfe_per_frame",
                   "seconds", "frames_per_s_per_member", "startup_s", "vs_eager"]


def neuralop_fno() -> torch.nn.Module:
    from neuralop.models import FNO

    return FNO(n_modes=(MODES, MODES), in_channels=CHANNELS, out_channels=CHANNELS, hidden_channels=WIDTH,
               n_layers=LAYERS)


def median_time(fn, repeats: int, device: str) -> float:
    fn()
    return statistics.median(timed(fn, device) for _ in range(repeats))


def peak_mb(fn, device: str) -> float:
    """Peak memory allocated during ``fn()`` above what was allocated before it, in MiB."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    sizes: list[tuple[int, int]] = []  # (time, bytes allocated (+) or freed (-)) of every allocator event

    def walk(nodes) -> None:
        for node in nodes:
            if node.tag == _EventType.Allocation:
                sizes.append((node.start_time_ns, node.extra_fields.alloc_size))
            walk(node.children)

    walk(prof.profiler.kineto_results.experimental_event_tree())
    current = peak = 0
    for _, size in sorted(sizes):
        current += size
        peak = max(peak, current)
    return peak / 2**20


def calls(model: torch.nn.Module, is_denoiser: bool, pass_: str, x: torch.Tensor, sigma: torch.Tensor,
          dtype: torch.dtype):
    """A zero-argument function making one call of ``pass_``."""
    autocast = dtype != torch.float32
    device_type = x.device.type

    def run():
        with torch.autocast(device_type, dtype=dtype, enabled=autocast):
            return model(x, sigma) if is_denoiser else model(x)

    if pass_ == "forward":
        model.eval()

        def forward():
            with torch.no_grad():
                run()
        return forward
    if pass_ == "vjp":  # guidance's backward pass: the gradient with respect to x only (pass a frozen model)
        model.eval()

        def vjp():
            x_in = x.detach().requires_grad_(True)
            with torch.autocast(device_type, dtype=dtype, enabled=autocast):
                out = model(x_in, sigma) if is_denoiser else model(x_in)
            torch.autograd.grad(out.float().square().sum(), x_in)
        return vjp
    model.train()
    target = torch.randn_like(x)

    def train_step():
        model.zero_grad(set_to_none=True)
        loss = (run().float() - target).square().mean()
        loss.backward()
    return train_step


def floor_seconds(shape: tuple[int, int], batch: int, repeats: int, device: str) -> dict[str, float]:
    """The measured forward and train-step floors of one call on an H×W grid (see the module docstring)."""
    c = WIDTH
    h = torch.randn(batch, c, *shape, device=device)
    h_hat = torch.fft.rfft2(h)
    t_fft = median_time(lambda: torch.fft.rfft2(h), repeats, device) + median_time(
        lambda: torch.fft.irfft2(h_hat, s=shape), repeats, device)
    w = torch.randn(2 * c, c, device=device)
    cols = h.reshape(batch, c, -1).transpose(0, 1).reshape(c, -1) if batch > 1 else h.reshape(c, -1)
    cols = cols.contiguous()
    t_gemm = median_time(lambda: torch.mm(w, cols), repeats, device)
    gemm_rate = 2 * (2 * c) * c * cols.shape[1] / t_gemm
    out = torch.empty_like(h)
    t_add = median_time(lambda: torch.add(h, h, out=out), repeats, device)
    field_bytes = h.numel() * h.element_size()
    bandwidth = 3 * field_bytes / t_add
    points = batch * shape[0] * shape[1]
    lift_in = CHANNELS + 4  # the state and sin/cos grid features of the 2 dims
    gemm_flops = 2 * points * (lift_in * c + LAYERS * (c * c + 2 * c * c + 2 * c * c) + 2 * c * c + 2 * c * CHANNELS)
    elementwise_fields = LAYERS * (1 + 2 + 4) + 4
    forward = LAYERS * t_fft + gemm_flops / gemm_rate + elementwise_fields * field_bytes / bandwidth
    train = 2 * LAYERS * t_fft + 3 * gemm_flops / gemm_rate + 3 * elementwise_fields * field_bytes / bandwidth
    return {"forward": forward, "train-step": train, "fft_seconds": t_fft, "gemm_gflops": gemm_rate / 1e9,
            "bandwidth_gbs": bandwidth / 1e9}


def bf16_sample_error(denoiser: torch.nn.Module, device: str, seed: int) -> dict:
    """A row: relative L2 difference between a seeded sample in float32 and the same with ``bf16=True``
    (``sample.bf16``: the denoiser calls under bfloat16 autocast, the solver state float32), 64², Heun, 8 steps."""
    from funcdiff.noise import GaussianRandomField
    from funcdiff.sampling import sample

    noise = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.05)
    denoiser.eval()
    out = {bf16: sample(denoiser, (2, CHANNELS, 64, 64), noise, steps=8, solver="heun", seed=seed, device=device,
                        bf16=bf16).float() for bf16 in (False, True)}
    error = float((out[True] - out[False]).norm() / out[False].norm())
    return {"grid": 64, "impl": "funcdiff", "pass": "sample-error", "batch": 2, "threads": torch.get_num_threads(),
            "dtype": "bfloat16", "steps": 8, "rel_l2_vs_fp32": error}


def bf16_loss_curves(device: str, seed: int, steps: int = 100) -> list[dict]:
    """Rows: the same short training run (``train.bf16`` false / true, same seed, data order and draws) of the
    benchmark's model on 48 synthetic 32² fields, batch 8, ``steps`` steps: the fixed-draw validation loss every
    ``steps // 4`` steps (``val_losses``), the final one, its ratio to float32's, and the training wall time."""
    import tempfile

    from funcdiff.config import config_from_dict
    from funcdiff.training import Trainer

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bf16 in (False, True):
            config = config_from_dict({
                "noise": {"smoothness": 2.0, "length_scale": 0.05},
                "data": {"source": "synthetic", "channels": ["a", "u"], "resolution": 32, "num_samples": 64,
                         "test_fraction": 0.25, "dim": 2, "seed": seed},
                "model": {k: v for k, v in MODEL.items() if k not in ("backbone", "in_channels", "out_channels")},
                "train": {"steps": steps, "batch_size": 8, "lr": 1e-3, "warmup_steps": 10, "log_every": 0,
                          "eval_every": 0, "checkpoint_every": 0, "out_dir": f"{tmp}/{bf16}", "device": device,
                          "bf16": bf16, "seed": seed}})
            trainer = Trainer.from_config(config, progress=False)
            losses, seconds = [trainer.validation_loss()], 0.0
            for k in range(4):
                start = time.perf_counter()
                trainer.fit(until=(k + 1) * steps // 4)
                seconds += time.perf_counter() - start
                losses.append(trainer.validation_loss())
            rows.append({"grid": 32, "impl": "funcdiff", "pass": "loss-curve", "batch": 8,
                         "threads": torch.get_num_threads(), "dtype": "bfloat16" if bf16 else "float32",
                         "steps": steps, "val_losses": [round(v, 5) for v in losses], "final_loss": losses[-1],
                         "seconds": seconds})
    rows[1]["loss_ratio_vs_fp32"] = rows[1]["final_loss"] / rows[0]["final_loss"]
    return rows


def compile_rows(model: torch.nn.Module, grids: list[int], device: str, repeats: int) -> list[dict]:
    """Rows: ``torch.compile(model)`` against eager, forward and train-step (batch 1) and the VJP of guidance (batch 2,
    weights frozen, gradient with respect to x), at each grid, compiled two ways (``dynamic``): False, a fresh
    compile per grid with static sizes (a long run at one grid); True, one ``torch.compile(model, dynamic=True)``
    for all the grids in turn (multi-grid training; inductor recompiles where a guard of its own fails, e.g. its
    float32 sums of more than 4096 elements). ``compile_seconds`` is the first call at that grid (tracing + code
    generation, or about none where the graph is reused), ``seconds`` the median of
    ``repeats`` interleaved steady-state calls, ``vs_eager`` the ratio. VJP rows also time the eager no-grad forward
    call interleaved (``forward_seconds``) and give both VJPs over it (``eager_vs_forward``, ``compiled_vs_forward``:
    the network's part of a guided step over an unguided one). A failure of the compiler is recorded in the row
    (``error``) instead of a time."""
    import copy

    rows, frozen = [], copy.deepcopy(model).requires_grad_(False)
    for dynamic in (False, True):
        for pass_ in ("forward", "train-step", "vjp"):
            rows += _compiled_pass_rows(model, frozen, pass_, grids, dynamic, device, repeats)
    return rows


def _compiled_pass_rows(model: torch.nn.Module, frozen: torch.nn.Module, pass_: str, grids: list[int],
                        dynamic: bool, device: str, repeats: int) -> list[dict]:
    """:func:`compile_rows` of one pass and one way of compiling (``frozen``: a copy of model without gradients)."""
    import torch._dynamo

    rows = []
    net = frozen if pass_ == "vjp" else model
    batch = 2 if pass_ == "vjp" else 1
    torch._dynamo.reset()
    compiled = torch.compile(net, dynamic=True) if dynamic else None  # symbolic sizes, reused across grids
    for n in grids:
        if not dynamic:
            torch._dynamo.reset()
            compiled = torch.compile(net, dynamic=False)
        x = torch.randn(batch, CHANNELS, n, n, device=device)
        sigma = torch.full((batch,), 0.7, device=device)
        eager, fast = calls(net, True, pass_, x, sigma, torch.float32), calls(compiled, True, pass_, x, sigma,
                                                                               torch.float32)
        forward = calls(frozen, True, "forward", x, sigma, torch.float32) if pass_ == "vjp" else None
        row = {"grid": n, "pass": pass_, "batch": batch, "threads": torch.get_num_threads(), "dtype": "float32",
               "impl": "funcdiff-compiled", "dynamic": dynamic}
        try:
            row["compile_seconds"] = timed(fast, device)
        except Exception as error:  # noqa: BLE001 -- the benchmark records what the compiler said
            rows.append({**row, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"})
            continue
        eager()
        times = {"eager": [], "compiled": [], "forward": []}
        for _ in range(repeats):
            times["eager"].append(timed(eager, device))
            times["compiled"].append(timed(fast, device))
            if forward is not None:
                times["forward"].append(timed(forward, device))
        row["seconds"] = statistics.median(times["compiled"])
        row["eager_seconds"] = statistics.median(times["eager"])
        row["vs_eager"] = row["seconds"] / row["eager_seconds"]
        if forward is not None:
            row["forward_seconds"] = statistics.median(times["forward"])
            row["eager_vs_forward"] = row["eager_seconds"] / row["forward_seconds"]
            row["compiled_vs_forward"] = row["seconds"] / row["forward_seconds"]
        rows.append(row)
        print(f"compile {n}² {pass_} (dynamic={dynamic}): first call {row['compile_seconds']:.3g} s, steady "
              f"{row['seconds']:.4g} s vs eager {row['eager_seconds']:.4g} s", flush=True)
    return rows


def graphed_rows(ours: torch.nn.Module, theirs: torch.nn.Module, grids: list[int], device: str,
                 repeats: int) -> list[dict]:
    """CUDA only. Rows (pass "graphed"): a forward call (batch 1, no grad) eager and replayed from a CUDA graph
    (:class:`~funcdiff.models.graphs.GraphedDenoiser`), funcdiff and neuraloperator's FNO each, interleaved;
    ``vs_neuralop`` is a row's time over neuraloperator's eager call. Rows (pass "sample"): the wall time of
    ``sample`` (Heun, 16 steps, batch 4) with and without ``cuda_graphs``, noise draws included."""
    from funcdiff.models.graphs import GraphedDenoiser
    from funcdiff.noise import GaussianRandomField
    from funcdiff.sampling import sample

    ours.eval(), theirs.eval()
    rows = []
    for n in grids:
        x, sigma = torch.randn(1, CHANNELS, n, n, device=device), torch.full((1,), 0.7, device=device)
        graphed = {"funcdiff": GraphedDenoiser(ours), "neuralop-fno": GraphedDenoiser(lambda y, _: theirs(y))}
        fns = {"funcdiff": lambda: ours(x, sigma), "funcdiff graphed": lambda: graphed["funcdiff"](x, sigma),
               "neuralop-fno": lambda: theirs(x), "neuralop-fno graphed": lambda: graphed["neuralop-fno"](x, sigma)}
        times: dict[str, list[float]] = {name: [] for name in fns}
        with torch.no_grad():
            for fn in fns.values():
                fn()
            for _ in range(repeats):
                for name, fn in fns.items():
                    times[name].append(timed(fn, device))
        seconds = {name: statistics.median(t) for name, t in times.items()}
        for name, t in seconds.items():
            impl = name.split(" ")[0]
            rows.append({"grid": n, "impl": impl, "pass": "graphed", "batch": 1, "graphed": name.endswith("graphed"),
                         "threads": torch.get_num_threads(), "dtype": "float32", "seconds": t,
                         "vs_eager": t / seconds[impl], "vs_neuralop": t / seconds["neuralop-fno"]})
        noise = GaussianRandomField(dim=2, smoothness=2.0, length_scale=0.05)
        walls = {}
        for cuda_graphs in (False, True, False, True):  # interleaved; the first of each warms up
            sync(device)
            start = time.perf_counter()
            sample(ours, (4, CHANNELS, n, n), noise, steps=16, solver="heun", seed=0, device=device,
                   cuda_graphs=cuda_graphs)
            sync(device)
            walls[cuda_graphs] = time.perf_counter() - start
        for cuda_graphs, wall in walls.items():
            rows.append({"grid": n, "impl": "funcdiff", "pass": "sample", "batch": 4, "steps": 16,
                         "graphed": cuda_graphs, "threads": torch.get_num_threads(), "dtype": "float32",
                         "seconds": wall, "vs_eager": wall / walls[False]})
        print(f"{n}² graphed: " + ", ".join(f"{k} {v:.4g} s" for k, v in seconds.items())
              + f"; sample eager {walls[False]:.4g} s, graphed {walls[True]:.4g} s", flush=True)
    return rows


def arguments():
    """The command line (module docstring)."""
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--grids", type=int, nargs="+", default=None, help="grid sides (default 64..1024; quick: ..512)")
    p.add_argument("--latlon", type=latlon_grid, nargs="*", default=None, metavar="HxW",
                   help="non-square grids of extra rows (default 721x1440 in a full run, none in a quick one; no "
                        "value: none)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--memory-batch", type=int, default=8,
                   help="batch of the extra train-step rows at 256² that compare peak memory (0: none)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed calls per implementation (default 30 at 64², 20 at 128², 12 at 256², 6 at 512², else "
                        "3; 5 for the batch rows of the memory comparison; quick fewer)")
    p.add_argument("--passes", nargs="+", default=["forward", "train-step"], choices=["forward", "train-step"])
    p.add_argument("--bf16", action="store_true",
                   help="also time funcdiff under bfloat16 autocast (dtype bfloat16 rows; FFT-like transforms stay "
                        "float32) and measure a seeded sample's error against float32")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile(funcdiff denoiser) against eager, forward and train-step, at "
                        "--compile-grids (impl funcdiff-compiled: compile_seconds is the first call, seconds the "
                        "steady state, vs_eager the ratio)")
    p.add_argument("--compile-grids", type=int, nargs="+", default=None,
                   help="grids of the compile rows (default 64 128; quick: 64)")
    p.add_argument("--guided-grids", type=int, nargs="*", default=None,
                   help="grids of the guided-step rows (dps, mmps vs unguided; default 64 128; quick 64; none: skip)")
    p.add_argument("--graph-grids", type=int, nargs="*", default=None,
                   help="CUDA only: grids of the CUDA-graph rows (eager vs graphed calls and samples; default the "
                        "main grids; none: skip)")
    p.add_argument("--rollout-grids", type=int, nargs="*", default=None,
                   help="grids of the rollout rows (autoregressive, rolling; default 64 256; quick 64; none: skip)")
    return p.parse_args()


def latlon_grid(text: str) -> tuple[int, int]:
    """``"721x1440"`` -> (721, 1440)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 721x1440, got {text!r}") from None
    return h, w


def call_rows(ours, theirs, n: int | tuple[int, int], batch: int, pass_: str, args, grids: list[int]) -> list[dict]:
    """The rows of one grid (a side n, or (H, W)), batch and pass: funcdiff (and its bf16 variant), neuraloperator's
    FNO and the floor, timed interleaved, with funcdiff's growth when the half grid of a square one is in ``grids``."""
    device, rows = args.device, []
    shape = (n, n) if isinstance(n, int) else tuple(n)
    square = isinstance(n, int)
    side = (shape[0] * shape[1]) ** 0.5  # the repeats of the square grid of as many points
    # more repeats where a call is short, so that a median is stable beside other jobs on a shared machine
    by_grid = {64: 10, 128: 6, 256: 4} if args.quick else {64: 30, 128: 20, 256: 12, 512: 6}
    repeats = args.repeats or (next((r for g, r in sorted(by_grid.items()) if side <= g), 3) if batch == 1
                               else 3 if args.quick else 5)
    x = torch.randn(batch, CHANNELS, *shape, device=device)
    sigma = torch.full((batch,), 0.7, device=device)
    fns = {"funcdiff": calls(ours, True, pass_, x, sigma, torch.float32),
           "neuralop-fno": calls(theirs, False, pass_, x, sigma, torch.float32)}
    if args.bf16:
        fns["funcdiff bf16"] = calls(ours, True, pass_, x, sigma, torch.bfloat16)
    peaks = {name: peak_mb(fn, device) for name, fn in fns.items()}  # also the warm-up call
    if square and batch == 1 and n // 2 in grids:  # the growth per doubling, timed interleaved with the calls at n
        half = torch.randn(batch, CHANNELS, n // 2, n // 2, device=device)
        fns["funcdiff half"] = calls(ours, True, pass_, half, sigma, torch.float32)
        fns["funcdiff half"]()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):  # interleaved
        for name, fn in fns.items():
            times[name].append(timed(fn, device))
    floor = floor_seconds(shape, batch, max(repeats, 5), device)
    common = {"grid": shape[0], **({} if square else {"grid_w": shape[1]}), "pass": pass_, "batch": batch,
              "threads": torch.get_num_threads(), "dtype": "float32"}
    seconds = {name: statistics.median(t) for name, t in times.items()}
    for name in [k for k in fns if k != "funcdiff half"]:
        row = {**common, "impl": name.split(" ")[0], "seconds": seconds[name], "peak_mb": peaks[name],
               "dtype": "bfloat16" if " bf16" in name else "float32"}
        if name.startswith("funcdiff"):
            row.update(vs_neuralop=seconds[name] / seconds["neuralop-fno"],
                       vs_floor=seconds[name] / floor[pass_])
        if name == "funcdiff" and "funcdiff half" in seconds:
            row["growth"] = seconds[name] / seconds["funcdiff half"]
        rows.append(row)
    rows.append({**common, "impl": "floor", "seconds": floor[pass_], "peak_mb": None,
                 "fft_seconds": floor["fft_seconds"], "gemm_gflops": floor["gemm_gflops"],
                 "bandwidth_gbs": floor["bandwidth_gbs"]})
    label = f"{n}²" if square else f"{shape[0]}x{shape[1]}"
    print(f"{label} {pass_} batch {batch}: " + ", ".join(f"{k} {v:.4g} s" for k, v in seconds.items())
          + f", floor {floor[pass_]:.4g} s", flush=True)
    return rows


def report(rows: list[dict]) -> None:
    """Fill the growth of rows whose half grid was timed separately, and print every table."""
    for row in rows:
        if row["impl"] == "funcdiff" and row["pass"] in ("forward", "train-step"):
            half = [r for r in rows if r["impl"] == "funcdiff" and r["pass"] == row["pass"] and "grid_w" not in r
                    and r["batch"] == row["batch"] and r["dtype"] == row["dtype"] and r["grid"] * 2 == row["grid"]]
            if half and "growth" not in row and "grid_w" not in row:
                row["growth"] = row["seconds"] / half[0]["seconds"]
    main_rows = [r for r in rows if r["pass"] in ("forward", "train-step") and r["impl"] != "funcdiff-compiled"]
    print_table(main_rows, COLUMNS)
    for pass_, columns in (("guided-step", GUIDED_COLUMNS), ("rollout", ROLLOUT_COLUMNS),
                           ("sample-error", ["grid", "dtype", "steps", "rel_l2_vs_fp32"]),
                           ("loss-curve", ["grid", "dtype", "steps", "val_losses", "loss_ratio_vs_fp32", "seconds"])):
        if any(r["pass"] == pass_ for r in rows):
            print_table([r for r in rows if r["pass"] == pass_], columns)
    for pass_ in ("graphed", "sample"):
        if any(r["pass"] == pass_ for r in rows):
            print_table([r for r in rows if r["pass"] == pass_],
                        ["grid", "impl", "pass", "batch", "graphed", "seconds", "vs_eager", "vs_neuralop"])
    compiled = [r for r in rows if r["impl"] == "funcdiff-compiled"]
    if compiled:
        print_table(compiled, ["grid", "pass", "dynamic", "batch", "compile_seconds", "seconds", "eager_seconds", "vs_eager",
                               "eager_vs_forward", "compiled_vs_forward", "error"])


def main() -> None:
    args = arguments()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = args.device
    grids = args.grids or ([64, 128, 256, 512] if args.quick else [64, 128, 256, 512, 1024])
    ours = build_denoiser(MODEL).to(device)
    theirs = neuralop_fno().to(device)
    latlon = args.latlon if args.latlon is not None else ([] if args.quick else [(721, 1440)])
    jobs = [(n, args.batch, pass_) for n in [*grids, *latlon] for pass_ in args.passes]
    if args.memory_batch and 256 in grids and "train-step" in args.passes:
        jobs.append((256, args.memory_batch, "train-step"))
    rows = []
    out = args.out or Path(__file__).resolve().parent / "results" / (
        "denoiser_speed_quick.json" if args.quick else "denoiser_speed.json")

    def save(complete: bool) -> None:
        """The rows so far, written atomically after each part: a run stopped by a time limit keeps them."""
        write_json(rows, out, {"benchmark": "denoiser_speed", "model": MODEL, "neuralop_fno": {
            "n_modes": [MODES, MODES], "hidden_channels": WIDTH, "n_layers": LAYERS}, "quick": args.quick,
            "threads": torch.get_num_threads(), "complete": complete})

    for n, batch, pass_ in jobs:
        rows += call_rows(ours, theirs, n, batch, pass_, args, grids)
    save(complete=False)
    graph_grids = args.graph_grids if args.graph_grids is not None else grids
    if device.startswith("cuda") and graph_grids:
        rows += graphed_rows(ours, theirs, graph_grids, device, repeats=max(5, args.repeats or 20))
        save(complete=False)
    from _posterior_speed import guided_rows, rollout_rows

    guided = args.guided_grids if args.guided_grids is not None else ([64] if args.quick else [64, 128])
    rollouts = args.rollout_grids if args.rollout_grids is not None else ([64] if args.quick else [64, 256])
    if guided:
        rows += guided_rows(guided, device, repeats=1 if args.quick else 5)
        save(complete=False)
    if rollouts:
        rows += rollout_rows(rollouts, device, repeats=1 if args.quick else 2)
        save(complete=False)
    if args.bf16:
        rows.append(bf16_sample_error(ours, device, args.seed))
        rows += bf16_loss_curves(device, args.seed, steps=40 if args.quick else 100)
        save(complete=False)
    if args.compile:  # last: the compiler's worker processes and caches stay behind
        compile_grids = args.compile_grids or ([64] if args.quick else [64, 128])
        rows += compile_rows(ours, compile_grids, device, repeats=3 if args.quick else 5)
        save(complete=False)
    report(rows)
    save(complete=True)


if __name__ == "__main__":
    main()
