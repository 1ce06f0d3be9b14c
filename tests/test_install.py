"""Install instructions agree with each other (issue 18): the torch-harmonics version of the `sphere` extra is the one
the README and .ci/run install, not the yanked 0.8.1, and the README says how to run the tests that need it."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
YANKED = {"0.8.1"}  # torch-harmonics releases withdrawn from PyPI ("wrong version number")


def _sphere_pin() -> str:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (requirement,) = extras["sphere"]
    return re.fullmatch(r"torch-harmonics==([\d.]+)", requirement).group(1)


def test_sphere_extra_pins_a_release_that_is_not_yanked_and_the_docs_agree():
    pin = _sphere_pin()
    assert pin not in YANKED
    readme = (ROOT / "README.md").read_text() + (ROOT / "datasets" / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    named = set(re.findall(r"torch-harmonics==([\d.]+)", readme + ci))
    assert not named & YANKED
    assert named <= {pin} | {v for v in named if v.startswith("0.9.")}  # 0.9.x: the torch >= 2.14 alternative
    assert ".[test,sphere]" in ci
    assert 'pip install -e ".[test,sphere,era5]" && python -m pytest -q tests/test_sphere_models.py' in readme
    for path in ("funcdiff/pde/shallow_water.py", "funcdiff/models/sfno.py"):
        text = (ROOT / path).read_text()
        assert f"torch-harmonics {pin}" in text and not any(f"torch-harmonics {v}" in text for v in YANKED), path


def test_installed_torch_harmonics_is_the_pinned_one():
    try:
        installed = metadata.version("torch-harmonics")
    except metadata.PackageNotFoundError:
        pytest.skip("torch-harmonics is not installed (the sphere extra)")
    import torch

    if tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 14):
        pytest.skip("torch >= 2.14 takes torch-harmonics 0.9.x, not the extra's pin")
    assert installed == _sphere_pin()
