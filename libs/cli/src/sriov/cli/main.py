"""``sriovctl``: the operator's CLI. It talks to the services over NATS, never to a database.

Each command family lives in its own module under :mod:`sriov.cli.commands`; they are
imported here by name, so a module that fails to import fails the CLI loudly instead of
silently removing its commands.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from sriov.cli.commands import (
    events,
    hostd,
    inventory,
    maintenance,
    offload,
    scheduler,
    security,
    services,
)
from sriov.cli.context import CliContext
from sriov.cli.output import output_params, record_format

FAMILIES = (services, hostd, inventory, scheduler, maintenance, offload, events, security)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    params=output_params(),
)
@click.option("--nats-url", envvar="SRIOV_NATS_URL", help="NATS URL (default: the local stack's)")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for a service.")
@click.pass_context
def cli(
    ctx: click.Context, nats_url: str | None, timeout: float, output: str | None, as_json: bool
) -> None:
    """Operate the SR-IOV control plane: devices, placements, hosts, offload.

    -o/--output (or --json) goes before the command or after it: `sriovctl
    isolated-device-list -o json`.
    """
    record_format(ctx, output, as_json)
    ctx.obj = CliContext(nats_url=nats_url, timeout=timeout)


for _family in FAMILIES:
    for _command in _family.COMMANDS:
        cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="sriovctl")
