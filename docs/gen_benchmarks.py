"""Benchmark pages of the docs, generated from ``benchmarks/results/*.json`` (standard library only, no torch).

Every result file (``{"meta": {...}, "rows": [...]}``, written by ``benchmarks/_common.write_json``) becomes one
table on the page of its family: the columns are the keys of its rows (in first-seen order), the header lists the
command (when the file recorded one), the machine, torch and thread count from ``meta``, and the remaining settings
as JSON. Nothing is copied by hand: rerun a benchmark with ``--out benchmarks/results/NAME.json`` and rebuild the
docs. Load averages and the wall time of a particular run are left out (they describe the machine's day, not the
method); timings that *are* the measurement (a column of the rows) stay.

``python docs/gen_benchmarks.py OUT_DIR`` writes the pages as files; ``docs/hooks.py`` adds them to the site at
build time.
"""

from __future__ import annotations

import ast
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# result-file prefix -> the script that writes it
SCRIPTS = {"noise": "noise.py", "sampler_overhead": "sampler_overhead.py", "scaling": "scaling.py",
           "pde_solvers": "pde_solvers.py", "gpu": "gpu.py", "denoiser_speed": "denoiser_speed.py",
           "sfno_speed": "sfno_speed.py", "row_layout_speed": "row_layout_speed.py",
           "repeated_vjps": "repeated_vjps.py",
           "threads": "threads.py", "guidance": "guidance.py",
           "inverse_problems": "inverse_problems.py", "inverse_methods": "inverse_problems.py",
           "few_step_guidance": "few_step_guidance.py", "forecasting": "forecasting.py", "era5": "era5.py",
           "sphere_solve": "sphere_solve.py", "wavelet": "wavelet.py", "batch": "batch.py",
           "data_streaming": "data_streaming.py", "chunk_size": "chunk_size.py", "op_counts": "profile_call.py"}

# page -> (title, script(s), result-file prefixes, introduction). A result file goes to the first page with a
# matching prefix; files that match none go to "other", so a new benchmark is never silently dropped.
PAGES: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "speed": ("Speed: noise, solvers, sampler, scaling, threads", "noise.py, sampler_overhead.py, scaling.py, "
              "pde_solvers.py, gpu.py, denoiser_speed.py, sfno_speed.py, row_layout_speed.py, repeated_vjps.py, "
              "chunk_size.py, profile_call.py, threads.py",
              ("noise", "sampler_overhead", "scaling", "pde_solvers", "gpu", "denoiser_speed", "sfno_speed",
               "row_layout_speed", "repeated_vjps", "chunk_size", "op_counts", "threads"),
              "Cost of the building blocks: GRF sampling by FFT against a dense Cholesky factor of the same "
              "covariance, the sampler's overhead over bare denoiser calls, denoiser and training-step time "
              "against the grid size, throughput and accuracy of the data generators (error against a grid "
              "twice as fine), training/sampling throughput (`benchmarks/gpu.py`; its CPU run here), one denoiser "
              "call against neuraloperator's FNO (`denoiser_speed`), one SFNO call against neuraloperator's SFNO and "
              "against funcdiff's SFNO before its blocks ran on the row layout, on lat-lon grids up to ERA5's "
              "0.25° (`sfno_speed`), the FNO, UNO and local FNO on the row layout against the "
              "same weights channels first (`row_layout_speed`), several VJPs through one denoiser call (MMPS's CG "
              "iterations) with and without the kept GELU derivatives of `funcdiff.utils.repeated_vjps`, and "
              "through a model whose weights still require grad (`repeated_vjps`), and torch thread counts alone and beside a "
              "competing job (`threads`). Files ending in `_h200` were measured on one NVIDIA H200 GPU "
              "(`--device cuda`), with CUDA-graph rows (`graphed`, `sample`) and the chunk size of the row "
              "layout on that device (`chunk_size_h200`). `op_counts`: the aten operators one inference call "
              "dispatches along the CPU's and the GPU's code paths (counted on a CPU; on a GPU about one kernel "
              "launch per operator that is not a view)."),
    "guidance": ("Guidance and inverse problems", "guidance.py, inverse_problems.py, few_step_guidance.py",
                 ("guidance", "inverse_problems", "inverse_methods", "few_step_guidance"),
                 "Guided sampling against a closed-form Gaussian posterior (`guidance`), the FunDPS protocol on "
                 "Darcy, Poisson, Helmholtz and Navier–Stokes (3 % of the grid observed; relative L2 of the "
                 "posterior mean (`estimator: mean`) and of single samples, against interpolation (+ solver), "
                 "FNO regression and, for the linear problems, the exact Gaussian posterior), the six posterior "
                 "samplers side by side (`inverse_methods_*`), zero-shot 128² from a 64² model, and few-step "
                 "sampling with and without the trust region."),
    "forecasting": ("Forecasting", "forecasting.py", ("forecasting",),
                    "Autoregressive and rolling diffusion against a deterministic FNO of the same backbone, "
                    "persistence and climatology, on held-out trajectories of Kolmogorov flow (64²) and Burgers "
                    "(1024 points), with and without 1 % sensors: per lead RMSE of the ensemble mean, fair CRPS, "
                    "spread–skill ratio and spectrum error."),
    "sphere": ("Sphere and ERA5-like data", "era5.py, sphere_solve.py", ("era5", "sphere_solve"),
               "Shallow-water data in the ERA5 layouts on a 5.625° grid: the SFNO diffusion forecaster against "
               "persistence and climatology (area-weighted RMSE, ACC, CRPS, SSR per lead), and reconstruction "
               "of z500/u500 from stations (`sphere_solve`: area-weighted RMSE over the grid and at the "
               "stations, guided mean and single sample, unguided sample, climatology)."),
    "wavelet": ("Wavelet trajectories and super-resolution", "wavelet.py", ("wavelet",),
                "Whole-trajectory diffusion in the wavelet domain against the same model in physical space at "
                "equal steps and NFE (Burgers with shocks, 2-D Navier–Stokes), coefficient-noise study, forced "
                "Burgers and its ablation, and zero-shot super-resolution 2×/4× against interpolation and a "
                "model trained at the fine grid. Baselines are in each file's settings (`baselines`)."),
    "batch": ("Batch inference", "batch.py", ("batch",),
              "Rank-sharded batch inference (`solve --cases`) on 1 and K processes: cases per second and "
              "whether the merged file is identical to the single-process one. `batch_forecast_io`: a batch "
              "forecast from an ERA5-like store read lazily or whole (values and store chunks read per case, "
              "peak memory at 1× and 4× the store size, default and one-step time chunks), and the same "
              "forecast written to netCDF and to zarr."),
    "backbones": ("Backbones: FNO, UNO, local + spectral", "forecasting.py, wavelet.py, inverse_problems.py",
                  ("backbones",),
                  "The denoiser backbones side by side at equal training compute: each model is trained for the "
                  "same budget of process CPU seconds on one torch thread (`time.process_time`), so a slower "
                  "backbone takes fewer steps. Rolling forecasters on Kolmogorov flow and Burgers (per-shell "
                  "spectrum ratio at leads 41–60, CRPS and SSR per lead), whole Burgers trajectories with shocks "
                  "in physical and wavelet space and zero-shot 2×/4× super-resolution, and Darcy/Poisson inverse "
                  "problems (dps, mmps-physics). The summary first, then every file's rows. See also the "
                  "[backbones guide](../backbones.md)."),
    "data": ("Data streaming", "data_streaming.py", ("data_streaming",),
             "Training from a store on disk (`data.stream: true`, DataLoader workers) against the same data in "
             "memory: samples per second and their ratio to the in-memory run at the same grid and model "
             "(`step_time_ratio_vs_memory`: step time over the in-memory step time), from zarr with one time step "
             "per chunk and with ~64 MB chunks, netCDF and HDF5; peak resident memory of the training process "
             "(`peak_rss_gb`) on a store and on one 4× larger; the SFNO forecaster on a 0.25° store. See the "
             "[data streaming guide](../data-streaming.md)."),
    "other": ("Other results", "", (), "Result files whose name matches no page above."),
}

HIDDEN_META = {"machine", "torch", "threads", "threads_per_process", "cpu_count", "quick", "command", "note",
               "benchmark", "work", "checkpoint", "checkpoints"}
COLLAPSE_ROWS = 40  # longer tables are folded (click to open)


def _hidden(key: str) -> bool:
    """Keys about the run rather than the method: load averages and wall times of the whole run."""
    return key in HIDDEN_META or "loadavg" in key or key in {"seconds", "seconds_total", "wall_seconds",
                                                             "timings_s", "forecast_seconds"}


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + "_")


def page_of(name: str) -> str:
    for page, (_, _, prefixes, _) in PAGES.items():
        if any(_matches(name, p) for p in prefixes):
            return page
    return "other"


def script_of(name: str) -> str | None:
    return next((script for prefix, script in SCRIPTS.items() if _matches(name, prefix)), None)


def fmt(value) -> str:
    """A table cell: floats to 4 significant digits, NaN as '–', nested values as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (dict, list)):
        value = json.dumps(value, separators=(",", ":"))
    return str(value).replace("|", "\\|").replace("\n", " ")


def columns(rows: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update((k, None) for k in row if "loadavg" not in k)
    return list(seen)


def table(rows: list[dict]) -> list[str]:
    cols = columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return lines


def section(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    meta, rows = data.get("meta", {}), data.get("rows", [])
    out = [f"## `{path.name}`", ""]
    if meta.get("command"):
        out += [f"Command: `{meta['command']}`", ""]
    elif script_of(path.stem):
        mode = " with `--quick`" if meta.get("quick") else ""
        out += [f"Made by `benchmarks/{script_of(path.stem)}`{mode} (the file does not record its full command "
                f"line).", ""]
    threads = meta.get("threads", meta.get("threads_per_process"))
    facts = [f"machine: {meta['machine']}" if "machine" in meta else None,
             f"torch {meta['torch']}" if "torch" in meta else None,
             f"{threads} torch thread(s)" + (" per process" if "threads_per_process" in meta else "")
             if threads is not None else None,
             f"{meta['cpu_count']} CPU cores" if "cpu_count" in meta else None]
    facts = [f for f in facts if f]
    if facts:
        out += ["Run on " + "; ".join(facts) + ".", ""]
    if meta.get("note"):
        out += [f"Note: {meta['note']}.", ""]
    figure = path.with_suffix(".png")
    if figure.exists():
        out += [f"![{path.stem}](results/{figure.name})", ""]
    if rows:
        lines = table(rows)
        if len(rows) > COLLAPSE_ROWS:
            out += [f'??? note "All {len(rows)} rows"', ""] + ["    " + line for line in lines]
        else:
            out += lines
    else:
        out += ["(no rows)"]
    settings = {k: v for k, v in meta.items() if not _hidden(k)}
    if settings:
        out += ["", '??? info "Settings recorded in the file"', "", "    ```json"]
        out += ["    " + line for line in json.dumps(settings, indent=1, ensure_ascii=False).splitlines()]
        out += ["    ```"]
    out += ["", f"[Download the JSON](results/{path.name})", ""]
    return out


def script_summaries(folder: Path = RESULTS.parent) -> list[tuple[str, str]]:
    """(script, first paragraph of its docstring) for every benchmark script, read without importing it."""
    out = []
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        first = " ".join(doc.split("\n\n")[0].split())
        out.append((path.name, re.sub(r"\s*\((?:see )?issues? \d+[^)]*\)", "", first)))
    return out


def pages(results: Path = RESULTS) -> dict[str, str]:
    """``{"benchmarks/<page>.md": markdown}`` for every page, plus ``benchmarks/index.md``."""
    files: dict[str, list[Path]] = {page: [] for page in PAGES}
    for path in sorted(results.glob("*.json")):
        files[page_of(path.stem)].append(path)
    out = {}
    index = ["# Benchmarks", "",
             "Each script in `benchmarks/` takes `--quick` (CPU-sized) and `--out FILE.json`, prints a table and "
             "writes JSON rows to `benchmarks/results/`. The pages below are generated from those files when the "
             "docs are built (`docs/gen_benchmarks.py`): one table per file, nothing copied by hand.", "",
             "| page | scripts | result files |", "|---|---|---|"]
    scripts_table = ["", "## The scripts", "", "From each script's docstring:", "", "| script | measures |", "|---|---|"]
    scripts_table += [f"| `benchmarks/{name}` | {fmt(text)} |" for name, text in script_summaries(results.parent)]
    for page, (title, scripts, _, intro) in PAGES.items():
        if page == "other" and not files[page]:
            continue
        body = [f"# {title}", "", intro, ""]
        if page == "backbones":
            body += backbone_summary(files[page])
        if page == "speed":
            body += denoiser_summary(files[page])
        if scripts:
            body += ["Scripts: " + ", ".join(f"`benchmarks/{s.strip()}`" for s in scripts.split(",")) + ".", ""]
        for path in files[page]:
            body += section(path)
        if not files[page]:
            body += ["No result files yet."]
        out[f"benchmarks/{page}.md"] = "\n".join(body) + "\n"
        index.append(f"| [{title}]({page}.md) | {scripts or '–'} | {len(files[page])} |")
    out["benchmarks/index.md"] = "\n".join(index + scripts_table) + "\n"
    return out


BACKBONE_ORDER = ("fno", "uno", "local_fno")


def _summary_row(label: str, values: dict) -> str:
    return f"| {label} | " + " | ".join(fmt(values.get(b)) for b in BACKBONE_ORDER) + " |"


def backbone_summary(paths: list[Path]) -> list[str]:
    """One table, a measure per line and a backbone per column, from the ``backbones_*`` result files (their
    summary rows, the single-sample and mean rows of the inverse problems, the shock and MSE rows of the
    trajectories and the 2x super-resolution against spectral interpolation)."""
    lines: dict[str, dict] = {}

    def put(label: str, backbone, value) -> None:
        if backbone is not None and value is not None:
            lines.setdefault(label, {})[backbone] = value

    for path in paths:
        rows = json.loads(path.read_text()).get("rows", [])
        for r in rows:
            b = r.get("backbone")
            if r.get("summary"):
                pde = r["pde"]
                put(f"{pde}: training steps in the budget", b, r.get("steps"))
                put(f"{pde}: worst spectrum ratio, leads 41–60 (goal within 2×)", b, r.get("worst_shell_ratio"))
                put(f"{pde}: SSR range at leads ≥ 5 (goal 0.8–1.2)", b,
                    f"{fmt(r.get('ssr_min'))}–{fmt(r.get('ssr_max'))}")
                put(f"{pde}: CRPS at lead 10 / 50", b, f"{fmt(r.get('crps_lead_10'))} / {fmt(r.get('crps_lead_50'))}")
            elif r.get("shock_error") is not None and "factor" not in r and b:
                put(f"{r['pde']} {r['method']}: shock error / MSE", b,
                    f"{fmt(r['shock_error'])} / {fmt(r['mse'])}")
            elif r.get("factor") == 2 and r.get("estimate", "").startswith("mean"):
                put("super-resolution 2×, mean of members: MSE", b, r["mse"])
            elif r.get("factor") == 2 and r.get("method") == "interpolation" and r.get("estimate") == "spectral":
                for backbone in BACKBONE_ORDER:
                    put("spectral interpolation 2×: MSE (reference)", backbone, r["mse"])
            elif "zero_shot_ratio" in r:
                put(f"{r['task']} {r['direction']}, {r['method']} {r['steps']} steps, {r['estimator']}: error at 128² / "
                    f"at 64², trained on {r['training_grids']}² (goal ≤ 1.2)", b, r["zero_shot_ratio"])
            elif r.get("task") and b and r.get("estimator") in ("single", "mean"):
                put(f"{r['task']} {r['direction']}, {r['method']} {r['steps']} steps, {r['estimator']}: rel. L2",
                    b, r["rel_l2"])
    if not lines:
        return []
    out = ["## Summary", "", "| measure | " + " | ".join(BACKBONE_ORDER) + " |", "|---|" + "---|" * 3]
    out += [_summary_row(label, values) for label, values in lines.items()]
    return out + [""]


def denoiser_summary(paths: list[Path]) -> list[str]:
    """The denoiser's speed at a glance, from ``denoiser_speed.json`` (the full run): per grid at batch 1, funcdiff's
    time over neuraloperator's FNO (forward and training step, float32 and bf16), the growth per doubling of the
    side and the ratio to the measured floor; then guided sampling steps against unguided ones."""
    full = [path for path in paths if path.name == "denoiser_speed.json"]
    if not full:
        return []
    rows = json.loads(full[0].read_text()).get("rows", [])

    def pick(**keys):
        return next((r for r in rows if all(r.get(k) == v for k, v in keys.items())), {})

    def pair(grid: tuple, field: str, dtype: str = "float32") -> str:
        values = [pick(grid=grid[0], grid_w=grid[1], batch=1, impl="funcdiff", dtype=dtype, **{"pass": p}).get(field)
                  for p in ("forward", "train-step")]
        return " / ".join("–" if v is None else fmt(v) for v in values)

    def label(grid: tuple) -> str:
        return f"{grid[0]}²" if grid[1] is None else f"{grid[0]}×{grid[1]}"

    grids = sorted({(r["grid"], r.get("grid_w")) for r in rows if r.get("impl") == "funcdiff" and r.get("batch") == 1
                    and r.get("pass") in ("forward", "train-step")}, key=lambda g: g[0] * (g[1] or g[0]))
    out = ["## Summary: funcdiff's denoiser against neuraloperator's FNO", "",
           "From `denoiser_speed.json`, batch 1, forward / training step. Ratio: funcdiff's time over "
           "neuraloperator's FNO of the same width, modes and layers (below 1: funcdiff is faster). Growth: the "
           "time over the time at half the side. Floor: the time over the floor measured on the machine."
           + (" 721×1440 is ERA5's 0.25° grid." if (721, 1440) in grids else ""), "",
           "| grid | ratio float32 | ratio bf16 | growth float32 | vs floor float32 |", "|---|---|---|---|---|"]
    out += [f"| {label(g)} | {pair(g, 'vs_neuralop')} | {pair(g, 'vs_neuralop', 'bfloat16')} | {pair(g, 'growth')} | "
            f"{pair(g, 'vs_floor')} |" for g in grids]
    guided = sorted({r["grid"] for r in rows if r.get("pass") == "guided-step"})
    if guided:
        out += ["", "| grid | dps step / unguided step | one mmps CG iteration / unguided step |", "|---|---|---|"]
        for n in guided:
            eager = [r for r in rows if r.get("pass") == "guided-step" and r.get("grid") == n and not r.get("graphed")]
            dps = next((r["guided_ratio"] for r in eager if r.get("impl") == "dps"), None)
            cg = next((r["per_cg_iter_vs_unguided"] for r in eager if r.get("impl") == "mmps"), None)
            out.append(f"| {n}² | {fmt(dps)} | {fmt(cg)} |")
    return out + [""]


def assets(results: Path = RESULTS) -> dict[str, Path]:
    """Files the pages link to: ``{"benchmarks/results/<name>": path}`` (the JSON files and their plots)."""
    return {f"benchmarks/results/{p.name}": p for p in sorted(results.iterdir()) if p.suffix in {".json", ".png"}}


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "site-benchmarks")
    for name, text in pages().items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text(text)
        print(f"wrote {target / name}")
