"""Claim outbox rows for relaying: oldest first, skipping rows another replica holds."""

from __future__ import annotations

from sriov.inventory.announce import OutboxRow
from sriov.inventory.db.conn import Conn

_CLAIM = (
    "DELETE FROM inventory.outbox o USING ("
    " SELECT subject FROM inventory.outbox ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"
    ") c WHERE o.subject = c.subject RETURNING o.subject, o.payload, o.headers, o.seq"
)


async def claim(conn: Conn, limit: int) -> list[OutboxRow]:
    """Delete and return up to ``limit`` rows inside the caller's transaction.

    The caller publishes them, then commits; if publishing fails it rolls back and the rows
    are back for the next attempt. Rows a concurrent writer is replacing stay locked by it,
    so a newer state of a subject can never be overtaken by an older one.
    """
    rows = await conn.fetch(_CLAIM, limit)
    rows = sorted(rows, key=lambda r: r["seq"])
    return [OutboxRow(r["subject"], r["payload"], r["headers"]) for r in rows]


async def any_pending(conn: Conn) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM inventory.outbox)"))


async def pending(conn: Conn) -> int:
    value = await conn.fetchval("SELECT count(*) FROM inventory.outbox")
    return int(value or 0)
