"""Versioned schema migrations for a service's PostgreSQL schema, applied at start.

Several replicas may start at once: the whole check-and-apply runs in one transaction under
a PostgreSQL advisory lock, so exactly one applies each version and the others wait, then
find it done. A migration is a numbered SQL file (``0001_name.sql``) in a package folder;
applied versions are recorded in ``<schema>.schema_migrations`` and never edited afterwards.
Whatever must be re-applied on every start (``CREATE OR REPLACE FUNCTION``) is passed as
``always`` and runs in the same transaction, after the migrations.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

log = logging.getLogger(__name__)
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class Conn(Protocol):
    """What is used of an asyncpg connection (libs/common does not depend on asyncpg)."""

    def transaction(self) -> AbstractAsyncContextManager[Any]: ...
    async def execute(self, query: str, *args: Any) -> str: ...
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load(
    package: str, folder: str = "migrations", edit: Callable[[str], str] = str
) -> list[Migration]:
    """Every migration shipped in ``package``/``folder``, in version order (``edit`` may
    fill placeholders in each file's text)."""
    found = []
    for entry in resources.files(package).joinpath(*folder.split("/")).iterdir():
        if m := _NAME.match(entry.name):
            found.append(Migration(int(m.group(1)), m.group(2), edit(entry.read_text("utf-8"))))
    found.sort(key=lambda mg: mg.version)
    versions = [mg.version for mg in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {package}/{folder}: {versions}")
    return found


async def migrate(
    conn: Conn, schema: str, known: list[Migration], lock_key: int, always: str = ""
) -> list[int]:
    """Apply the migrations ``schema`` misses, then ``always``; return the versions applied."""
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in await conn.fetch(f"SELECT version FROM {schema}.schema_migrations")}
        if newer := sorted(done - {mg.version for mg in known}):
            log.warning(
                "database has %s schema versions %s this build does not know (a newer replica "
                "migrated it); continuing, migrations are additive",
                schema, newer,
            )  # fmt: skip
        for mg in known:
            if mg.version in done:
                continue
            log.info("applying %s migration %04d_%s", schema, mg.version, mg.name)
            await conn.execute(mg.sql)
            await conn.execute(
                f"INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2)",
                mg.version,
                mg.name,
            )
            applied_now.append(mg.version)
        if always:
            await conn.execute(always)
    return applied_now
