"""``sriovctl``: the operator's CLI. It talks to the services over NATS, never to a database.

Each command family lives in its own module under :mod:`sriov.cli.commands` and registers
itself on the root group.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import click

from sriov.cli.context import CliContext

COMMAND_MODULES = ("services", "hostd", "inventory", "scheduler", "offload", "events", "security")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--nats-url", envvar="SRIOV_NATS_URL", help="NATS URL (default: the local stack's)")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for a service.")
@click.pass_context
def cli(ctx: click.Context, nats_url: str | None, as_json: bool, timeout: float) -> None:
    """Operate the SR-IOV control plane: devices, placements, hosts, offload."""
    ctx.obj = CliContext(nats_url=nats_url, as_json=as_json, timeout=timeout)


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"sriov.cli.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"sriov.cli.commands.{name}":
                raise
            continue
        module.register(cli)


_register()


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="sriovctl")
