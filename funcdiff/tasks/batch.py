"""Batch work is a case list: many inverse problems or forecast start dates in one job, split over ranks, restartable.

::

    cases = index_cases("0:1000", available=1000)             # samples 0..999 of a data file
    run = BatchRun("out/", cases, signature={...}, kind="solve")  # rank split from torchrun/Slurm variables
    result = run.run(lambda case, part: solve_one(case).save(part))
    merge_parts("out/")                                        # out/merged.nc with a `case` coordinate

Layout of an output folder::

    out/cases.json              the case list and the run's signature (what determines every result)
    out/parts/case_<key>.nc     one file per finished case, written atomically (temporary file + rename)
    out/merged.nc               ``funcdiff merge out/``: every case along a ``case`` dimension (forecasts: along
                                ``init``, with ``case`` as a coordinate on it), per-case attributes as variables

Rules. Rank ``r`` of ``W`` takes cases ``r, r + W, r + 2W, ...`` of the list (``RANK``/``WORLD_SIZE`` from
torchrun, else ``SLURM_PROCID``/``SLURM_NTASKS``; no process group is needed). A case's random numbers come from
:func:`case_seed` (the run's ``--seed`` and the case's key), never from the rank, so the merged result does not
depend on how many ranks ran or in which order. A rerun of the same command skips cases whose part exists with
the run's signature and redoes the rest (a killed write leaves only a temporary file, removed on the rerun; a
forecast part resumes mid-rollout from its ``.partial``/``.state.pt``). On SIGUSR1/SIGTERM a rank finishes the
case in hand and exits with :data:`funcdiff.training.signals.REQUEUE_EXIT`. Ranks with no case (more ranks
than cases) exit at once with status 0.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import netCDF4
import numpy as np
import xarray as xr

from funcdiff.errors import UserError
from funcdiff.io.atomic import write_text_atomic
from funcdiff.io.forecast_zarr import is_zarr_path, write_dataset_zarr
from funcdiff.io.netcdf import cf_dataset, write_netcdf
from funcdiff.io.provenance import add_history
from funcdiff.training.distributed import batch_rank_from_env
from funcdiff.training.signals import REQUEUE_EXIT, StopSignal

if TYPE_CHECKING:
    import torch

    from funcdiff.data.stores import ArrayStore

MANIFEST = "cases.json"
PARTS = "parts"
MERGED = "merged.nc"
SIGNATURE_ATTR = "batch_signature"
DROPPED_ATTRS = ("run_signature",)  # per-part bookkeeping that the merged file does not need
FILE_ATTRS = ("history", "title", "Conventions", "source", "institution")  # about the file, not the case


# ------------------------------------------------------------------------------------------------ the cases
@dataclass(frozen=True)
class Case:
    """One unit of batch work.

    ``index``: sample (solve) or trajectory (forecast) in the data file; ``frame``: the start frame of a forecast
    (None for solve); ``time``: that frame's time (model time units, or an ISO date for datetime coordinates).
    """

    index: int
    frame: Optional[int] = None
    time: Optional[float | str] = None

    @property
    def key(self) -> str:
        """File-name key: ``000042`` (solve) or ``000042_000017`` (forecast: trajectory, start frame)."""
        return f"{self.index:06d}" if self.frame is None else f"{self.index:06d}_{self.frame:06d}"


def case_seed(seed: int, case: Case) -> int:
    """The seed of one case: a hash of the run's ``seed`` and the case's key (63 bits), the same on every rank.
    Reproduce one case alone with ``funcdiff solve --index I --seed <case_seed>`` (stored in its part)."""
    digest = hashlib.blake2b(f"{int(seed)}:{case.key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2 ** 63 - 1)


def parse_indices(indices: str, available: int, source: str = "the data file", what: str = "sample") -> list[int]:
    """Indices from ``"0:1000"``, ``"0:1000:10"``, ``"5:"``, ``"3"`` or a comma list of those (Python slice rules,
    stop excluded). UserError (naming ``indices=``) for an empty, negative, repeated or out-of-range selection."""
    spec, out = str(indices), []
    for item in (p.strip() for p in spec.split(",")):
        try:
            if ":" in item:
                fields = item.split(":")
                if len(fields) > 3:
                    raise ValueError
                start = int(fields[0]) if fields[0] else 0
                stop = int(fields[1]) if fields[1] else available
                step = int(fields[2]) if len(fields) == 3 and fields[2] else 1
                if step < 1 or start < 0:
                    raise ValueError
                if stop > available:
                    raise UserError(f"indices={spec!r}: asks for {what}s up to {stop - 1} but {source} holds "
                                    f"{available} ({what}s 0..{available - 1})")
                out += range(start, stop, step)
            else:
                i = int(item)
                if not 0 <= i < available:
                    raise UserError(f"indices={spec!r}: {what} {i} is out of range: {source} holds {available}")
                out.append(i)
        except UserError:
            raise
        except ValueError:
            raise UserError(f"indices={spec!r}: expected START:STOP[:STEP] or I, comma-separated, with "
                            "non-negative integers and a positive step") from None
    if not out:
        raise UserError(f"indices={spec!r} selects no {what} ({source} holds {available})")
    seen: set[int] = set()
    repeated = [i for i in out if i in seen or seen.add(i)]
    if repeated:
        raise UserError(f"indices={spec!r} lists {what} {repeated[0]} more than once")
    return out


def parse_time_range(spec: str) -> tuple[object, object, object]:
    """``START/END[/STEP]`` (END included) as numbers (model time units) or dates with a duration step, parsed by
    pandas (``2020-01-01T00/2020-12-31T18/6h``; any ``pandas.to_timedelta`` duration such as 30min, 1D, 6h; a
    bare number is hours). A single time is ``START``. STEP None = every frame in the range. Returns
    (start, end, step): floats, or ``pandas.Timestamp``/``pandas.Timedelta``."""
    import pandas as pd

    fields = [f.strip() for f in str(spec).split("/")]
    if not 1 <= len(fields) <= 3 or not all(fields):
        raise UserError(f"init_times={spec!r}: expected START/END[/STEP]")
    start, end = fields[0], fields[1] if len(fields) > 1 else fields[0]
    step = fields[2] if len(fields) == 3 else None
    try:
        t0, t1, dt = float(start), float(end), (float(step) if step is not None else None)
    except ValueError:
        try:
            t0, t1 = pd.Timestamp(start), pd.Timestamp(end)
        except ValueError:
            raise UserError(f"init_times={spec!r}: START and END must both be numbers or ISO dates "
                            "(2020-01-01T00)") from None
        try:
            dt = None if step is None else pd.to_timedelta(f"{step}h" if _is_number(step) else step)
        except ValueError:
            raise UserError(f"init_times={spec!r}: step {step!r} is not a duration like 6h, 30min, 1D") from None
    if dt is not None and not dt > (0 if isinstance(dt, float) else pd.Timedelta(0)):
        raise UserError(f"init_times={spec!r}: the step must be positive")
    if t1 < t0:
        raise UserError(f"init_times={spec!r}: END is before START")
    return t0, t1, dt


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def select_frames(spec: str, times: np.ndarray, source: str = "the data file") -> list[int]:
    """Frame indices of ``times`` (T,) that the range ``spec`` (:func:`parse_time_range`) asks for.

    With a step, every requested time START, START + STEP, ..., <= END must be a frame (pandas' nearest-index
    lookup with a tolerance of 1e-3 of the frame spacing, plus float32 rounding); without one, every frame in
    [START, END] is taken. UserError names the first time the data do not cover and the data's time range.
    """
    import pandas as pd

    times = np.asarray(times)
    t0, t1, dt = parse_time_range(spec)
    dated = np.issubdtype(times.dtype, np.datetime64)
    if dated != isinstance(t0, pd.Timestamp):
        have = "dates" if dated else "numbers (model time units)"
        raise UserError(f"init_times={spec!r}: {source}'s time coordinate holds {have}; give the range as {have}")
    index = pd.DatetimeIndex(times) if dated else pd.Index(times.astype(np.float64))
    spacing = (index[1:] - index[:-1]).to_series().median() if len(index) > 1 else (pd.Timedelta("1h") if dated
                                                                                   else 1.0)
    tol = spacing * 1e-3 + (pd.Timedelta(0) if dated else 1e-6 * max(1.0, float(np.abs(index).max())))
    if dt is None:
        frames = [int(i) for i in np.flatnonzero((index >= t0 - tol) & (index <= t1 + tol))]
        if not frames:
            raise UserError(f"init_times={spec!r}: no frame of {source} lies in the range ({_describe(times)})")
        return frames
    count = int(math.floor((t1 - t0) / dt + 1e-9)) + 1
    wanted = [t0 + k * dt for k in range(count)]
    found = index.get_indexer(pd.DatetimeIndex(wanted) if dated else pd.Index(wanted), method="nearest",
                              tolerance=tol)
    missing = np.flatnonzero(found < 0)
    if missing.size:
        want = wanted[int(missing[0])]
        shown = np.datetime64(want.to_datetime64(), "s") if dated else f"{want:g}"
        raise UserError(f"init_times={spec!r}: time {shown} is not covered by {source} ({_describe(times)}; "
                        f"{count} start times requested)")
    return [int(i) for i in found]


def _describe(times: np.ndarray) -> str:
    if len(times) == 0:
        return "no frames"
    show = (lambda t: str(t)) if np.issubdtype(times.dtype, np.datetime64) else (lambda t: f"{float(t):.6g}")
    every = f" every {show(times[1] - times[0])}" if len(times) > 1 else ""
    return f"its {len(times)} frames run from {show(times[0])} to {show(times[-1])}{every}"


def shard(cases: Sequence[Case], rank: int, world: int) -> list[Case]:
    """Rank ``rank``'s cases: every ``world``-th from position ``rank`` (balanced to within one case)."""
    return list(cases[rank::world])


# ------------------------------------------------------------------------------------------------ the runner
@dataclass
class BatchResult:
    """What one rank did: keys of cases computed now and skipped as finished, cases left, the stop signal."""

    rank: int
    world: int
    assigned: int
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stopped_by: str = ""

    @property
    def remaining(self) -> int:
        return self.assigned - len(self.done) - len(self.skipped)

    @property
    def exit_status(self) -> int:
        """:data:`REQUEUE_EXIT` when a signal stopped the rank with cases left, else 0."""
        return REQUEUE_EXIT if self.stopped_by and self.remaining else 0

    def summary(self) -> str:
        head = f"rank {self.rank}/{self.world}: "
        if not self.assigned:
            return head + "no cases for this rank (more ranks than cases); nothing to do"
        text = (f"{len(self.done)} case(s) computed, {len(self.skipped)} already finished, "
                f"{self.remaining} left of {self.assigned}")
        if self.stopped_by:
            text += f"; stopped by {self.stopped_by}: rerun the same command to continue"
        return head + text


class BatchRun:
    """Runs a case list into ``out_dir`` on this rank (see the module docstring).

    Args:
        out_dir: output folder (created).  cases: the whole list (every rank passes the same).
        signature: JSON-able settings that determine every case's result; stored in ``cases.json`` and in every
            part (attribute ``batch_signature``). A folder started with another signature or case list is refused.
        kind: ``"solve"`` or ``"forecast"`` (how :func:`merge_parts` joins the parts).
        rank, world: default from the environment (:func:`~funcdiff.training.distributed.batch_rank_from_env`).
    """

    def __init__(self, out_dir: str | os.PathLike, cases: Sequence[Case], signature: dict, kind: str, *,
                 rank: Optional[int] = None, world: Optional[int] = None) -> None:
        if rank is None or world is None:
            rank, world = batch_rank_from_env()
        self.out_dir, self.cases, self.kind = Path(out_dir), list(cases), kind
        self.rank, self.world = int(rank), int(world)
        self.signature = json.dumps(signature, sort_keys=True, default=str)
        self.parts = self.out_dir / PARTS

    @property
    def mine(self) -> list[Case]:
        return shard(self.cases, self.rank, self.world)

    def part_path(self, case: Case) -> Path:
        return self.parts / f"case_{case.key}.nc"

    def manifest(self) -> dict:
        return {"kind": self.kind, "signature": json.loads(self.signature),
                "cases": [asdict(c) for c in self.cases]}

    def write_manifest(self) -> None:
        """Write ``cases.json`` (every rank writes the same text, atomically), refusing a folder of another run."""
        path = self.out_dir / MANIFEST
        text = json.dumps(self.manifest(), indent=1, sort_keys=True) + "\n"
        if path.exists():
            old = read_manifest(self.out_dir)
            if json.dumps(old["signature"], sort_keys=True) != self.signature or old["kind"] != self.kind:
                raise UserError(f"{self.out_dir} holds a batch run with other settings ({path}); use another "
                                "out_dir=<folder> or delete it")
            if old["cases"] != self.manifest()["cases"]:
                raise UserError(f"{self.out_dir} holds a batch run over another case list ({len(old['cases'])} "
                                f"cases); use another out_dir=<folder> or the same case selection")
            return
        self.parts.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)

    def is_done(self, case: Case) -> bool:
        """Whether the case's part exists, is readable and carries this run's signature (an unreadable part is
        removed and redone)."""
        path = self.part_path(case)
        if not path.exists():
            return False
        stored = part_signature(path)
        if stored is None:
            print(f"rank {self.rank}: {path} is unreadable or unsigned; recomputing it", file=sys.stderr)
            path.unlink(missing_ok=True)
            return False
        if stored != self.signature:
            raise UserError(f"{path} was written by a run with other settings; use another out_dir=<folder> or delete "
                            "it")
        return True

    def _remove_stale_temporaries(self, case: Case) -> None:
        """Temporary files of a killed atomic write of this case (only this rank writes this case)."""
        for tmp in self.parts.glob(f".case_{case.key}.nc.*.tmp*"):
            tmp.unlink(missing_ok=True)

    def run(self, compute: Callable[[Case, Path], None], *, progress: bool = True) -> BatchResult:
        """Compute this rank's unfinished cases: ``compute(case, part_path)`` must write the part atomically with
        the attribute ``batch_signature = self.signature``. Stops between cases on SIGUSR1/SIGTERM."""
        self.write_manifest()
        mine = self.mine
        result = BatchResult(self.rank, self.world, len(mine))
        with StopSignal() as stop:
            for k, case in enumerate(mine, 1):
                if stop.requested:
                    result.stopped_by = stop.name
                    break
                if self.is_done(case):
                    result.skipped.append(case.key)
                    continue
                self._remove_stale_temporaries(case)
                start = time.perf_counter()
                compute(case, self.part_path(case))
                result.done.append(case.key)
                if progress:
                    print(f"rank {self.rank}/{self.world}: case {case.key} ({k}/{len(mine)}) written in "
                          f"{time.perf_counter() - start:.1f} s", flush=True)
            if stop.requested and not result.stopped_by and result.remaining:
                result.stopped_by = stop.name
        return result


def part_signature(path: Path) -> Optional[str]:
    """The ``batch_signature`` attribute of a part file (None if unreadable or absent)."""
    try:
        with netCDF4.Dataset(path, "r") as ds:
            return str(ds.getncattr(SIGNATURE_ATTR)) if SIGNATURE_ATTR in ds.ncattrs() else None
    except OSError:
        return None


def read_manifest(out_dir: str | os.PathLike) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        raise UserError(f"{out_dir} is not a batch output folder (no {MANIFEST}); give the folder written by "
                        "`funcdiff solve --cases` or `funcdiff forecast --indices/--init-times`")
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------ merging
def merge_parts(out_dir: str | os.PathLike, out: Optional[str | os.PathLike] = None) -> Path:
    """Join the parts of a finished batch run into one netCDF file (atomic; default ``<out_dir>/merged.nc``), or
    for forecasts a zarr store when ``out`` ends in ``.zarr`` (atomic too; the layout of ``forecast --out F.zarr``).

    Solve parts gain a leading ``case`` dimension (coordinate: the sample index); forecast parts are joined along
    ``init`` (the layout of a multi-start forecast file) with ``case`` (position in the list) as a coordinate
    on it. Attributes that differ between cases (metrics, seeds) become variables along the case dimension, with
    CF units (:func:`per_case_attrs`); the file is CF-1.8 (its ``history`` adds the merge to the first part's).
    Needs no dask: each part is opened with ``xr.open_dataset(cache=False)`` and concatenated in memory (the
    peak: about the merged file plus one variable's parts). UserError if a case is missing.
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    cases = [Case(**c) for c in manifest["cases"]]
    signature = json.dumps(manifest["signature"], sort_keys=True, default=str)
    paths = _finished_parts(out_dir, cases, signature)
    attrs = [_attrs(p) for p in paths]
    keys = set().union(*attrs)
    varying = sorted(k for k in keys if k not in DROPPED_ATTRS + FILE_ATTRS and
                     any(k not in a or _differ(a[k], attrs[0].get(k)) for a in attrs))
    forecast = manifest["kind"] == "forecast"
    dim = "init" if forecast else "case"
    positions = {p.name: i for i, p in enumerate(paths)}  # xarray may store the source path resolved

    def prepare(ds: xr.Dataset) -> xr.Dataset:
        i = positions[Path(ds.encoding["source"]).name]
        per_case = {k: ds.attrs.pop(k) for k in varying if k in ds.attrs}
        for k in DROPPED_ATTRS:
            ds.attrs.pop(k, None)
        if forecast:
            if "init" not in ds.dims and "init_time" in ds.dims:  # a part of funcdiff <= 0.1 (dim init_time)
                ds = ds.swap_dims(init_time="init")
            ds = ds.assign_coords(case=("init", np.array([i], dtype=np.int32),
                                        {"long_name": "position of the case in the batch's case list"}))
        else:
            ds = ds.reset_coords().expand_dims(case=[cases[i].index])
        for k, v in per_case.items():
            ds[k] = ((dim,), [_per_case_value(v)], per_case_attrs(k, ds))
        return ds

    # What xr.open_mfdataset(combine="nested") does, without its dask chunks.
    parts = [xr.open_dataset(p, engine="netcdf4", cache=False) for p in paths]
    try:
        merged = xr.concat([prepare(ds) for ds in parts], dim=dim, data_vars="all" if not forecast else "minimal",
                           coords="minimal", compat="override", join="outer", combine_attrs="override")
        if forecast:  # each part numbers its initial states from 0
            merged = merged.assign_coords(init=("init", np.arange(merged.sizes["init"], dtype=np.int32),
                                                {"long_name": "initial state number"}))
        else:
            merged["case"].attrs.update(long_name="sample index of the case in the case file")
        merged.attrs.update({"batch_cases": len(cases), "batch_kind": manifest["kind"]})
        merged.attrs["history"] = add_history(str(attrs[0].get("history", "")),
                                              f"merged {len(cases)} {manifest['kind']} parts of {out_dir}")
        merged.attrs.pop(SIGNATURE_ATTR, None)
        merged.attrs[SIGNATURE_ATTR] = signature
        path = _write_merged(merged, out if out is not None else out_dir / MERGED, forecast)
    finally:
        for ds in parts:
            ds.close()
    return path


def _write_merged(merged: xr.Dataset, out: str | os.PathLike, forecast: bool) -> Path:
    """netCDF, or (forecasts, ``out`` ending in ``.zarr``) a zarr store chunked one initial state × one lead per
    chunk with WeatherBench 2's names on the sphere (:func:`funcdiff.io.forecast_zarr.write_dataset_zarr`)."""
    if not is_zarr_path(out):
        return write_netcdf(merged, out)
    if not forecast:
        raise UserError(f"out={str(out)!r}: solve batches merge to netCDF (.nc); zarr output is for forecasts")
    return write_dataset_zarr(cf_dataset(merged), out, json.loads(merged.attrs["channels"]))


def _finished_parts(out_dir: Path, cases: Sequence[Case], signature: str) -> list[Path]:
    """The part file of every case, in case order; UserError when one is missing or from another run."""
    paths = [out_dir / PARTS / f"case_{c.key}.nc" for c in cases]
    missing = [c.key for c, p in zip(cases, paths) if not p.exists() or part_signature(p) != signature]
    if missing:
        raise UserError(f"{len(missing)} of {len(cases)} cases are not finished (first: case {missing[0]}); rerun "
                        "the batch command (it skips finished cases), then merge")
    return paths


def _attrs(path: Path) -> dict:
    with netCDF4.Dataset(path, "r") as ds:
        return {k: ds.getncattr(k) for k in ds.ncattrs()}


METRIC_NAMES = {"rel_l2_": "relative L2 error of the posterior mean of",
                "misclassification_": "misclassification rate of the posterior mean of",
                "rmse_": "area-weighted RMSE of the posterior mean of"}


def per_case_attrs(name: str, part: xr.Dataset) -> dict:
    """CF ``long_name`` and ``units`` of a per-case attribute stored as a variable of the merged file: relative
    errors, misfits and rates are ``"1"``, an RMSE has its channel's units, seeds and others have no units."""
    if name in ("misfit_mean", "misfit_samples"):
        what = "posterior mean" if name == "misfit_mean" else "samples (mean over samples)"
        return {"long_name": f"relative observation misfit of the {what}", "units": "1"}
    for prefix, what in METRIC_NAMES.items():
        if name.startswith(prefix):
            channel = name[len(prefix):]
            single = channel.endswith("_single")
            channel = channel.removesuffix("_single")
            long_name = what.replace("the posterior mean", "single samples (mean)") if single else what
            units = str(part[channel].attrs.get("units", "1")) if prefix == "rmse_" and channel in part else "1"
            return {"long_name": f"{long_name} {channel}", "units": units}
    if name in ("case_seed", "seed"):
        return {"long_name": f"{'seed of the case' if name == 'case_seed' else 'sampling seed'} (decimal text "
                             "when beyond int32)"}
    return {"long_name": f"{name} of each case (a per-case attribute)"}


def _per_case_value(value):
    """A per-case attribute as a variable entry: integers beyond int32 (63-bit case seeds) as decimal text, since
    CF-1.8 has no 64-bit integer type (``--seed`` takes the text as it is)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and \
            not np.iinfo(np.int32).min <= int(value) <= np.iinfo(np.int32).max:
        return str(int(value))
    return value


def _differ(a, b) -> bool:
    return not np.array_equal(np.asarray(a), np.asarray(b))


def same_result(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two merged files hold identical variables, coordinates and attributes (xarray ``identical``), all
    but the global ``history`` (it records when and how each file was written)."""
    with xr.open_dataset(a, engine="netcdf4") as x, xr.open_dataset(b, engine="netcdf4") as y:
        x, y = x.load(), y.load()
        for ds in (x, y):
            ds.attrs.pop("history", None)
        return bool(x.identical(y))


# ------------------------------------------------------------------------------------------------ solve cases
def index_cases(indices: Optional[str], available: int, source: str = "the data file") -> list[Case]:
    """Solve cases: the samples ``indices`` selects (:func:`parse_indices`; None = every sample)."""
    chosen = parse_indices(indices, available, source) if indices else list(range(available))
    return [Case(i) for i in chosen]


def read_case_fields(path: str | os.PathLike, channels: Sequence[str], task_name: str = "") -> "torch.Tensor":
    """Every sample of ``path`` (netCDF or any HDF5 layout :func:`funcdiff.data.load_fields` reads) with the named
    channels: (N, C, *S) float32, physical units. UserError naming the variables the file lacks. A batch reads
    its cases lazily instead (:func:`open_case_samples`)."""
    from funcdiff.tasks.solve import read_truth_file

    try:
        return read_truth_file(path, channels)
    except (ValueError, KeyError) as err:
        raise UserError(_case_file_error(path, channels, task_name, err)) from None


def open_case_samples(path: str | os.PathLike, channels: Sequence[str], task_name: str = "") -> "ArrayStore":
    """The samples of a case file as a lazy store (:func:`funcdiff.tasks.case_store.open_samples`: metadata now,
    one sample per case later). Shapes: (N, C, *S). UserError naming the variables the file lacks."""
    from funcdiff.tasks.case_store import open_samples

    try:
        return open_samples(path, channels)
    except (ValueError, KeyError, UserError) as err:
        raise UserError(_case_file_error(path, channels, task_name, err)) from None


def _case_file_error(path, channels: Sequence[str], task_name: str, err: Exception) -> str:
    need = f" needed by task {task_name!r}" if task_name else ""
    return f"case file {path} cannot provide variables {list(channels)}{need}: {err}"


def solve_cases(model, task, fields: "torch.Tensor | ArrayStore", run: BatchRun, settings, *, progress: bool = True,
                **run_options) -> BatchResult:
    """Solve every unfinished case of ``run`` on this rank with ``settings`` (a
    :class:`~funcdiff.tasks.settings.SolveSettings`): sensors (``obs_fraction``/``obs_count``, ``obs_noise``)
    drawn from case ``i``'s truth (sample ``i`` of ``fields``, read when the case runs) with :func:`case_seed`,
    sampled with the same seed, written as a posterior netCDF part. ``run_options``: batch_size, device, cuda_graphs
    (they do not change results).

    Equivalent to ``funcdiff solve --truth FILE --index i --seed <case_seed> ...`` for each case.
    Shapes: fields (N, C, *S) physical (a tensor, or a lazy store of :func:`open_case_samples`), channels
    ``task.channels``.
    """
    import torch

    from funcdiff.tasks.solve import make_observation, solve

    def compute(case: Case, part: Path) -> None:
        s = case_seed(settings.seed, case)
        truth = fields[case.index:case.index + 1] if isinstance(fields, torch.Tensor) else fields.read([case.index])
        observation = make_observation(task, truth, fraction=settings.obs_fraction, count=settings.obs_count, seed=s,
                                       noise_std=settings.obs_noise)
        posterior = solve(model, task, observation, settings.updated(seed=s), truth=truth, **run_options)
        posterior.settings.update({"case": case.index, "case_seed": s, SIGNATURE_ATTR: run.signature})
        posterior.save(part)

    return run.run(compute, progress=progress)


# ------------------------------------------------------------------------------------------------ forecast cases
def forecast_cases(traj_shape: Sequence[int], times: Optional[np.ndarray], source: str, *, history: int,
                   frame_step: int = 1, indices: Optional[str] = None, init_times: Optional[str] = None,
                   trajectories: Optional[Sequence[int]] = None, start_frame: Optional[int] = None) -> list[Case]:
    """Forecast cases of a trajectory file of shape (N, C, T, *S) with time coordinate ``times`` (T,) (None: frame
    numbers), or (N, T) for one series cut into consecutive segments (an ERA5 store; numbers or datetime64, see
    :func:`decode_times`): ``indices`` selects trajectories, each started at ``start_frame`` (default: the first
    frame with ``history`` frames behind it); ``init_times`` selects start frames by time in each of
    ``trajectories`` (default [0]; a segmented series: every segment, or those in ``trajectories``). Exactly one of
    ``indices`` and ``init_times``. UserError for a range the data do not cover or a start without enough
    history."""
    if (indices is None) == (init_times is None):
        raise UserError("give exactly one of indices= and init_times=")
    n, t = int(traj_shape[0]), int(traj_shape[2])
    first = (history - 1) * frame_step
    values = np.asarray(times) if times is not None else np.arange(t, dtype=np.float64)
    if indices is not None:
        frame = first if start_frame is None else int(start_frame)
        if not first <= frame < t:
            raise UserError(f"start_frame={frame} must lie in {first}..{t - 1}: the forecaster needs {history} "
                            f"history frames spaced {frame_step} apart, and the trajectories have {t} frames")
        return [Case(i, frame, _time_value(values[i, frame] if values.ndim == 2 else values[frame]))
                for i in parse_indices(indices, n, source, what="trajectory")]
    if values.ndim == 2:
        return _series_cases(values, init_times, source, first, history, trajectories)
    frames = select_frames(init_times, values, source)
    early = [f for f in frames if f < first]
    if early:
        raise UserError(f"init_times={init_times!r}: start time {values[early[0]]} has fewer than {history} history "
                        f"frames before it in {source}; the first usable start time is "
                        f"{values[first] if first < t else 'none'}")
    chosen = list(trajectories) if trajectories else [0]
    bad = [i for i in chosen if not 0 <= i < n]
    if bad:
        raise UserError(f"trajectories={chosen}: trajectory {bad[0]} is out of range: {source} holds {n} "
                        "trajectories")
    return [Case(i, f, _time_value(values[f])) for i in chosen for f in frames]


def _series_cases(values: np.ndarray, init_times: str, source: str, first: int, history: int,
                  trajectories: Optional[Sequence[int]]) -> list[Case]:
    """Cases of the start times ``init_times`` in a series cut into segments (times (N, T), consecutive): each
    time is frame ``k % T`` of segment ``k // T``; only segments in ``trajectories`` when given."""
    n, t = values.shape
    found = [(k // t, k % t) for k in select_frames(init_times, values.reshape(-1), source)]
    if trajectories:
        bad = [i for i in trajectories if not 0 <= i < n]
        if bad:
            raise UserError(f"trajectories={list(trajectories)}: segment {bad[0]} is out of range: {source} holds "
                            f"{n} segments")
        found = [(i, f) for i, f in found if i in set(trajectories)]
        if not found:
            raise UserError(f"init_times={init_times!r}: no start time lies in segment(s) {list(trajectories)} of "
                            f"{source}; drop index= to take every segment")
    early = [(i, f) for i, f in found if f < first]
    if early:
        i, f = early[0]
        raise UserError(f"init_times={init_times!r}: start time {_time_value(values[i, f])} is frame {f} of segment "
                        f"{i} of {source}: a case needs {history} history frames before it in its segment")
    return [Case(i, f, _time_value(values[i, f])) for i, f in found]


def decode_times(times: Optional[np.ndarray], time_units: str) -> Optional[np.ndarray]:
    """Times in CF units ``"<unit> since <date>"`` (an ERA5 store's hours since 1970) as datetime64[s], so that
    ``init_times`` can be given as dates; other times (model time units) as they are."""
    unit, _, since = str(time_units).partition(" since ")
    seconds = {"hours": 3600, "days": 86400, "minutes": 60, "seconds": 1}.get(unit.strip())
    if times is None or not since or seconds is None:
        return times
    origin = np.datetime64(since.strip().replace(" ", "T"), "s")
    return origin + np.round(np.asarray(times, dtype=np.float64) * seconds).astype("timedelta64[s]")


def _time_value(t) -> float | str:
    return str(np.datetime64(t, "s")) if isinstance(t, np.datetime64) else float(t)


def run_forecast_cases(forecaster, traj: "torch.Tensor | ArrayStore", times: Optional["torch.Tensor"], source: str,
                       run: BatchRun, *, lead_steps: int, members: int = 8, seed: int = 0,
                       sensors: Optional[Callable] = None, attrs: Optional[dict] = None, progress: bool = True,
                       **forecast_kwargs) -> BatchResult:
    """Forecast every unfinished case of ``run`` on this rank from trajectories ``traj`` (N, C, T, *S) physical (a
    tensor, or a lazy store of :func:`funcdiff.tasks.case_store.open_trajectories`: each case then reads only its
    history frames, and its truth frames when there are sensors): each case is a one-start
    :class:`~funcdiff.tasks.forecast.Forecast` with seed :func:`case_seed`, saved (and resumed mid-rollout after a
    kill) as its part. ``sensors(initial, truth, seed, trajectory, frame)`` may return timed observations for the
    case (a twin experiment on its own trajectory; truth (C, min(L, available), *S)); ``forecast_kwargs`` go to
    ``Forecast`` (steps_per_frame, solver, batch_size).
    """
    import torch

    from funcdiff.tasks.case_store import MemoryStore, case_frames
    from funcdiff.tasks.forecast import Forecast

    f = forecaster.forecast
    store = MemoryStore(source, traj, forecaster.channel_names) if isinstance(traj, torch.Tensor) else traj

    def compute(case: Case, part: Path) -> None:
        initial, truth, start, time_ = case_frames(store, times, source, case.index, case.frame, f.history,
                                                   f.frame_step, truth_leads=lead_steps if sensors else 0)
        s = case_seed(seed, case)
        observations = sensors(initial, truth, s, case.index, start) if sensors is not None else None
        Forecast(forecaster, initial, lead_steps, members=members, seed=s, observations=observations,
                 init_index=[case.index], init_frame=[start], init_time=[time_],
                 attrs={**(attrs or {}), "case_seed": s, SIGNATURE_ATTR: run.signature},
                 **forecast_kwargs).save(part)

    return run.run(compute, progress=progress)


__all__ = ["Case", "BatchRun", "BatchResult", "case_seed", "parse_indices", "parse_time_range", "select_frames",
           "shard", "merge_parts", "same_result", "index_cases", "read_case_fields", "open_case_samples", "solve_cases",
           "read_manifest", "forecast_cases", "decode_times", "run_forecast_cases", "MANIFEST", "PARTS", "MERGED"]
