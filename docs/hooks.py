"""mkdocs hooks (``hooks:`` in mkdocs.yml): add the generated pages to the site at build time.

- ``cli.md``: every verb's ``--help`` from ``funcdiff.cli.build_parser()`` (``docs/gen_cli.py``);
- ``benchmarks/*.md``: one table per ``benchmarks/results/*.json`` (``docs/gen_benchmarks.py``), with the JSON files
  and plots copied next to them.

The pages exist only in the built site, never in ``docs/``, so nothing generated can be edited by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS))

import gen_benchmarks  # noqa: E402
import gen_cli  # noqa: E402


def on_files(files: Files, config) -> Files:
    generated = {"cli.md": gen_cli.page(), **gen_benchmarks.pages()}
    for uri, text in generated.items():
        files.append(File.generated(config, uri, content=text))
    for uri, path in gen_benchmarks.assets().items():
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
