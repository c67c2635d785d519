"""``sriovctl services``: what is running, from NATS service discovery ($SRV.INFO/STATS)."""

from __future__ import annotations

from typing import Any

import click

from sriov.cli.context import CliContext
from sriov.cli.output import echo_table, emit_json
from sriov.common.bus import Bus


def register(cli: click.Group) -> None:
    cli.add_command(services)


@click.command()
@click.option("--wait", default=0.5, show_default=True, help="Seconds to collect answers.")
@click.pass_obj
def services(obj: CliContext, wait: float) -> None:
    """List running services and their endpoints (like `nats micro ls`)."""

    async def call(bus: Bus) -> list[dict[str, Any]]:
        infos = await bus.discover("INFO", wait)
        stats = {s["id"]: s for s in await bus.discover("STATS", wait)}
        for info in infos:
            st = stats.get(info["id"], {})
            eps = st.get("endpoints") or []
            info["requests"] = sum(e.get("num_requests", 0) for e in eps)
            info["errors"] = sum(e.get("num_errors", 0) for e in eps)
        return sorted(infos, key=lambda i: (i["name"], i["id"]))

    infos = obj.run(call)
    if obj.as_json:
        emit_json(infos)
        return
    rows = [
        [
            i["name"],
            i["version"],
            i["id"],
            (i.get("metadata") or {}).get("instance", ""),
            ", ".join(e["subject"] for e in i.get("endpoints") or []) or "-",
            i["requests"],
            i["errors"],
        ]
        for i in infos
    ]
    echo_table(
        ["Name", "Version", "ID", "Instance", "Endpoints", "Requests", "Errors"],
        rows,
        f"*** Total: {len(rows)} ***",
    )
