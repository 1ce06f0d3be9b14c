"""`funcdiff --help` and `funcdiff <verb> --help` import neither torch nor neuraloperator (issue 20), and the
plain-tuple choices the parser offers (funcdiff.cli.choices) equal the registries they mirror; `data list` too."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

import pytest

from funcdiff.cli import VERBS
from funcdiff.cli import choices

HEAVY = ("torch", "neuralop", "torch_harmonics", "numpy", "xarray", "h5py", "matplotlib")


def _imported(argv: list[str]) -> set[str]:
    """Top-level packages imported by ``python -X importtime -m funcdiff.cli *argv`` (which must exit 0)."""
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "funcdiff.cli", *argv], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    names = set()
    for line in run.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.mark.parametrize("argv", [["--help"], *[[verb, "--help"] for verb in VERBS], ["data", "generate", "--help"]])
def test_help_imports_no_torch(argv):
    heavy = _imported(argv) & set(HEAVY)
    assert not heavy, f"funcdiff {' '.join(argv)} imported {sorted(heavy)}"


def test_build_parser_imports_no_torch():
    code = ("import sys, funcdiff.cli as c; c.build_parser(); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"


def test_choices_mirror_their_registries():
    from funcdiff.sampling import SOLVERS
    from funcdiff.tasks.demo import DemoSettings
    from funcdiff.tasks.problems import task_names
    from funcdiff.tasks.samplers import METHODS

    assert choices.SOLVERS == tuple(sorted(SOLVERS))
    assert choices.TASKS == tuple(task_names())
    assert choices.METHODS == tuple(METHODS)
    from funcdiff.data.hdf5 import available_problems

    assert choices.DATA_PROBLEMS == {name: (p.kind, tuple(p.fields), dict(p.defaults), p.description)
                                     for name, p in available_problems().items()}
    assert choices.DEMO_SETTINGS == tuple((f.name, type(f.default), f.default) for f in fields(DemoSettings)
                                          if f.name not in ("seed", "device"))


def test_data_list_and_data_help_import_no_torch():
    """``funcdiff data list`` prints the registry's mirror (funcdiff.cli.choices.DATA_PROBLEMS, checked above)."""
    for argv in (["data", "list"], ["data", "--help"]):
        heavy = _imported(argv) & set(HEAVY)
        assert not heavy, f"funcdiff {' '.join(argv)} imported {sorted(heavy)}"
    run = subprocess.run([sys.executable, "-m", "funcdiff.cli", "data", "list"], capture_output=True, text=True,
                         timeout=120)
    for name, (kind, fields, _, description) in choices.DATA_PROBLEMS.items():
        assert f"{name:28s} {kind:10s} fields={list(fields)}" in run.stdout and description in run.stdout


# A verb that runs imports only what it uses (issue 20): listing or inspecting data needs no neural operator, no
# compiler stack and no plotting.
MODEL_STACK = ("neuralop", "torch_harmonics", "matplotlib")


@pytest.mark.parametrize("argv", [["data", "list"], ["data", "info", "{h5}"]])
def test_data_verbs_import_no_model_stack(argv, tmp_path):
    from funcdiff.data import generate_to_hdf5
    from funcdiff.data.synthetic import SYNTHETIC

    path = tmp_path / "tiny.h5"
    generate_to_hdf5(SYNTHETIC, path, num_samples=2, resolution=8, seed=0, batch_size=2, progress=False)
    heavy = _imported([a.format(h5=path) for a in argv]) & set(MODEL_STACK)
    assert not heavy, f"funcdiff {' '.join(argv)} imported {sorted(heavy)}"
