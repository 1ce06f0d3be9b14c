"""The CLI reference page, generated from the argparse parser (``funcdiff.cli.build_parser``) at build time.

Every verb (and sub-verb, e.g. ``data generate``) gets its ``--help`` text verbatim, so the page cannot drift from
the command line. ``python docs/gen_cli.py [FILE]`` prints or writes the page; ``docs/hooks.py`` adds it to the site.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterator

WIDTH = "100"  # argparse wraps help at $COLUMNS


def _children(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen = set()
            for name, child in action.choices.items():
                if id(child) not in seen:  # aliases point to the same parser
                    seen.add(id(child))
                    yield name, child


def _sections(parser: argparse.ArgumentParser, words: list[str], depth: int) -> Iterator[str]:
    title = " ".join(words)
    yield f"{'#' * depth} `{title}`\n"
    yield "```text\n" + parser.format_help().rstrip() + "\n```\n"
    for name, child in _children(parser):
        yield from _sections(child, words + [name], min(depth + 1, 4))


def page() -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        from funcdiff.cli import build_parser

        parser = build_parser()
        verbs = [name for name, _ in _children(parser)]
        head = ["# Command-line reference", "",
                "Generated from the argparse parser when the docs are built (`docs/gen_cli.py`): each section is "
                "the verb's `funcdiff <verb> --help`. `--debug` and `--threads N` are accepted before or after the "
                "verb.", "",
                "Verbs: " + ", ".join(f"[`{v}`](#funcdiff-{v})" for v in verbs) + ".", ""]
        body = list(_sections(parser, ["funcdiff"], 2))
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(head) + "\n" + "\n".join(body)


if __name__ == "__main__":
    text = page()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)
    else:
        print(text)
