"""The asyncpg pool: traced, with readable connection errors and the schema migrated."""

from __future__ import annotations

import asyncio
import logging
import re

import asyncpg
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

from sriov.common.errors import ConfigError, Unavailable
from sriov.inventory.db.conn import Pool
from sriov.inventory.db.migrate import migrate

log = logging.getLogger(__name__)


def redact(dsn: str) -> str:
    """``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db`` for error messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", dsn)


async def open_pool(dsn: str, *, min_size: int = 2, max_size: int = 10, attempts: int = 5) -> Pool:
    """Connect (retrying while PostgreSQL starts), trace every query, apply migrations."""
    if not dsn:
        raise ConfigError(
            "no database: give --database-url or SRIOV_DATABASE_URL "
            "(e.g. postgresql://user@127.0.0.1:5432/sriov)",
            key="database_url",
        )
    AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]
    last: BaseException | None = None
    for attempt in range(attempts):
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, command_timeout=60
            )
            break
        except (asyncpg.InvalidCatalogNameError, asyncpg.InvalidPasswordError) as exc:
            raise Unavailable(f"cannot use database {redact(dsn)}: {exc}") from exc
        except (TimeoutError, OSError, asyncpg.PostgresError, ValueError) as exc:
            if isinstance(exc, ValueError) and "dsn" in str(exc).lower():
                raise ConfigError(f"database URL {redact(dsn)} is invalid: {exc}") from exc
            last = exc
            log.warning("database %s not reachable yet: %s", redact(dsn), exc)
            await asyncio.sleep(min(0.2 * 2**attempt, 3))
    else:
        raise Unavailable(
            f"cannot connect to PostgreSQL at {redact(dsn)}: {last}. "
            "Check that it is running and the URL and credentials are right."
        )
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
    except BaseException:
        await pool.close()
        raise
    return pool
