"""The library speaks in parameters; the CLI in flags (DESIGN.md).

A Python caller of ``initial_from_file(index=5)`` reads ``index=5 is out of range``, not ``--index 5``; the
command line shows the same message with flags (:func:`funcdiff.cli.flag_message`, table ``PARAMETER_FLAGS``).
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from funcdiff.cli import PARAMETER_FLAGS, build_parser, flag_message
from funcdiff.errors import UserError

PACKAGE = Path(__file__).resolve().parents[1] / "funcdiff"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# Strings that may name flags: each tells the user which *command* to run (a backticked `funcdiff <verb> ...`),
# on purpose, because the remedy is another command (a checkpoint of another kind, a file another verb reads or
# writes). Python callers get the function too where there is one. (module, the command as written)
COMMAND_HINTS = {
    ("kinds/autoregressive.py", "`funcdiff forecast --checkpoint ... --initial FILE`"),
    ("kinds/super_resolution.py", "`funcdiff upsample --checkpoint ... --input FILE`"),
    ("guidance/io.py", "`funcdiff forecast --observations`"),
    ("guidance/timed.py", "`funcdiff forecast --sensor-fraction F`"),
    ("tasks/batch.py", "`funcdiff solve --cases`"),
    ("tasks/batch.py", "`funcdiff forecast --indices/--init-times`"),
}


def _strings(tree: ast.AST):
    """(line, text) of every string literal that is not a docstring; f-strings whole, ``{}`` for their fields."""
    docstrings, inner = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
        if isinstance(node, ast.JoinedStr):
            inner.update(id(v) for v in ast.walk(node) if v is not node)
    for node in ast.walk(tree):
        if id(node) in docstrings or id(node) in inner:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr):
            yield node.lineno, "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)


def library_flag_strings() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if module.startswith("cli/"):
            continue
        for line, text in _strings(ast.parse(path.read_text(), str(path))):
            for m, command in COMMAND_HINTS:
                if m == module:
                    text = text.replace(command, "")
            flags = FLAG.findall(text)
            if flags:
                found.append(f"funcdiff/{module}:{line}: {', '.join(flags)} in {text!r}")
    return found


def test_library_messages_name_parameters_not_flags():
    found = library_flag_strings()
    assert not found, ("library strings name CLI flags; name the parameter (`index=5 is out of range`) and let "
                       "funcdiff.cli.PARAMETER_FLAGS show it as a flag:\n" + "\n".join(found))


def test_the_scan_sees_split_and_formatted_messages(tmp_path):
    code = ('def f(x):\n    """Docstrings may say --index."""\n    # so may comments: --index\n'
            '    raise ValueError(f"{x} is out of range "\n                     "(--index)")\n')
    assert [text for _, text in _strings(ast.parse(code))] == ["{} is out of range (--index)"]


def test_every_command_hint_is_still_there():
    for module, command in COMMAND_HINTS:
        texts = [t for _, t in _strings(ast.parse((PACKAGE / module).read_text()))]
        assert any(command in t for t in texts), f"{module} no longer says {command}: drop it from COMMAND_HINTS"


def _all_flags() -> set[str]:
    flags, todo = set(), [build_parser()]
    while todo:
        parser = todo.pop()
        for action in parser._actions:
            flags.update(action.option_strings)
            if action.choices and isinstance(action.choices, dict):
                todo += [p for p in action.choices.values() if isinstance(p, argparse.ArgumentParser)]
    return flags


def test_parameter_table_names_real_flags():
    assert set(PARAMETER_FLAGS.values()) <= _all_flags()


@pytest.mark.parametrize("library, cli", [
    ("index=5 is out of range: f.h5 holds 4 trajectories", "--index 5 is out of range: f.h5 holds 4 trajectories"),
    ("start_frame=99 must lie in 1..23: ...", "--start-frame 99 must lie in 1..23: ..."),
    ("indices='0:9' selects no sample", "--indices '0:9' selects no sample"),
    ("x.zarr exists (use overwrite=True)", "x.zarr exists (use --overwrite)"),
    ("give exactly one of indices= and init_times=", "give exactly one of --indices and --init-times"),
    ("gaps (start=..., end=...) or fill", "gaps (--start ..., --end ...) or fill"),
    ("pushforward=True is implied by method 'dps-physics'", "--pushforward is implied by method 'dps-physics'"),
    # config keys, quoted text, --set overrides and longer names stay as they are
    ("train.batch_size=64 is larger than 32", "train.batch_size=64 is larger than 32"),
    ("bad override 'step=3'; --set step=3", "bad override 'step=3'; --set step=3"),
    ("frame_step=2, reindex=3", "frame_step=2, reindex=3"),
])
def test_cli_shows_parameters_as_flags(library, cli):
    assert flag_message(library) == cli


def test_python_callers_read_parameter_names():
    import torch

    from funcdiff.tasks.batch import forecast_cases, parse_indices
    from funcdiff.tasks.forecast_io import initial_from_trajectories

    traj = torch.zeros(4, 1, 24, 3)
    with pytest.raises(UserError, match=r"^index=5 is out of range: f\.h5 holds 4 trajectories"):
        initial_from_trajectories(traj, None, "f.h5", 5, None, history=2)
    with pytest.raises(UserError, match=r"^start_frame=99 must lie in 1\.\.23"):
        initial_from_trajectories(traj, None, "f.h5", 0, 99, history=2)
    with pytest.raises(UserError, match=r"^indices='0:12': asks for"):
        parse_indices("0:12", 10, "f.h5")
    with pytest.raises(UserError, match=r"^start_frame=99 must lie in 1\.\.23"):
        forecast_cases(traj.shape, None, "f.h5", history=2, indices="0:2", start_frame=99)
    with pytest.raises(UserError, match=r"^trajectories=\[0, 9\]: trajectory 9 is out of range"):
        forecast_cases(traj.shape, None, "f.h5", history=2, init_times="3/4", trajectories=[0, 9])
    with pytest.raises(UserError, match="exactly one of indices= and init_times="):
        forecast_cases(traj.shape, None, "f.h5", history=2)
