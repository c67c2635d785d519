"""``sriovctl services``: what is running, from NATS service discovery ($SRV.INFO/STATS)."""

from __future__ import annotations

import os
from typing import Any

import click

from sriov.cli.context import CliContext
from sriov.cli.output import Report, Table, command, fail
from sriov.common.bus import Bus


@command()
@click.option("--wait", default=0.5, show_default=True, help="Seconds to collect answers.")
@click.option("--name", help="Only this service (e.g. sriov-scheduler).")
@click.option("--instance", help="Only this replica (its --instance-id, e.g. the pod's name).")
@click.option(
    "--self",
    "own",
    is_flag=True,
    help="Only the replica named by $SRIOV_INSTANCE_ID: a pod's own (probes expand no variables).",
)
@click.option(
    "--require",
    is_flag=True,
    help="Exit 1 unless a matching service answered: a readiness probe for one replica.",
)
@click.pass_obj
def services(
    obj: CliContext, wait: float, name: str | None, instance: str | None, own: bool, require: bool
) -> Report:
    """List running services and their endpoints (like `nats micro ls`)."""
    if own:
        instance = os.environ.get("SRIOV_INSTANCE_ID") or fail(
            "--self: SRIOV_INSTANCE_ID is not set (it names this replica)", 2
        )

    async def call(bus: Bus) -> list[dict[str, Any]]:
        infos = await bus.discover("INFO", wait)
        stats = {s["id"]: s for s in await bus.discover("STATS", wait)}
        for info in infos:
            st = stats.get(info["id"], {})
            eps = st.get("endpoints") or []
            info["requests"] = sum(e.get("num_requests", 0) for e in eps)
            info["errors"] = sum(e.get("num_errors", 0) for e in eps)
        return sorted(infos, key=lambda i: (i["name"], i["id"]))

    infos = [
        i
        for i in obj.run(call)
        if (name is None or i["name"] == name)
        and (instance is None or (i.get("metadata") or {}).get("instance") == instance)
    ]
    if require and not infos:
        wanted = " ".join(
            filter(None, [name or "any service", instance and f"instance {instance}"])
        )
        fail(
            f"{wanted} did not answer on NATS within {wait}s: not running, not connected, or "
            "its event loop is stuck"
        )
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
    columns = ["Name", "Version", "ID", "Instance", "Endpoints", "Requests", "Errors"]
    return Report(infos, [Table(columns, rows, f"*** Total: {len(rows)} ***")])


COMMANDS = (services,)
