"""Output of every command, in one place: ``-o table|json|yaml`` (``--json`` = ``-o json``).

A command returns a :class:`Report`: the data (a msgspec Struct, a list or a dict) that
``json``/``yaml`` print, and the human rendering (the guide's ``climc``-style tables and
lines) that ``table`` prints. :class:`Command` adds the option to every command and renders
what its callback returns, so no command branches on the format. ``sriovctl events``
streams, so it renders each event with :func:`render_item` instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import click
import msgspec

FORMATS = ("table", "json", "yaml")
DEFAULT = "table"


@dataclass
class Table:
    """A bordered table and its optional footer line (``*** Total: 3 ***``)."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    footer: str = ""


@dataclass
class Report:
    """What a command returns. ``human`` is printed in order for ``-o table``; ``notes``
    go to stderr whatever the format; a non-zero ``exit_code`` ends the process."""

    data: Any
    human: Sequence[Table | str] = ()
    notes: Sequence[str] = ()
    exit_code: int = 0


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A ``+----+`` bordered table like ``climc`` prints."""
    # tabulate and yaml are imported when used: they are a tenth of sriovctl's start-up
    from tabulate import tabulate

    cells = [["" if v is None else v for v in row] for row in rows]
    text: str = tabulate(
        cells, headers=list(headers), tablefmt="pretty", stralign="left", numalign="left"
    )
    return text


def to_json(value: Any, indent: int = 2) -> str:
    encoded = msgspec.json.encode(value)
    return (msgspec.json.format(encoded, indent=indent) if indent else encoded).decode()


def to_yaml(value: Any) -> str:
    import yaml

    text: str = yaml.safe_dump(
        msgspec.to_builtins(value), sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    return text


def render(report: Report, fmt: str) -> None:
    if fmt == "json":
        click.echo(to_json(report.data))
    elif fmt == "yaml":
        click.echo(to_yaml(report.data), nl=False)
    else:
        for part in report.human:
            if isinstance(part, Table):
                click.echo(table(part.columns, part.rows))
                if part.footer:
                    click.echo(part.footer)
            else:
                click.echo(part)
    for note in report.notes:
        click.echo(note, err=True)
    if report.exit_code:
        sys.exit(report.exit_code)


def render_item(value: Any, fmt: str, line: Callable[[Any], str]) -> str:
    """One item of a stream: a JSON line, a YAML document, or the human ``line``."""
    if fmt == "json":
        return to_json(value, indent=0)
    if fmt == "yaml":
        return "---\n" + to_yaml(value).rstrip("\n")
    return line(value)


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"sriovctl: error: {message}", err=True)
    sys.exit(code)


META_KEY = "sriov.output"


def output_params() -> list[click.Parameter]:
    """``-o/--output`` and its alias ``--json``: on the root group and on every command."""
    return [
        click.Option(
            ["-o", "--output"],
            type=click.Choice(FORMATS),
            help=f"Output format (default: {DEFAULT}).",
        ),
        click.Option(["--json", "as_json"], is_flag=True, help="Same as -o json."),
    ]


def record_format(ctx: click.Context, output: str | None, as_json: bool) -> None:
    """Record the format named at this level in ``ctx.meta``, which the root group and its
    command share; a command's own ``-o`` wins over the root group's."""
    if as_json and output not in (None, "json"):
        raise click.UsageError(f"--json contradicts -o {output}", ctx)
    if as_json or output:
        ctx.meta[META_KEY] = "json" if as_json else output


def output_format(ctx: click.Context | None = None) -> str:
    """The format in force for the running command (for ``events``, which streams)."""
    ctx = ctx or click.get_current_context()
    return str(ctx.meta.get(META_KEY) or DEFAULT)


class Command(click.Command):
    """A ``sriovctl`` command: takes ``-o``/``--json`` and renders the :class:`Report` its
    callback returns in the format named here, else on the root group, else ``table``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(output_params())

    def invoke(self, ctx: click.Context) -> Any:
        record_format(ctx, ctx.params.pop("output"), ctx.params.pop("as_json"))
        result = super().invoke(ctx)
        if isinstance(result, Report):
            render(result, output_format(ctx))
        return result


def command(name: str | None = None, **kwargs: Any) -> Callable[[Callable[..., Any]], Command]:
    """``click.command`` for a ``sriovctl`` command (see :class:`Command`)."""
    return click.command(name, cls=Command, **kwargs)
