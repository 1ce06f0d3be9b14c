"""Moved: the shallow-water ERA5-like data generator is :mod:`funcdiff.tasks.era5_synthetic` (it writes CF netCDF
through :mod:`funcdiff.io`, which data modules do not import). Importing a name from here still works and warns."""

from funcdiff.utils import moved_attribute

_NEW = "funcdiff.tasks.era5_synthetic"
_NAMES = ("LEVEL", "SHORT_NAMES", "CHANNELS", "LAYOUTS", "simulate", "CF_STANDARD_NAMES", "CDS_COORD_ATTRS", "to_cds", "to_wb2",
          "write_cds", "write_wb2", "write_shallow_water_era5")


def __getattr__(name: str):
    return moved_attribute(__name__, name, {n: _NEW for n in _NAMES})
