"""CF-1.8 compliance of a netCDF file, through the IOOS compliance checker's Python API.

    from cf_check import cf_errors, require_checker
    require_checker()                      # pytest.skip with a reason if the checker is not installed
    assert cf_errors(path) == []

`cf_errors(path)` runs the checker's ``cf:1.8`` suite on one file (the same checks as
``compliance-checker --test cf:1.8 FILE``) and returns one line per failed high- or medium-priority
check, ``"<priority>: <check name>: <message>"``, plus one line per check that raised. Low-priority
results (recommendations) are left out unless ``min_priority="low"``.
"""

from __future__ import annotations

import os

_PRIORITY = {"high": 3, "medium": 2, "low": 1}
_NAME = {3: "high", 2: "medium", 1: "low"}

_suite = None


def checker_available() -> tuple[bool, str]:
    """(True, "") if compliance_checker and cf_units import, else (False, why)."""
    try:
        import cf_units  # noqa: F401
        import compliance_checker  # noqa: F401
        from compliance_checker.suite import CheckSuite  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any import failure means "not installed"
        return False, f"compliance-checker / cf-units not importable ({type(err).__name__}: {err})"
    return True, ""


def require_checker() -> None:
    """Skip the calling test (pytest.skip) if the compliance checker cannot be imported."""
    import pytest

    ok, why = checker_available()
    if not ok:
        pytest.skip(why)


def _get_suite():
    """A CheckSuite with the CF checkers only (loading every suite imports the deprecated ioos_sos one)."""
    global _suite
    if _suite is None:
        from importlib.metadata import entry_points

        from compliance_checker.suite import CheckSuite

        cf = [e for e in entry_points(group="compliance_checker.suites") if e.name.startswith("cf-")]
        if cf:
            CheckSuite._load_checkers(cf)
        else:  # another packaging of the checker: load them all
            CheckSuite.load_all_available_checkers()
        _suite = CheckSuite()
    return _suite


def _messages(result) -> list[str]:
    """The failure messages of one result, its failed children's included."""
    if result.children:
        out: list[str] = []
        for child in result.children:
            if child.value is not None and child.value[0] != child.value[1]:
                out.extend(_messages(child))
        return out or list(result.msgs)
    return list(result.msgs)


def cf_errors(path: str | os.PathLike, min_priority: str = "medium", checker: str = "cf:1.8") -> list[str]:
    """Failed CF checks of the netCDF file at ``path`` with priority >= ``min_priority``.

    Returns ``[]`` for a file that passes. Each entry is ``"<priority>: <check>: <message>"``;
    a check that raised inside the checker is reported as ``"error: <check>: <exception>"``.
    """
    limit = _PRIORITY[min_priority]
    suite = _get_suite()
    ds = suite.load_dataset(os.fspath(path))
    try:
        results = suite.run_all(ds, [checker])
    finally:
        if hasattr(ds, "close"):
            ds.close()
    if checker not in results:
        raise ValueError(f"compliance checker has no suite {checker!r} (have {sorted(suite.checkers)})")
    groups, raised = results[checker]
    out: list[str] = []
    for res in sorted(groups, key=lambda r: -r.weight):
        if res.weight < limit or res.value is None:
            continue
        if res.value[0] == res.value[1]:
            continue
        msgs = _messages(res) or ["(no message)"]
        out.extend(f"{_NAME.get(res.weight, res.weight)}: {res.name}: {m}" for m in msgs)
    for name, (exc, _tb) in sorted(raised.items()):
        out.append(f"error: {name}: {type(exc).__name__}: {exc}")
    return out


def cf_report(path: str | os.PathLike, min_priority: str = "medium") -> str:
    """``cf_errors`` as one readable string (for assertion messages)."""
    errs = cf_errors(path, min_priority=min_priority)
    return f"{os.fspath(path)}: {len(errs)} CF problem(s)\n" + "\n".join("  " + e for e in errs)
