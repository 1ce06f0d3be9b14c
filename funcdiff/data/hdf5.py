"""funcdiff's own HDF5 layout: a resumable, deterministic batched writer and its reader.

Layout (see ``datasets/README.md``)::

    /<field>   (N, *spatial) for pair problems, (N, T, *spatial) for trajectories; chunked, one per field
    /t         (T,)  times of the trajectory frames (trajectory problems only), measured from the end of the
                     spin-up; attrs units = "1" (nondimensional PDE time), long_name, and where known dt (frame
                     spacing, uniform frames only) and spin_up, also copied to the file attrs (time_units, dt, spin_up)
    /x, /y, /z (R,)  grid coordinates (as many as spatial dims): j / R on [0, 1) for periodic problems,
                     j / (R - 1) on [0, 1] for the Dirichlet problems (attr grid.type = "periodic" / "node")
    attrs: funcdiff_format, pde, kind, fields, params (JSON), resolution, dim, grid, num_samples, seed,
           batch_size, solver, description, funcdiff_version, created, generation_args (JSON),
           num_written, complete, normalization (JSON {field: {mean, std}}); each field also has mean/std attrs.

A run writes ``<out>.partial`` and renames it to ``<out>`` when complete. Batch ``i`` draws from a CPU generator
seeded by ``batch_seed(seed, i)``, so a run resumed after a kill is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol

import h5py
import numpy as np
import torch
from torch import Tensor

FORMAT_NAME = "funcdiff-hdf5-v1"
COORD_NAMES = ("x", "y", "z")
# Problems solved on the node grid j / (R - 1) of [0, 1] (Dirichlet); all others are periodic on [0, 1).


class ProblemLike(Protocol):
    """What the writer needs from a ``funcdiff.pde.Problem``."""

    name: str
    kind: str
    fields: tuple[str, ...]
    defaults: dict
    generate: Callable[..., dict[str, Tensor]]
    description: str
    grid: str  # "periodic" or "node"
    solver: str  # what makes the data ("" : the problem's name)


def batch_seed(seed: int, batch_index: int) -> int:
    """A 63-bit seed for batch ``batch_index`` of a run with ``seed``, independent of batch order."""
    state = np.random.SeedSequence([int(seed), int(batch_index)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def partial_path(out: str | os.PathLike) -> Path:
    """The in-progress file name for ``out``: ``<out>.partial``."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def resolve_params(problem: ProblemLike, params: dict | None) -> dict:
    """Problem defaults overridden by ``params``; unknown names raise ValueError listing the valid ones."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(problem.defaults))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for problem {problem.name!r}; "
                         f"valid: {sorted(problem.defaults)}")
    return {**problem.defaults, **params}


def generation_args(problem: ProblemLike, num_samples: int, resolution: int, seed: int, batch_size: int,
                    params: dict, device: str, dtype: torch.dtype) -> dict:
    """The arguments that determine a file's contents; a resume must match them exactly."""
    if num_samples < 1 or resolution < 1 or batch_size < 1:
        raise ValueError(f"num_samples, resolution and batch_size must be positive, got "
                         f"{num_samples}, {resolution}, {batch_size}")
    return {"pde": problem.name, "num_samples": int(num_samples), "resolution": int(resolution),
            "seed": int(seed), "batch_size": int(batch_size), "params": params,
            "device": torch.device(device).type, "dtype": str(dtype).replace("torch.", "")}


def generate_to_hdf5(problem: ProblemLike, out: str | os.PathLike, *, num_samples: int, resolution: int,
                     seed: int = 0, batch_size: int = 32, params: dict | None = None, device: str = "cpu",
                     dtype: torch.dtype = torch.float32, max_batches: int | None = None,
                     overwrite: bool = False, progress: bool = True) -> Path:
    """Generate ``num_samples`` samples of ``problem`` into ``out`` in our HDF5 layout, resumably.

    Re-invoking with the same arguments after an interruption continues from the stored ``num_written``.
    ``max_batches`` stops after that many batches in this call (leaving ``<out>.partial``), for tests.

    Shapes:
        each field is stored as ``(num_samples, *spatial)`` (pairs) or ``(num_samples, T, *spatial)``.

    Returns:
        ``out`` when complete, else the ``.partial`` path.
    """
    out, part = Path(out), partial_path(out)
    args = generation_args(problem, num_samples, resolution, seed, batch_size,
                           resolve_params(problem, params), device, dtype)
    if _handle_existing(out, part, args, overwrite):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with _open_partial(part, args) as f:
        done = _write_batches(f, problem, args, dtype, max_batches, progress)
        if not done:
            return part
        _finalize(f)
    os.replace(part, out)
    return out


def _handle_existing(out: Path, part: Path, args: dict, overwrite: bool) -> bool:
    """Delete old files if ``overwrite``; True when ``out`` is already complete with the same arguments."""
    if overwrite:
        for path in (out, part):
            path.unlink(missing_ok=True)
        return False
    if not out.exists():
        return False
    _check_args(out, _read_json_attr(out, "generation_args"), args)
    return True


def _read_json_attr(path: Path, name: str) -> dict:
    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs[name])
    except BlockingIOError as err:
        raise ValueError(f"{path} is locked: another process is writing it ({err})") from err
    except (OSError, KeyError) as err:
        raise ValueError(f"{path} is not a readable funcdiff HDF5 file ({err}); "
                         "delete it or pass overwrite=True") from err


def _check_args(path: Path, stored: dict, args: dict) -> None:
    """ValueError listing every argument that differs between ``stored`` and ``args``."""
    if stored == args:
        return
    diffs = [f"{k}: file has {stored.get(k)!r}, requested {args.get(k)!r}"
             for k in sorted(set(stored) | set(args)) if stored.get(k) != args.get(k)]
    raise ValueError(f"{path} was generated with different arguments ({'; '.join(diffs)}); "
                     "re-run with the original arguments or pass overwrite=True")


def _open_partial(part: Path, args: dict) -> h5py.File:
    """Open an existing ``.partial`` (checking its arguments) or create a new one with the static attrs."""
    if part.exists():
        _check_args(part, _read_json_attr(part, "generation_args"), args)
        return h5py.File(part, "r+")
    f = h5py.File(part, "w")
    f.attrs.update({"funcdiff_format": FORMAT_NAME, "generation_args": json.dumps(args, sort_keys=True),
                    "num_written": 0, "complete": False,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    f.flush()
    return f


def _write_batches(f: h5py.File, problem: ProblemLike, args: dict, dtype: torch.dtype,
                   max_batches: int | None, progress: bool) -> bool:
    """Write the remaining batches in order; True when all ``num_samples`` are written."""
    from tqdm.auto import tqdm

    n, bs = args["num_samples"], args["batch_size"]
    written = int(f.attrs["num_written"])
    n_batches = -(-n // bs)
    todo = range(written // bs, n_batches)
    if max_batches is not None:
        todo = todo[:max_batches]
    with tqdm(total=n, initial=written, unit="sample", desc=problem.name, disable=not progress) as bar:
        for i in todo:
            count = min(bs, n - i * bs)
            batch = _generate_batch(problem, args, i, count, dtype)
            _write_batch(f, problem, args, batch, i * bs)
            bar.update(count)
    return int(f.attrs["num_written"]) == n


def _generate_batch(problem: ProblemLike, args: dict, index: int, count: int,
                    dtype: torch.dtype) -> dict[str, Tensor]:
    # a CPU generator on every device: the same seed draws the same random inputs on CPU and GPU
    generator = torch.Generator().manual_seed(batch_seed(args["seed"], index))
    batch = problem.generate(count, args["resolution"], generator=generator, device=args["device"],
                             dtype=dtype, **args["params"])
    missing = [k for k in problem.fields if k not in batch]
    if missing:
        raise ValueError(f"problem {problem.name!r} returned keys {sorted(batch)}, missing fields {missing}")
    for k in problem.fields:
        if batch[k].shape[0] != count:
            raise ValueError(f"problem {problem.name!r} field {k!r} has {batch[k].shape[0]} samples, "
                             f"expected {count}")
    return batch


def _write_batch(f: h5py.File, problem: ProblemLike, args: dict, batch: dict[str, Tensor], start: int) -> None:
    """Write one batch at ``start`` (creating datasets on the first batch), then bump ``num_written``."""
    if any(k not in f for k in problem.fields):
        _create_layout(f, problem, args, batch)
    count = batch[problem.fields[0]].shape[0]
    for k in problem.fields:
        f[k][start:start + count] = batch[k].detach().cpu().numpy()
    f.flush()
    f.attrs["num_written"] = start + count
    f.flush()


def _create_layout(f: h5py.File, problem: ProblemLike, args: dict, batch: dict[str, Tensor]) -> None:
    """Create the chunked field datasets, coordinates, times and static attributes (replacing any left by a
    run killed while creating them, which had written no samples)."""
    for name in (*problem.fields, *COORD_NAMES, "t"):
        if name in f:
            del f[name]
    n = args["num_samples"]
    for k in problem.fields:
        sample = tuple(batch[k].shape[1:])
        itemsize = batch[k].element_size() * max(1, int(np.prod(sample)))
        rows = int(max(1, min(args["batch_size"], n, (1 << 20) // itemsize)))
        f.create_dataset(k, shape=(n, *sample), dtype=batch[k].detach().cpu().numpy().dtype,
                         chunks=(rows, *sample))
    first = batch[problem.fields[0]]
    dim = first.ndim - (2 if problem.kind == "trajectory" else 1)
    coords = _coordinates(batch, dim, args["resolution"], grid_type(problem))
    for name, values in coords.items():
        f.create_dataset(name, data=values)
    if "t" in batch:
        t = f.create_dataset("t", data=batch["t"].detach().cpu().numpy())
        time_attrs = _time_attrs(np.asarray(t[...], dtype=np.float64), args["params"])
        t.attrs.update(time_attrs)
        f.attrs.update({("time_units" if k == "units" else k): v for k, v in time_attrs.items() if k != "long_name"})
    f.attrs.update(_static_attrs(problem, args, dim, first.shape[1 + (problem.kind == "trajectory"):]))


def _time_attrs(t: np.ndarray, params: dict) -> dict[str, Any]:
    """Attributes of the time coordinate ``t`` ``(T,)``: units, long_name, the frame spacing ``dt`` (only when the
    frames are equally spaced, to float32 precision) and the discarded ``spin_up`` (only when the problem has one)."""
    attrs: dict[str, Any] = {"units": "1", "long_name": "time since the end of the spin-up (nondimensional)"}
    steps = np.diff(t)
    if steps.size and np.allclose(steps, steps.mean(), rtol=1e-5, atol=0.0):
        attrs["dt"] = float(params["dt"]) if params.get("dt") is not None else float(steps.mean())
    if params.get("spin_up") is not None:
        attrs["spin_up"] = float(params["spin_up"])
    return attrs


def grid_type(problem: ProblemLike) -> str:
    """``"periodic"`` (points ``j / R`` on ``[0, 1)``) or ``"node"`` (points ``j / (R - 1)`` on ``[0, 1]``, the
    Dirichlet elliptic problems), as the problem declares it (default periodic)."""
    grid = problem.grid
    if grid not in ("periodic", "node"):
        raise ValueError(f"problem {problem.name!r} has unknown grid {grid!r}; valid: 'periodic', 'node'")
    return grid


def _coordinates(batch: dict[str, Tensor], dim: int, resolution: int, grid: str) -> dict[str, np.ndarray]:
    """Grid coordinates per axis: from the batch when the problem returns them, else from ``grid``."""
    coords = {}
    for name in COORD_NAMES[:dim]:
        if name in batch:
            coords[name] = batch[name].detach().cpu().numpy()
        elif grid == "node":
            coords[name] = np.linspace(0.0, 1.0, resolution, dtype=np.float64)
        else:
            coords[name] = np.arange(resolution, dtype=np.float64) / resolution
    return coords


def _static_attrs(problem: ProblemLike, args: dict, dim: int, spatial: tuple[int, ...]) -> dict[str, Any]:
    from funcdiff import __version__

    return {"pde": problem.name, "kind": problem.kind, "fields": json.dumps(list(problem.fields)),
            "params": json.dumps(args["params"], sort_keys=True), "resolution": args["resolution"],
            "dim": dim, "grid": json.dumps({"type": grid_type(problem), "shape": list(spatial),
                                            "domain": [[0.0, 1.0]] * dim, "coordinates": list(COORD_NAMES[:dim])}),
            "num_samples": args["num_samples"], "seed": args["seed"], "batch_size": args["batch_size"],
            "solver": problem.solver or problem.name,
            "description": problem.description, "funcdiff_version": __version__}


def _finalize(f: h5py.File) -> None:
    """Store per-field mean/std (float64, one chunked pass) and mark the file complete."""
    fields = json.loads(f.attrs["fields"])
    stats = {k: field_statistics(f[k]) for k in fields}
    for k, (mean, std) in stats.items():
        f[k].attrs.update({"mean": mean, "std": std})
    f.attrs["normalization"] = json.dumps({k: {"mean": m, "std": s} for k, (m, s) in stats.items()})
    f.attrs["complete"] = True
    f.flush()


def field_statistics(dataset: h5py.Dataset, rows: int = 256) -> tuple[float, float]:
    """Mean and population standard deviation of a dataset, read ``rows`` samples at a time (float64,
    blocks merged with Chan et al.'s pairwise update, so no catastrophic cancellation)."""
    mean, m2, count = 0.0, 0.0, 0
    for start in range(0, dataset.shape[0], rows):
        block = np.asarray(dataset[start:start + rows], dtype=np.float64)
        b_count, b_mean = block.size, float(block.mean())
        b_m2 = float(np.square(block - b_mean).sum())
        delta, total = b_mean - mean, count + b_count
        mean += delta * b_count / total
        m2 += b_m2 + delta**2 * count * b_count / total
        count = total
    return mean, float(np.sqrt(m2 / max(count, 1)))


def resolve_problem(name: str) -> ProblemLike:
    """The data-generating problem called ``name``: ``"synthetic"`` or an entry of ``funcdiff.pde.PROBLEMS``."""
    from funcdiff.data.synthetic import SYNTHETIC

    if name == SYNTHETIC.name:
        return SYNTHETIC
    try:
        from funcdiff.pde import get_problem
    except ImportError as err:
        raise ValueError(f"unknown problem {name!r}: funcdiff.pde is unavailable ({err}); "
                         f"valid: ['{SYNTHETIC.name}']") from err
    return get_problem(name)


def available_problems() -> dict[str, ProblemLike]:
    """All problems ``funcdiff data generate`` knows, by name (``synthetic`` plus the PDE registry)."""
    from funcdiff.data.synthetic import SYNTHETIC

    problems: dict[str, ProblemLike] = {SYNTHETIC.name: SYNTHETIC}
    try:
        from funcdiff.pde import PROBLEMS
    except ImportError:
        return problems
    return {**problems, **PROBLEMS}
