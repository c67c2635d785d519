"""Open the asyncpg pool of a service that keeps its state in PostgreSQL (inventory, scheduler).

One way to connect: wait for a server that is still starting, fail at once on what waiting
cannot fix (no such database, wrong password, a malformed URL), trace every query, and
prepare the schema on one connection before anyone uses the pool. Errors name the URL with
its password hidden (:func:`sriov.common.redact.redact_url`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TypeAlias

import asyncpg
import asyncpg.pool
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

from sriov.common import telemetry
from sriov.common.errors import ConfigError, Unavailable
from sriov.common.redact import redact_url

log = logging.getLogger(__name__)

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
Conn: TypeAlias = (
    "asyncpg.pool.PoolConnectionProxy[asyncpg.Record] | asyncpg.Connection[asyncpg.Record]"
)

#: What waiting does not fix: the server answered and refused.
_REFUSED = (asyncpg.InvalidCatalogNameError, asyncpg.InvalidAuthorizationSpecificationError)
#: The connection failed under the call; asyncpg reports a server killed mid-protocol as an
#: InternalClientError. The call either never committed or did: callers are idempotent.
UNREACHABLE = (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError, TimeoutError)
#: SQLSTATE classes that say the server is away or overwhelmed, not that the statement is
#: wrong: connection exception (08), insufficient resources (53: too many connections),
#: operator intervention (57: shutting down, starting up, statement cancelled), system (58).
OUTAGE_CLASSES = frozenset({"08", "53", "57", "58"})


def outage(exc: BaseException) -> bool:
    """PostgreSQL is down, restarting, full or unreachable: waiting fixes it, retrying the
    same work later is right, and the work itself is not at fault."""
    if isinstance(exc, UNREACHABLE):
        return True
    state = getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
    return isinstance(state, str) and state[:2] in OUTAGE_CLASSES


@contextlib.contextmanager
def outages(what: str) -> Iterator[None]:
    """Raise an outage of PostgreSQL under the block as :class:`Unavailable` (what a durable
    consumer waits out instead of spending the message's deliveries on it); anything else
    passes unchanged."""
    try:
        yield
    except Exception as exc:
        if outage(exc):
            raise Unavailable(
                f"database unreachable during {what} ({type(exc).__name__}: {exc})"
            ) from exc
        raise


def instrument() -> None:
    """Database calls become spans of the current trace (once per process), when spans are
    recorded at all (``telemetry.setup`` ran first and an exporter is configured)."""
    if not telemetry.recording():
        return
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


async def keep_session(conn: asyncpg.Connection) -> None:
    """An asyncpg pool ``reset`` that releases a connection as it is (asyncpg still rolls back
    an open transaction). Its default reset is a round trip per release (``RESET ALL``,
    ``UNLISTEN *``...); for a service whose sessions keep no state to reset: transaction-scoped
    advisory locks, ``SET LOCAL`` and temporary tables dropped in their transaction only."""


async def open_pool(
    dsn: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    wait_s: float = 60,
    timeout: float = 60,
    server_settings: Mapping[str, str] | None = None,
    reset: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    prepare: Callable[[Conn], Awaitable[object]] | None = None,
) -> Pool:
    """Connect (retrying for up to ``wait_s`` while PostgreSQL starts or restarts: a service
    started beside it in a fleet restart waits instead of exiting), then ``prepare``
    (migrations) on one connection; the pool is closed again if that fails. ``timeout``
    bounds connecting and every command."""
    where = redact_url(dsn)
    if not dsn:
        raise ConfigError(
            "no database: give --database-url or SRIOV_DATABASE_URL "
            "(e.g. postgresql://user@127.0.0.1:5432/sriov)",
            key="database_url",
        )
    instrument()
    last: BaseException | None = None
    deadline = time.monotonic() + wait_s
    attempt = 0
    while True:
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=timeout,
                command_timeout=timeout,
                server_settings=dict(server_settings or {}),
                reset=reset,
            )
            break
        except _REFUSED as exc:
            raise Unavailable(f"cannot use database {where}: {exc}") from exc
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            last = exc
        except ValueError as exc:  # asyncpg's word for a URL it cannot parse
            raise ConfigError(f"database URL {where} is invalid: {exc}") from exc
        pause = min(0.2 * 2**attempt, 3, deadline - time.monotonic())
        if pause <= 0:
            raise Unavailable(
                f"cannot connect to PostgreSQL at {where}: {last}. Check that the server runs "
                "and the URL (--database-url or SRIOV_DATABASE_URL) and credentials are right."
            )
        (log.warning if attempt == 0 else log.info)(
            "database %s not reachable yet (waiting up to %.0fs): %s", where, wait_s, last
        )
        await asyncio.sleep(pause)
        attempt += 1
    if prepare is not None:
        try:
            async with pool.acquire() as conn:
                await prepare(conn)
        except BaseException:
            await pool.close()
            raise
    return pool
