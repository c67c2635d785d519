"""The scheduler's schema: versioned migrations applied once whatever the number of replicas
starting, functions replaced at every start, and a database made before versioning adopted
with everything in it."""

from __future__ import annotations

import asyncio

import asyncpg

from sriov.scheduler.store import Store, functions_script, schema_migrations


async def test_replicas_opening_at_once_migrate_exactly_once(database_url: str) -> None:
    stores = await asyncio.gather(*(Store.open(database_url) for _ in range(4)))
    try:
        assert len({s.epoch for s in stores}) == 1  # one database, one epoch
        rows = await stores[0].pool.fetch(
            "SELECT version, name FROM scheduler.schema_migrations ORDER BY version"
        )
        assert [(r["version"], r["name"]) for r in rows] == [
            (mg.version, mg.name) for mg in schema_migrations()
        ]
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_database_from_before_versioned_migrations_is_adopted(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:  # what the first releases did: the table script and the functions, no versions
        # (the functions of those builds read only the first migration's tables: create the
        # ones of today's build that do, so a function is there to be dropped below)
        await conn.execute(schema_migrations()[0].sql + old_functions())
        epoch = await conn.fetchval("SELECT value FROM scheduler.meta WHERE key = 'epoch'")
        await conn.execute(
            "INSERT INTO scheduler.hosts (host_id, status, revision) VALUES ('h1', 'online', 7)"
        )
        await conn.execute("DROP FUNCTION scheduler.guest_assignments(text)")  # an old build's
    finally:
        await conn.close()
    store = await Store.open(database_url)
    try:
        assert store.epoch == epoch  # same durable name: no replay of the whole fleet
        host = await store.pool.fetchrow("SELECT status, revision FROM scheduler.hosts")
        assert (host["status"], host["revision"]) == ("online", 7)
        versions = await store.pool.fetch("SELECT version FROM scheduler.schema_migrations")
        assert [r["version"] for r in versions] == [mg.version for mg in schema_migrations()]
        out = await store.guest("nobody")  # the function is back
        assert out.assignments == []
    finally:
        await store.close()


def old_functions() -> str:
    """Of today's functions, those a database of the first migration alone can hold."""
    keep = ("fail", "guest_assignments")
    chunks = functions_script().split("CREATE OR REPLACE FUNCTION scheduler.")
    return "".join(
        "CREATE OR REPLACE FUNCTION scheduler." + c.split("\n-- ")[0]
        for c in chunks[1:]
        if c.startswith(keep)
    )
