"""Entry point of sriov-inventory: ``sriov-inventory --database-url DSN`` + NATS options.

Several replicas may run against the same database and NATS: they share the durable
consumers, the outbox and the query queue group.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Sequence

import msgspec

from sriov.common import runtime
from sriov.common.errors import ConfigError
from sriov.inventory.db.pool import open_pool
from sriov.inventory.replica import Replica, Tuning

NAME = "sriov-inventory"
DESCRIPTION = "fleet device table and queries"


class InventorySettings(runtime.BusSettings, kw_only=True, forbid_unknown_fields=True):
    """Environment: ``SRIOV_DATABASE_URL``, ``SRIOV_HEARTBEAT_TIMEOUT``... (``SRIOV_`` + name)."""

    database_url: str = ""
    """PostgreSQL DSN; the ``inventory`` schema is created and migrated at start."""
    heartbeat_timeout: float = 15.0
    """Seconds without any event (at least twice hostd's heartbeat interval) before a host
    is marked offline."""
    batch: int = 100
    """Events fetched and applied per transaction."""
    relay_batch: int = 500
    """Outbox rows published per relay round."""
    db_pool_size: int = 10
    rescan_interval: float = 30.0
    """Least seconds between two rescan requests to the same host."""
    ack_wait: float = 60.0
    """Seconds before an unacknowledged event (a crashed replica's) is redelivered."""
    gauges_interval: float = 15.0
    """Seconds between two refreshes of the fleet gauges (VFs by host/model, hosts)."""

    def check(self) -> None:
        if not self.database_url:
            raise ConfigError(
                "no database: give --database-url or set SRIOV_DATABASE_URL "
                "(e.g. postgresql://user@127.0.0.1:5432/sriov)",
                key="database_url",
            )
        for key, value, low, high in (
            ("heartbeat_timeout", self.heartbeat_timeout, 0.05, 86400),
            ("batch", self.batch, 1, 1000),
            ("relay_batch", self.relay_batch, 1, 10000),
            ("db_pool_size", self.db_pool_size, 2, 500),
            ("rescan_interval", self.rescan_interval, 0, 86400),
            ("ack_wait", self.ack_wait, 1, 3600),
            ("gauges_interval", self.gauges_interval, 0.1, 3600),
        ):
            if not low <= value <= high:
                option = "--" + key.replace("_", "-")
                raise ConfigError(
                    f"{option} (SRIOV_{key.upper()}) is {value}: use {low} to {high}", key=key
                )

    def tuning(self) -> Tuning:
        return Tuning(
            heartbeat_timeout_s=self.heartbeat_timeout,
            batch=self.batch,
            relay_batch=self.relay_batch,
            rescan_interval_s=self.rescan_interval,
            ack_wait_s=self.ack_wait,
            gauges_interval_s=self.gauges_interval,
        )


def parse(argv: Sequence[str] | None = None) -> InventorySettings:
    parser = argparse.ArgumentParser(prog=NAME, description=DESCRIPTION)
    g = parser.add_argument_group("inventory (also from SRIOV_* environment variables)")
    g.add_argument("--database-url", help="PostgreSQL DSN (SRIOV_DATABASE_URL)")
    g.add_argument(
        "--heartbeat-timeout", type=float, help="seconds of silence before a host is offline"
    )
    g.add_argument("--batch", type=int, help="events applied per transaction (default 100)")
    g.add_argument("--relay-batch", type=int, help="outbox rows published per round")
    g.add_argument("--db-pool-size", type=int, help="PostgreSQL connections (default 10)")
    g.add_argument("--rescan-interval", type=float, help="least seconds between rescans")
    g.add_argument("--ack-wait", type=float, help="seconds before a crashed batch is redelivered")
    g.add_argument("--gauges-interval", type=float, help="seconds between fleet gauge refreshes")
    runtime.add_bus_args(parser)
    settings: InventorySettings = runtime.settings_from_args(
        InventorySettings, parser.parse_args(argv), parser
    )
    if not isinstance(settings.instance_id, str):  # work around BusSettings' default
        settings = msgspec.structs.replace(
            settings, instance_id=f"{socket.gethostname()}-{os.getpid()}"
        )
    settings.check()
    return settings


async def serve(settings: InventorySettings) -> None:
    async def body(ctx: runtime.ServiceContext) -> None:
        pool = await open_pool(settings.database_url, min_size=2, max_size=settings.db_pool_size)
        ctx.stack.push_async_callback(pool.close)
        replica = Replica(pool, ctx.bus, settings.tuning())
        await replica.register(ctx.service)
        ctx.spawn(replica.run(ctx.stop), "inventory")

    await runtime.serve(NAME, DESCRIPTION, settings, body)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = parse(argv)
    except ConfigError as exc:
        raise SystemExit(f"{NAME}: error: {exc}") from exc
    runtime.run(lambda: serve(settings), NAME)


if __name__ == "__main__":
    main()
