"""Benchmarks: each module has ``main(argv)`` and prints its figures (never asserts them).

Each parses its own options with :func:`parser`, so an unknown or misspelt flag is an error
naming it rather than a default silently used.
"""

from __future__ import annotations

import argparse


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's parser: ``--help`` shows its docstring; unknown flags are refused."""
    name = module.rsplit(".", 1)[-1]
    return argparse.ArgumentParser(
        prog=f"./stack bench {name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
