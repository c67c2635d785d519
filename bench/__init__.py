"""Benchmarks: each module has ``main(argv)`` and prints its figures (never asserts them).

Each parses its own options with :func:`parser`, so an unknown or misspelt flag is an error
naming it rather than a default silently used.
"""

from __future__ import annotations

import argparse
import asyncio


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's parser: ``--help`` shows its docstring; unknown flags are refused."""
    name = module.rsplit(".", 1)[-1]
    return argparse.ArgumentParser(
        prog=f"./stack bench {name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )


async def stop_process(proc: asyncio.subprocess.Process | None, grace_s: float = 10) -> None:
    """Terminate a daemon the benchmark started (killed if it does not stop in ``grace_s``)."""
    if proc is None or proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
