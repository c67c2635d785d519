"""Query plans in tests: a statement that picks rows and then changes them must not be planned
as a join that re-runs the picking per row of the table.

The planner chooses that join when the statistics say the table is empty, which VACUUM and
ANALYZE record whenever they find it so for a moment (a drained queue, a purged table) while
its pages are still allocated. In a 10,000-host restart one such claim of inventory's outbox
ran 60 s over 147,000 rows.
"""

from __future__ import annotations

from typing import Any

import msgspec

JOINS = frozenset({"Nested Loop", "Hash Join", "Merge Join"})


async def analyzed_while_empty(conn: Any, table: str) -> None:
    """Give ``table`` the statistics ANALYZE records when it finds the table empty (0 rows
    over allocated pages), then put its rows back: the plans below are then made for that."""
    await conn.execute(f"CREATE TEMP TABLE kept AS SELECT * FROM {table}")
    await conn.execute(f"DELETE FROM {table}")
    await conn.execute(f"ANALYZE {table}")
    await conn.execute(f"INSERT INTO {table} OVERRIDING SYSTEM VALUE SELECT * FROM kept")
    await conn.execute("DROP TABLE kept")
    stats = await conn.fetchrow(
        "SELECT reltuples, relpages FROM pg_class WHERE oid = $1::regclass", table
    )
    assert (stats["reltuples"], stats["relpages"] > 0) == (0, True), dict(stats)


async def plan_nodes(conn: Any, sql: str, *args: object, init_plans: bool = True) -> set[str]:
    """The node types of ``sql``'s plan (``EXPLAIN``: nothing runs); without those of its
    init plans (what it computes once before, such as an ``ARRAY(...)`` picking rows) when
    ``init_plans`` is false."""
    plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
    return _nodes(msgspec.json.decode(plan)[0]["Plan"], init_plans)


def _nodes(node: dict[str, Any], init_plans: bool) -> set[str]:
    children = [
        c for c in node.get("Plans", []) if init_plans or c.get("Parent Relationship") != "InitPlan"
    ]
    return {node["Node Type"]}.union(*(_nodes(c, init_plans) for c in children))


async def pages_read(conn: Any, sql: str, *args: object) -> int:
    """How many pages ``sql`` reads (shared buffers hit or read), run once in a transaction
    that is rolled back."""
    tr = conn.transaction()
    await tr.start()
    try:
        plan = await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, *args)
    finally:
        await tr.rollback()
    top = msgspec.json.decode(plan)[0]["Plan"]
    return int(top["Shared Hit Blocks"] + top["Shared Read Blocks"])
