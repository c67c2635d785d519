"""Entry point of sriov-inventory: ``sriov-inventory --database-url DSN`` + NATS options.

Several replicas may run against the same database and NATS: they share the durable
consumers, the outbox and the query queue group.
"""

from __future__ import annotations

from collections.abc import Sequence

from sriov.common import runtime
from sriov.common.config import parse_args
from sriov.inventory.db.pool import open_pool
from sriov.inventory.replica import Replica
from sriov.inventory.settings import InventorySettings

NAME = "sriov-inventory"
DESCRIPTION = "fleet device table and queries"


def parse(argv: Sequence[str] | None = None) -> InventorySettings:
    return parse_args(InventorySettings, argv, prog=NAME, description=DESCRIPTION)


async def serve(settings: InventorySettings) -> None:
    async def body(ctx: runtime.ServiceContext) -> None:
        pool = await open_pool(settings.database_url, min_size=2, max_size=settings.db_pool_size)
        ctx.stack.push_async_callback(pool.close)
        replica = Replica(pool, ctx.bus, settings)
        await replica.register(ctx.service)
        ctx.spawn(replica.run(ctx.stop), "inventory")

    await runtime.serve(NAME, DESCRIPTION, settings, body)


def main(argv: Sequence[str] | None = None) -> None:
    async def go() -> None:
        await serve(parse(argv))

    runtime.run(go, NAME)


if __name__ == "__main__":
    main()
