"""The sriov-scheduler program: bad settings and an unreachable database give one clear line."""

from __future__ import annotations

import asyncio
import os
import sys

from sriov.devtools.embedded import free_port


async def scheduler(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sriov.scheduler.main", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "OTEL_TRACES_EXPORTER": "none", **(env or {})},
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_no_database_configured(nats_url: str) -> None:
    code, out = await scheduler("--nats-url", nats_url, env={"SRIOV_DATABASE_URL": ""})
    assert code == 2
    assert "no database: give --database-url or set SRIOV_DATABASE_URL" in out


async def test_database_unreachable(nats_url: str) -> None:
    dsn = f"postgresql://sched:secret@127.0.0.1:{free_port()}/sriov"
    code, out = await scheduler(
        "--nats-url", nats_url, "--database-url", dsn, "--db-connect-wait", "1"
    )
    assert code == 2
    assert "cannot connect to PostgreSQL at postgresql://sched:***@127.0.0.1" in out
    assert "secret" not in out and "Traceback" not in out


async def test_bad_setting_names_the_variable(nats_url: str, database_url: str) -> None:
    code, out = await scheduler(
        "--nats-url", nats_url, "--database-url", database_url, "--request-concurrency", "0"
    )
    assert code == 2
    assert "--request-concurrency (SRIOV_REQUEST_CONCURRENCY) is 0: use 1 to 4096" in out
    code, out = await scheduler(
        "--nats-url", nats_url, env={"SRIOV_DATABASE_URL": database_url,
                                     "SRIOV_RESERVATION_TTL_S": "soon"},
    )  # fmt: skip
    assert code == 2 and "--reservation-ttl (SRIOV_RESERVATION_TTL_S) is soon: expected" in out
