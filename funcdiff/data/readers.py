"""Readers for field data: funcdiff's HDF5 layout, PDEBench HDF5, FNO ``.mat``, neuraloperator ``.pt``, The Well
HDF5 (:mod:`funcdiff.data.the_well`), anemoi-datasets zarr (:mod:`funcdiff.data.anemoi`) and ERA5 stores.

Every reader returns a :class:`FieldData`: named single-channel fields ``(N, *spatial)`` (pairs) or
``(N, T, *spatial)`` (trajectories), 1-D coordinates as stored in the file (never invented), and attributes.
Field names are canonical where the source's meaning is known: coefficient/input ``a``, solution/output ``u``.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from funcdiff.data.fields import FieldData
from funcdiff.data.hdf5 import FORMAT_NAME
from funcdiff.errors import UserError

FORMATS = ("funcdiff", "pdebench", "fno_mat", "neuralop_pt", "era5_zarr", "the_well", "anemoi_zarr")
STORE_FORMATS = ("the_well", "anemoi_zarr")  # described from their metadata by ``describe_file``, never read whole
PDEBENCH_FIELDS = ("tensor", "nu", "density", "pressure", "Vx", "Vy", "Vz")
FNO_MAT_NAMES = {"coeff": "a", "sol": "u", "a": "a", "u": "u", "input": "a", "output": "u"}
NEURALOP_PT_NAMES = {"x": "a", "y": "u", "input": "a", "output": "u"}


def load_fields(path: str | os.PathLike, *, format: str = "auto", fields: list[str] | None = None,
                max_samples: int | None = None, dtype: torch.dtype | None = torch.float32) -> FieldData:
    """Read a data file of any supported format (detected from suffix and content unless ``format`` is given).

    Args:
        format: ``"auto"`` or one of ``FORMATS``.
        fields: keep only these fields (ValueError naming the missing ones).
        max_samples: read only the first ``max_samples`` samples.
        dtype: cast fields (and coordinates) to this floating dtype; ``None`` keeps the stored dtype
            (booleans are always converted to floating point).

    Shapes:
        see :class:`FieldData`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such data file: {path}")
    fmt = detect_format(path) if format == "auto" else format
    readers = {"funcdiff": read_funcdiff_hdf5, "pdebench": read_pdebench, "fno_mat": read_fno_mat,
               "neuralop_pt": read_neuralop_pt, "era5_zarr": _read_era5_store, "the_well": _read_the_well,
               "anemoi_zarr": _read_anemoi}
    if fmt not in readers:
        raise ValueError(f"unknown format {fmt!r}; valid: {['auto', *FORMATS]}")
    if fmt in STORE_FORMATS:  # the store reads only the fields asked for (The Well: ``velocity`` = all components)
        return _postprocess(readers[fmt](path, max_samples=max_samples, fields=fields), None, dtype)
    data = readers[fmt](path, max_samples=max_samples)
    return _postprocess(data, fields, dtype)


def detect_format(path: Path) -> str:
    """Name of the reader for ``path``, from its suffix and (for HDF5) its keys and attributes."""
    suffix = path.suffix.lower()
    if path.is_dir():
        return _detect_folder(path)
    if suffix in (".pt", ".pth"):
        return "neuralop_pt"
    if suffix == ".mat":
        return "fno_mat"
    if not h5py.is_hdf5(path):
        if suffix in (".h5", ".hdf5", ".hdf"):
            size = path.stat().st_size
            raise UserError(f"{path}: unrecognised file type: not a readable HDF5 file ("
                            f"{'empty, 0 bytes' if size == 0 else f'{size} bytes'}; an interrupted copy or "
                            f"generation? regenerate or copy it again)")
        raise UserError(f"{path}: unrecognised file type (expected HDF5 .h5/.hdf5, .mat, .pt or a zarr store)")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise UserError(f"{path}: not a readable HDF5 file ({err}); an interrupted copy or generation? "
                        "regenerate or copy it again") from None
    with f:
        if f.attrs.get("funcdiff_format") == FORMAT_NAME:
            return "funcdiff"
        keys = list(f.keys())
        if "dimensions" in f and "t1_fields" in f and "n_spatial_dims" in f.attrs:
            return "the_well"
        if any(k in f for k in PDEBENCH_FIELDS) or any(_is_sample_group(f, k) for k in keys[:8]):
            return "pdebench"
    raise UserError(f"{path}: unrecognised HDF5 layout; expected funcdiff attrs ('funcdiff_format'), The Well "
                    f"groups (t0_fields/t1_fields, dimensions), PDEBench datasets {list(PDEBENCH_FIELDS)} or sample "
                    f"groups '0000/data'; found keys {keys}")


def _detect_folder(path: Path) -> str:
    from funcdiff.data.anemoi import is_anemoi_store
    from funcdiff.data.era5 import is_era5_store
    from funcdiff.data.the_well import is_the_well_file

    if is_era5_store(path):
        return "era5_zarr"
    if is_anemoi_store(path):
        return "anemoi_zarr"
    if is_the_well_file(path):
        return "the_well"
    raise UserError(f"{path}: a folder, but not a zarr store written by `funcdiff data era5`, an anemoi-datasets "
                    "store or a folder of The Well's HDF5 files")


def _read_the_well(path: Path, *, max_samples: int | None = None, fields: list[str] | None = None) -> FieldData:
    """A file or folder of The Well (see :func:`funcdiff.data.the_well.read_the_well`)."""
    from funcdiff.data.the_well import read_the_well

    return read_the_well(path, max_samples=max_samples, fields=fields)


def _read_anemoi(path: Path, *, max_samples: int | None = None, fields: list[str] | None = None) -> FieldData:
    """An anemoi-datasets zarr store (see :func:`funcdiff.data.anemoi.read_anemoi`)."""
    from funcdiff.data.anemoi import read_anemoi

    return read_anemoi(path, max_samples=max_samples, fields=fields)


def _read_era5_store(path: Path, *, max_samples: int | None = None) -> FieldData:
    """A store written by ``funcdiff data era5`` as trajectories (see :func:`funcdiff.data.era5.read_era5_store`)."""
    from funcdiff.data.era5 import read_era5_store

    return read_era5_store(path, max_samples=max_samples)


def _postprocess(data: FieldData, fields: list[str] | None, dtype: torch.dtype | None) -> FieldData:
    if fields is not None:
        missing = [k for k in fields if k not in data.fields]
        if missing:
            raise ValueError(f"{data.path}: missing field(s) {missing}; available: {sorted(data.fields)}")
        data.fields = {k: data.fields[k] for k in fields}
    for name, value in data.fields.items():
        if value.dtype == torch.bool or dtype is not None:
            data.fields[name] = value.to(dtype or torch.get_default_dtype())
    if dtype is not None:
        data.coords = {k: v.to(dtype) for k, v in data.coords.items()}
    return data


def _tensor(array: Any, max_samples: int | None = None) -> Tensor:
    """``torch`` tensor from an array-like, optionally cut to the first ``max_samples`` rows."""
    array = np.asarray(array if max_samples is None else array[:max_samples])
    return torch.from_numpy(np.ascontiguousarray(array))


def _missing_error(path: Path, kind: str, expected: Any, found: Any) -> ValueError:
    return ValueError(f"{path}: not a {kind} file: expected key(s) {expected}, found keys {sorted(found)}")


# --- funcdiff HDF5 -------------------------------------------------------------------------------------

def read_funcdiff_hdf5(path: str | os.PathLike, *, max_samples: int | None = None,
                       allow_partial: bool = False) -> FieldData:
    """Read our layout (see ``funcdiff.data.hdf5``). An incomplete file raises unless ``allow_partial``,
    in which case only the ``num_written`` finished samples are returned."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        if f.attrs.get("funcdiff_format") != FORMAT_NAME:
            raise _missing_error(path, "funcdiff HDF5", ["attr funcdiff_format"], list(f.attrs))
        attrs = {k: _attr_value(v) for k, v in f.attrs.items()}
        written = int(attrs["num_written"])
        if not attrs.get("complete") and not allow_partial:
            raise ValueError(f"{path} is incomplete ({written} of {attrs.get('num_samples')} samples written); "
                             "resume the generation with the same arguments, or pass allow_partial=True")
        if "fields" not in attrs:
            raise ValueError(f"{path} holds no samples yet (num_written = {written})")
        n = written if max_samples is None else min(written, max_samples)
        fields = {k: _tensor(f[k][:n]) for k in attrs["fields"]}
        coords = {k: _tensor(f[k]) for k in ("x", "y", "z", "t") if k in f}
    return FieldData(fields, coords, attrs, "funcdiff", str(path))


def _attr_value(value: Any) -> Any:
    """Decode an HDF5 attribute: JSON strings to objects, numpy scalars to Python."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        try:
            return json.loads(value) if value[:1] in "[{" else value
        except json.JSONDecodeError:
            return value
    return value.item() if isinstance(value, np.generic) else value


# --- PDEBench HDF5 -------------------------------------------------------------------------------------

def _is_sample_group(f: h5py.File, key: str) -> bool:
    return isinstance(f.get(key), h5py.Group) and "data" in f[key]


def read_pdebench(path: str | os.PathLike, *, max_samples: int | None = None) -> FieldData:
    """Read PDEBench HDF5: flat arrays (``tensor`` (N, T, *S), CFD ``density``/``Vx``/..., Darcy ``nu`` +
    ``tensor`` (N, 1, *S)) with ``x-coordinate``/``y-coordinate``/``t-coordinate``, or one group per sample
    (``0000/data`` (T, *S, C) with ``0000/grid/x``, ``grid/y``, ``grid/t``).

    ``tensor`` becomes ``u``; Darcy ``nu`` becomes ``a`` (and ``tensor`` (N, 1, *S) becomes ``u`` (N, *S));
    grouped data with C channels becomes ``u`` (C = 1) or ``u0`` ... ``u{C-1}``, each ``(N, T, *S)``.
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        keys = list(f.keys())
        if any(k in f for k in PDEBENCH_FIELDS):
            return _read_pdebench_flat(f, path, max_samples)
        groups = sorted(k for k in keys if _is_sample_group(f, k))
        if not groups:
            raise _missing_error(path, "PDEBench", [*PDEBENCH_FIELDS, "<sample>/data"], keys)
        return _read_pdebench_groups(f, path, groups[:max_samples] if max_samples else groups)


def _read_pdebench_flat(f: h5py.File, path: Path, max_samples: int | None) -> FieldData:
    fields = {k: _tensor(f[k], max_samples) for k in PDEBENCH_FIELDS if k in f}
    if "nu" in fields:
        fields["a"] = fields.pop("nu")
        if "tensor" in fields:
            u = fields.pop("tensor")
            fields["u"] = u[:, 0] if u.ndim == fields["a"].ndim + 1 and u.shape[1] == 1 else u
    elif "tensor" in fields:
        fields["u"] = fields.pop("tensor")
    coords = {c: _tensor(f[f"{c}-coordinate"]) for c in ("x", "y", "z", "t") if f"{c}-coordinate" in f}
    attrs = {k: _attr_value(v) for k, v in f.attrs.items()}
    return FieldData(fields, coords, attrs, "pdebench", str(path))


def _read_pdebench_groups(f: h5py.File, path: Path, groups: list[str]) -> FieldData:
    data = np.stack([np.asarray(f[g]["data"]) for g in groups])  # (N, T, *S, C)
    data = np.moveaxis(data, -1, 0)  # (C, N, T, *S)
    names = ["u"] if data.shape[0] == 1 else [f"u{c}" for c in range(data.shape[0])]
    fields = {name: _tensor(data[c]) for c, name in enumerate(names)}
    grid = f[groups[0]].get("grid")
    coords = {c: _tensor(grid[c]) for c in ("x", "y", "z", "t") if grid is not None and c in grid}
    attrs = {k: _attr_value(v) for k, v in f.attrs.items()}
    attrs["sample_groups"] = groups
    return FieldData(fields, coords, attrs, "pdebench", str(path))


# --- FNO .mat ------------------------------------------------------------------------------------------

def read_fno_mat(path: str | os.PathLike, *, max_samples: int | None = None) -> FieldData:
    """Read an FNO ``.mat`` file: MATLAB v7.3 (HDF5, axes stored reversed, so transposed back) or older
    formats via ``scipy.io.loadmat``. ``coeff``/``input``/``a`` become ``a``, ``sol``/``output``/``u``
    become ``u``, ``t`` becomes a coordinate. A ``u`` with one more axis than ``a`` is a trajectory stored
    time-last (FNO Navier–Stokes ``(N, X, Y, T)``) and is returned time-first ``(N, T, X, Y)``.
    """
    path = Path(path)
    arrays = _read_mat_arrays(path, max_samples)
    found = [k for k in FNO_MAT_NAMES if k in arrays]
    if not found:
        raise _missing_error(path, "FNO .mat", sorted(FNO_MAT_NAMES), arrays)
    fields = {FNO_MAT_NAMES[k]: _tensor(arrays[k], max_samples) for k in found}
    if len({FNO_MAT_NAMES[k] for k in found}) != len(found):
        raise ValueError(f"{path}: ambiguous fields, keys {found} map to the same names {FNO_MAT_NAMES}")
    if "a" in fields and "u" in fields and fields["u"].ndim == fields["a"].ndim + 1:
        fields["u"] = torch.movedim(fields["u"], -1, 1).contiguous()
    coords = {"t": _tensor(arrays["t"]).reshape(-1)} if "t" in arrays else {}
    return FieldData(fields, coords, {}, "fno_mat", str(path))


def _read_mat_arrays(path: Path, max_samples: int | None = None) -> dict[str, np.ndarray]:
    """Numeric arrays of a .mat file keyed by name, in MATLAB axis order. For v7.3 files only the first
    ``max_samples`` samples of the field arrays are read (samples are the last axis on disk)."""
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            return {k: _read_reversed(v, max_samples if k in FNO_MAT_NAMES else None) for k, v in f.items()
                    if isinstance(v, h5py.Dataset) and v.dtype.kind in "fiub"}
    import scipy.io

    try:
        raw = scipy.io.loadmat(path)
    except (ValueError, OSError, TypeError) as err:
        raise ValueError(f"{path}: cannot read as a MATLAB file ({err})") from err
    return {k: v for k, v in raw.items() if not k.startswith("__") and isinstance(v, np.ndarray)
            and v.dtype.kind in "fiub"}


def _read_reversed(dataset: h5py.Dataset, max_samples: int | None) -> np.ndarray:
    """A MATLAB v7.3 array with its axes put back in MATLAB order (HDF5 stores them reversed)."""
    if max_samples is None or dataset.ndim == 0:
        return np.asarray(dataset).T
    return np.asarray(dataset[..., :max_samples]).T


# --- neuraloperator .pt --------------------------------------------------------------------------------

def read_neuralop_pt(path: str | os.PathLike, *, max_samples: int | None = None) -> FieldData:
    """Read a neuraloperator ``.pt`` dict of tensors (``torch.load(weights_only=True)``).

    ``x``/``input`` become ``a`` (boolean thresholded Darcy coefficients become 0/1 floats), ``y``/``output``
    become ``u``; scalar entries (e.g. Burgers ``visc``) go to ``attrs``.
    """
    path = Path(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        raise ValueError(f"{path}: cannot load as a tensor file with weights_only=True ({err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(raw).__name__}")
    found = [k for k in NEURALOP_PT_NAMES if k in raw]
    if not found:
        raise _missing_error(path, "neuraloperator .pt", sorted(NEURALOP_PT_NAMES), raw)
    fields = {NEURALOP_PT_NAMES[k]: raw[k][:max_samples] for k in found}
    attrs = {k: v.item() for k, v in raw.items()
             if k not in NEURALOP_PT_NAMES and isinstance(v, Tensor) and v.numel() == 1}
    return FieldData(fields, {}, attrs, "neuralop_pt", str(path))


def describe_file(path: str | os.PathLike, max_items: int = 40) -> str:
    """A human-readable summary of a data file: format, fields (per-sample shapes), coordinates, attributes."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt in STORE_FORMATS:
        return describe_store(path, fmt)
    head = load_fields(path, format=fmt, max_samples=1, dtype=None)
    lines = [f"file:   {path}", f"format: {fmt}"]
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            items: list[str] = []
            f.visititems(lambda name, obj: items.append(f"  /{name} {obj.shape} {obj.dtype}")
                         if isinstance(obj, h5py.Dataset) else None)
            lines += ["datasets:", *items[:max_items]]
            if len(items) > max_items:
                lines.append(f"  ... {len(items) - max_items} more")
    lines.append("fields (one sample):")
    lines += [f"  {k}: {tuple(v.shape[1:])} {str(v.dtype).replace('torch.', '')}" for k, v in head.fields.items()]
    lines += [f"coord {k}: {v.numel()} values in [{float(v.min()):.4g}, {float(v.max()):.4g}]"
              for k, v in head.coords.items() if v.numel()]
    lines += [f"attr {k}: {v}" for k, v in head.attrs.items() if k != "sample_groups"]
    bad = {k: v for k, v in count_nonfinite(path, fmt).items() if any(v)}
    lines.append("non-finite values: " + ("; ".join(f"{k}: {n} NaN, {i} Inf" for k, (n, i) in bad.items())
                                          + " -- training on this file will fail" if bad else "none"))
    return "\n".join(lines)


def describe_store(path: str | os.PathLike, fmt: str) -> str:
    """A summary of a lazily read store (The Well, anemoi) from its metadata alone: nothing of the data is read."""
    from funcdiff.data.anemoi import AnemoiStore
    from funcdiff.data.the_well import TheWellStore

    store = TheWellStore(path) if fmt == "the_well" else AnemoiStore(path)
    layout = "(N, C, T, *S)" if fmt == "the_well" else "(1, C, T, cells)" if len(store.shape) == 4 else \
        "(1, C, T, latitude, longitude)"
    lines = [f"file:   {path}", f"format: {fmt} (read lazily)", f"shape:  {store.shape} {layout}, "
             f"{store.nbytes / 2**30:.3g} GiB as float32", f"channels: {', '.join(store.channel_names)}"]
    for name, values in store.coords.items():
        values = np.asarray(values)
        if values.size:
            lo, hi = (str(values.min()), str(values.max())) if values.dtype.kind == "M" else (
                f"{float(values.min()):.4g}", f"{float(values.max()):.4g}")
            lines.append(f"coord {name}: {values.size} values in [{lo}, {hi}]")
    shown = {k: v for k, v in store.attrs.items() if k not in ("statistics", "normalization", "files")}
    lines += [f"attr {k}: {v}" for k, v in shown.items()]
    if store.attrs.get("normalization"):
        lines.append(f"stored statistics for: {', '.join(store.attrs['normalization'])}")
    lines.append("non-finite values: not scanned (the store is read lazily)")
    return "\n".join(lines)


def count_nonfinite(path: str | os.PathLike, fmt: str | None = None, chunk_bytes: int = 1 << 26
                    ) -> dict[str, tuple[int, int]]:
    """``{name: (NaN count, Inf count)}`` for every floating-point array of a data file: HDF5 datasets are read
    in chunks of about ``chunk_bytes`` along their first axis, other formats through :func:`load_fields`."""
    path = Path(path)
    if not h5py.is_hdf5(path):
        data = load_fields(path, format=fmt or "auto", dtype=None)
        return {k: _nonfinite(v.numpy()) for k, v in data.fields.items() if v.is_floating_point()}
    counts: dict[str, tuple[int, int]] = {}
    with h5py.File(path, "r") as f:
        def visit(name: str, obj: Any) -> None:
            if not isinstance(obj, h5py.Dataset) or obj.dtype.kind not in "fc" or obj.ndim == 0:
                return
            step = max(1, chunk_bytes // max(1, obj[0:1].nbytes))
            totals = [_nonfinite(obj[i:i + step]) for i in range(0, obj.shape[0], step)]
            counts["/" + name] = (sum(t[0] for t in totals), sum(t[1] for t in totals))
        f.visititems(visit)
    return counts


def _nonfinite(array: np.ndarray) -> tuple[int, int]:
    return int(np.isnan(array).sum()), int(np.isinf(array).sum())
