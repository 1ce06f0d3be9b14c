"""Data stage: generate PDE datasets into our HDF5 layout, read outside formats, build Dataset objects.

* :mod:`funcdiff.data.hdf5` — resumable, deterministic batched writer (``generate_to_hdf5``) and layout.
* :mod:`funcdiff.data.readers` — ``load_fields`` for funcdiff HDF5, PDEBench HDF5, FNO ``.mat``,
  neuraloperator ``.pt``.
* :mod:`funcdiff.data.datasets` — ``FieldDataset``, ``TrajectoryWindowDataset``, ``train_test_split``.
* :mod:`funcdiff.data.normalization` — per-channel ``Normalizer``.
* :mod:`funcdiff.data.stores` — ``ArrayStore``, the lazily read array of every streamed source, and the HDF5, ERA5
  zarr and netCDF/WeatherBench 2 stores; :mod:`funcdiff.data.streaming` — ``open_store``, training items and
  windows of a store (none across a gap in time), the map-style Dataset of DataLoader workers, streaming statistics.
* :mod:`funcdiff.data.synthetic` — file-free non-Gaussian periodic fields for demos and tests.
"""

from funcdiff.data.datasets import FieldDataset, TrajectoryWindowDataset, check_finite, train_test_split
from funcdiff.data.hdf5 import batch_seed, generate_to_hdf5, partial_path
from funcdiff.data.normalization import Normalizer
from funcdiff.data.readers import (FieldData, detect_format, load_fields, read_fno_mat, read_funcdiff_hdf5,
                                   read_neuralop_pt, read_pdebench)
from funcdiff.data.synthetic import SYNTHETIC, make_synthetic_fields

__all__ = [
    "FieldData", "FieldDataset", "Normalizer", "SYNTHETIC", "TrajectoryWindowDataset", "batch_seed",
    "check_finite", "detect_format", "generate_to_hdf5", "load_fields", "make_synthetic_fields", "partial_path",
    "read_fno_mat", "read_funcdiff_hdf5", "read_neuralop_pt", "read_pdebench", "train_test_split",
]
