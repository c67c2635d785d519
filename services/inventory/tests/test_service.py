"""Start-up: migrations under concurrent replicas, settings errors, the real command."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus
from sriov.common.errors import InvalidRequest, NotFound
from sriov.common.redact import redact_url
from sriov.inventory import testing as t
from sriov.inventory.db.migrate import migrate, migrations
from sriov.inventory.main import parse

EXE = Path(sys.executable).parent / "sriov-inventory"


async def test_replicas_starting_at_once_migrate_exactly_once(database_url: str) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(6)]
    try:
        applied = await asyncio.gather(*(migrate(c) for c in conns))
        versions = [mg.version for mg in migrations()]
        assert sorted(v for a in applied for v in a) == versions  # each applied by one
        rows = await conns[0].fetch("SELECT version FROM inventory.schema_migrations")
        assert sorted(r["version"] for r in rows) == versions
        assert await migrate(conns[0]) == []  # and a restart is a no-op
    finally:
        for c in conns:
            await c.close()


def test_settings_errors_name_the_option_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SRIOV_DATABASE_URL", raising=False)
    with pytest.raises(Exception, match="--database-url or set SRIOV_DATABASE_URL"):
        parse([])
    with pytest.raises(Exception, match=r"--heartbeat-timeout \(SRIOV_HEARTBEAT_TIMEOUT\) is 0"):
        parse(["--database-url", "postgresql://x@127.0.0.1/db", "--heartbeat-timeout", "0"])
    monkeypatch.setenv("SRIOV_DATABASE_URL", "postgresql://u@127.0.0.1/db")
    monkeypatch.setenv("SRIOV_HEARTBEAT_TIMEOUT", "7.5")
    settings = parse(["--batch", "50"])
    assert (settings.database_url, settings.heartbeat_timeout, settings.batch) == (
        "postgresql://u@127.0.0.1/db",
        7.5,
        50,
    )
    assert isinstance(settings.instance_id, str)
    assert redact_url("postgresql://u:secret@h:5/db") == "postgresql://u:***@h:5/db"


def test_command_without_database_fails_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SRIOV_DATABASE_URL"}
    res = subprocess.run([str(EXE)], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1] == (
        "sriov-inventory: error: no database: give --database-url or set SRIOV_DATABASE_URL "
        "(e.g. postgresql://user@127.0.0.1:5432/sriov)"
    )


async def test_command_serves_queries_and_stops_on_sigterm(
    bus: Bus, nats_url: str, database_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "inventory.log"
    with t.inventory_process(nats_url, database_url, log) as proc:
        hostd = t.Hostd(bus, "h1")
        await hostd.snapshot(*t.fleet_host(1, vfs=4))

        async def listed() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return (await t.list_devices(bus)).total == 4
            except Exception:
                return False

        await t.eventually(listed, 60, "the command serving the snapshot's devices")
        infos = await bus.discover("INFO")
        assert [i["name"] for i in infos] == ["sriov-inventory"]
        subjects_served = {e["subject"] for e in infos[0]["endpoints"]}
        assert subjects_served == {
            f"{s.INVENTORY_DEVICES_GROUP}.list", f"{s.INVENTORY_DEVICES_GROUP}.get",
            f"{s.INVENTORY_HOSTS_GROUP}.list", f"{s.INVENTORY_HOSTS_GROUP}.get",
        }  # fmt: skip
        names = sorted(e["name"] for e in infos[0]["endpoints"])
        assert names == ["devices_get", "devices_list", "hosts_get", "hosts_list"]
        with pytest.raises(InvalidRequest, match=r">= 1 - at `\$.limit`") as bad:
            await t.list_devices(bus, limit=0)
        assert bad.value.details["field"] == "limit"
        get = s.endpoint(s.INVENTORY_DEVICES_GROUP, "get")
        with pytest.raises(NotFound):
            await bus.request(get, m.DeviceGetRequest(id="nope"), m.DeviceGetReply)
        with pytest.raises(InvalidRequest, match="give the device id"):
            await bus.request(get, m.DeviceGetRequest(host_id="h1"), m.DeviceGetReply)
        by_pci = m.DeviceGetRequest(host_id="h1", pci_address="0000:3b:00.2")
        dev = (await bus.request(get, by_pci, m.DeviceGetReply)).device
        assert dev.id == m.device_id("h1", "0000:3b:00.2")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()
