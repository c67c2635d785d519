"""Inventory's pool: :func:`sriov.common.database.open_pool` with the schema migrated."""

from __future__ import annotations

from sriov.common import database
from sriov.inventory.db.conn import Pool
from sriov.inventory.db.migrate import migrate


async def open_pool(dsn: str, *, min_size: int = 2, max_size: int = 10, wait_s: float = 60) -> Pool:
    return await database.open_pool(
        dsn, min_size=min_size, max_size=max_size, wait_s=wait_s, prepare=migrate,
        server_settings={"application_name": "sriov-inventory"},  # named in pg_stat_activity
        # SET LOCAL, transaction-scoped locks and temporary tables only: 1,200 resets in 10 s
        # of fleet_scale's placements, a round trip each
        reset=database.keep_session,
    )  # fmt: skip
