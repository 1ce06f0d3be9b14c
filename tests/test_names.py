"""One spelling shown, both accepted: task and problem names with hyphens or underscores in the Python API."""

import pytest

from funcdiff.pde import get_problem
from funcdiff.tasks.problems import TASKS, get_task


@pytest.mark.parametrize("name", ["navier-stokes-forward", "navier_stokes_forward", "Navier_Stokes-Forward"])
def test_task_names_accept_both_spellings(name):
    assert get_task(name) is TASKS["navier-stokes-forward"]


@pytest.mark.parametrize("name", ["navier_stokes", "navier-stokes", "burgers-shock"])
def test_problem_names_accept_both_spellings(name):
    assert get_problem(name).name == name.lower().replace("-", "_")


def test_unknown_names_still_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid tasks: .*darcy-inverse"):
        get_task("darcy-backward")
    with pytest.raises(ValueError, match="valid: .*kolmogorov"):
        get_problem("kolmogorow")


def test_task_grid_has_one_spelling():
    assert {t.netcdf_grid for t in TASKS.values()} <= {"node", "periodic"}
