"""Run ``sriovctl`` as an operator does (a real process, real NATS) and read its tables.

For tests of any package whose commands ``sriovctl`` carries; no runtime module imports it.
"""

from __future__ import annotations

import asyncio
import os
import sys


async def sriovctl(nats_url: str, *args: str, timeout: float = 10) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``sriovctl --nats-url URL --timeout T ARGS...``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from sriov.cli.main import main; main()",
        "--nats-url", nats_url, "--timeout", str(timeout), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def table_rows(text: str) -> tuple[list[str], list[list[str]], str]:
    """Header, rows and footer (the last line) of a climc-style table."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    footer = text.strip().splitlines()[-1] if text.strip() else ""
    return cells[0] if cells else [], cells[1:], footer
