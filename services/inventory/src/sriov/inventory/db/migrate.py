"""Versioned migrations of the ``inventory`` schema, applied at start.

Several replicas may start at once: the whole check-and-apply runs in one transaction
under a PostgreSQL advisory lock, so exactly one applies each version and the others
wait, then find it done. A migration is a numbered SQL file in ``migrations/``; applied
versions are recorded in ``inventory.schema_migrations`` and never edited afterwards.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

from sriov.inventory.db.conn import Conn

log = logging.getLogger(__name__)

SCHEMA = "inventory"
#: Arbitrary constant naming "inventory migrations" among advisory locks.
LOCK_KEY = 0x5121_0001
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with this package, in version order."""
    found = []
    for entry in resources.files("sriov.inventory.db").joinpath("migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda mg: mg.version)
    versions = [mg.version for mg in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {versions}")
    return found


async def migrate(conn: Conn) -> list[int]:
    """Apply missing migrations; return the versions applied by this call."""
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in await conn.fetch(f"SELECT version FROM {SCHEMA}.schema_migrations")}
        known = migrations()
        newer = sorted(done - {mg.version for mg in known})
        if newer:
            log.warning(
                "database has inventory schema versions %s this build does not know "
                "(a newer replica migrated it); continuing, migrations are additive",
                newer,
            )
        for mg in known:
            if mg.version in done:
                continue
            log.info("applying inventory migration %04d_%s", mg.version, mg.name)
            await conn.execute(mg.sql)
            await conn.execute(
                f"INSERT INTO {SCHEMA}.schema_migrations (version, name) VALUES ($1, $2)",
                mg.version,
                mg.name,
            )
            applied_now.append(mg.version)
    return applied_now
