"""Human tables (the guide's climc style) and ``--json`` output for every command."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click
import msgspec
from tabulate import tabulate


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A ``+----+`` bordered table like ``climc`` prints."""
    cells = [["" if v is None else v for v in row] for row in rows]
    text: str = tabulate(
        cells, headers=list(headers), tablefmt="pretty", stralign="left", numalign="left"
    )
    return text


def emit_json(value: Any) -> None:
    click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], footer: str = "") -> None:
    click.echo(table(headers, rows))
    if footer:
        click.echo(footer)


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"sriovctl: error: {message}", err=True)
    sys.exit(code)
