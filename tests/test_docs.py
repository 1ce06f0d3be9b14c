"""The generated docs pages (docs/gen_benchmarks.py, docs/gen_cli.py): one table per benchmark result file with the
columns of its rows and no load averages, every verb's --help on the CLI page."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_pages_have_one_table_per_result_file(tmp_path):
    gen = _module("gen_benchmarks")
    results = tmp_path / "results"
    results.mkdir()
    (results / "noise.json").write_text(json.dumps({
        "meta": {"machine": "x86_64, 1 threads", "torch": "2.13.0", "command": "python benchmarks/noise.py --quick",
                 "loadavg": [4.1, 3.0, 2.0], "seconds_total": 12.5, "batch": 8},
        "rows": [{"resolution": 64, "method": "fft", "seconds": 0.0003899, "loadavg": 5.5},
                 {"resolution": 128, "method": "fft", "seconds": float("nan"), "note": "a|b"}]}))
    (results / "brand_new.json").write_text(json.dumps({"meta": {}, "rows": [{"x": 1}]}))
    pages = gen.pages(results)
    speed, other = pages["benchmarks/speed.md"], pages["benchmarks/other.md"]
    assert "| resolution | method | seconds | note |" in speed
    assert "| 64 | fft | 0.0003899 |  |" in speed and "| 128 | fft | – | a\\|b |" in speed
    assert "Command: `python benchmarks/noise.py --quick`" in speed and "torch 2.13.0" in speed
    assert "loadavg" not in speed and "4.1" not in speed and "12.5" not in speed and '"batch": 8' in speed
    assert "brand_new.json" in other  # a file no page claims is shown, not dropped
    assert "benchmarks/index.md" in pages


def test_speed_page_summarises_the_denoiser_against_neuraloperator(tmp_path):
    gen = _module("gen_benchmarks")
    results = tmp_path / "results"
    results.mkdir()
    rows = [{"grid": 64, "pass": p, "batch": 1, "dtype": d, "impl": "funcdiff", "vs_neuralop": r, "vs_floor": 2.0}
            for p, d, r in (("forward", "float32", 0.8), ("train-step", "float32", 0.9), ("forward", "bfloat16", 0.7),
                            ("train-step", "bfloat16", 0.75))]
    rows += [{"grid": 128, "pass": "forward", "batch": 1, "dtype": "float32", "impl": "funcdiff", "vs_neuralop": 0.6,
              "growth": 3.5, "vs_floor": 1.1},
             {"grid": 64, "pass": "guided-step", "impl": "dps", "guided_ratio": 2.1},
             {"grid": 64, "pass": "guided-step", "impl": "mmps", "cg_iters": 1, "per_cg_iter_vs_unguided": 1.2}]
    (results / "denoiser_speed.json").write_text(json.dumps({"meta": {}, "rows": rows}))
    speed = gen.pages(results)["benchmarks/speed.md"]
    assert "| 64² | 0.8 / 0.9 | 0.7 / 0.75 | – / – | 2 / 2 |" in speed
    assert "| 128² | 0.6 / – | – / – | 3.5 / – | 1.1 / – |" in speed
    assert "| 64² | 2.1 | 1.2 |" in speed
    assert speed.index("## Summary") < speed.index("## `denoiser_speed.json`")


def test_every_shipped_result_file_is_on_a_page():
    gen = _module("gen_benchmarks")
    text = "".join(gen.pages().values())
    for path in (ROOT / "benchmarks" / "results").glob("*.json"):
        assert f"## `{path.name}`" in text, path.name
    assert "loadavg" not in text and "load average" not in text.lower() and "issue" not in text.lower()


def test_cli_page_has_every_verbs_help():
    from funcdiff.cli import VERBS

    page = _module("gen_cli").page()
    for verb in VERBS:
        assert f"## `funcdiff {verb}`" in page and f"usage: funcdiff {verb}" in page, verb
    assert "### `funcdiff data generate`" in page



def test_readme_is_short_and_points_to_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert "mkdocs serve" in readme
