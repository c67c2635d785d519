"""open_pool: waits for a server that is starting, gives up at once on what waiting cannot fix."""

from __future__ import annotations

import time

import asyncpg
import pytest

from sriov.common import database
from sriov.common.database import Conn
from sriov.common.errors import ConfigError, Unavailable
from sriov.devtools.embedded import free_port


async def test_prepare_runs_once_before_the_pool_is_handed_out(database_url: str) -> None:
    prepared: list[int] = []

    async def prepare(conn: Conn) -> None:
        prepared.append(await conn.fetchval("SELECT 41 + 1"))

    pool = await database.open_pool(database_url, max_size=3, prepare=prepare)
    try:
        assert prepared == [42]
        assert await pool.fetchval("SHOW TimeZone")  # the pool answers
    finally:
        await pool.close()


async def test_a_failing_prepare_is_raised_and_closes_the_pool(database_url: str) -> None:
    async def prepare(conn: Conn) -> None:
        await conn.execute("SELECT no_such_function()")

    with pytest.raises(Exception, match="no_such_function"):
        await database.open_pool(database_url, prepare=prepare)


async def test_unreachable_server_is_unavailable_after_the_wait_without_the_password() -> None:
    dsn = f"postgresql://sched:secret@127.0.0.1:{free_port()}/sriov"
    started = time.monotonic()
    with pytest.raises(Unavailable) as err:
        await database.open_pool(dsn, wait_s=1.0)
    assert time.monotonic() - started >= 1.0  # it waited, retrying, for the whole wait
    assert "cannot connect to PostgreSQL at postgresql://sched:***@127.0.0.1" in str(err.value)
    assert "secret" not in str(err.value)


async def test_a_missing_database_fails_at_once(database_url: str) -> None:
    missing = database_url.rsplit("/", 1)[0] + "/no_such_db"
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"cannot use database .*no_such_db"):
        await database.open_pool(missing, wait_s=30)
    assert time.monotonic() - started < 0.2  # no retry: waiting would not create it


async def test_no_or_malformed_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--database-url or SRIOV_DATABASE_URL"):
        await database.open_pool("")
    with pytest.raises(ConfigError, match="invalid"):
        await database.open_pool("postgresql://u:secret@h:notaport/db")


async def test_an_outage_is_unavailable_a_wrong_statement_is_not(database_url: str) -> None:
    """What a durable consumer waits out (PostgreSQL away, starting, full) against what it
    dead-letters after its deliveries (the statement is wrong)."""
    pool = await database.open_pool(database_url, max_size=2)
    await pool.close()
    with pytest.raises(Unavailable, match="during reading"), database.outages("reading"):
        await pool.fetchval("SELECT 1")  # a closed pool: the connection is gone
    with pytest.raises(Unavailable, match="CannotConnectNowError"), database.outages("x"):
        raise asyncpg.CannotConnectNowError("the database system is starting up")
    with pytest.raises(Unavailable), database.outages("x"):
        raise ConnectionRefusedError(111, "Connect call failed")
    with pytest.raises(Unavailable), database.outages("x"):
        raise asyncpg.TooManyConnectionsError("sorry, too many clients already")
    with pytest.raises(asyncpg.UndefinedFunctionError), database.outages("x"):
        raise asyncpg.UndefinedFunctionError("function no_such_function() does not exist")
