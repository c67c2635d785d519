"""A forged ``$SRV`` answer cannot steer ``sriovctl offload-status`` (issue 17, row 6).

Any host identity may answer service discovery, naming whatever service and ``host_id`` it
likes. The CLI therefore takes its targets from inventory's host list: a forger can neither
add a host inventory does not know nor hide one that it does.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sriov.cli.testing import sriovctl
from sriov.common.bus import Bus, ServiceHost
from sriov.inventory import testing as t
from sriov.offload.main import agent
from sriov.offload.settings import OffloadSettings
from sriov.offload.testing import OvsSandbox
from sriov.offload.testing.fakes import FakeProbes

pytestmark = [pytest.mark.ovs]

REAL, SILENT, GHOST = "host-real", "host-silent", "host-ghost"


@contextlib.asynccontextmanager
async def offload_agent(nats_url: str, ovs: OvsSandbox, host_id: str) -> AsyncIterator[None]:
    """The real agent for ``host_id`` on its own connection, as ``sriov-offload`` runs it."""
    settings = OffloadSettings(host_id=host_id, ovsdb=ovs.db_remote, vswitchd_ctl=ovs.ctl_sock,
                               nats_url=nats_url, instance_id=host_id)  # fmt: skip
    bus = await Bus.connect(nats_url, name=f"offload-{host_id}")
    service = await ServiceHost.start(bus, "sriov-offload", "0.1.0", "test", {"host_id": host_id})
    try:
        async with agent(settings, bus, service, probes=FakeProbes()):
            await bus.flush()
            yield
    finally:
        await service.stop()
        await bus.close()


async def test_offload_status_asks_inventorys_hosts_not_discovery(
    bus: Bus, nats_url: str, database_url: str, tmp_path: Path
) -> None:
    ovs = OvsSandbox(tmp_path / "ovs").start()
    forger = await Bus.connect(nats_url, name="forger")
    try:
        async with (
            t.replica(nats_url, database_url) as rep,
            offload_agent(nats_url, ovs, REAL),
        ):
            for host in (REAL, SILENT):  # both report to inventory; only REAL runs offload
                await t.Hostd(bus, host).snapshot(*t.fleet_host(1, vfs=2))
            await t.eventually(lambda: t.drained(bus, rep.pool), what="hosts ingested")
            # SILENT's identity answers discovery as an offload agent of a host nobody knows
            fake = await ServiceHost.start(forger, "sriov-offload", "0.1.0", "forged",
                                           {"host_id": GHOST})  # fmt: skip
            try:
                infos = await bus.discover("INFO", 0.3)
                named = {(i.get("metadata") or {}).get("host_id") for i in infos}
                assert GHOST in named and SILENT not in named  # what discovery would target

                code, out, err = await sriovctl(nats_url, "--json", "offload-status")
                statuses = json.loads(out)
                assert [st["host_id"] for st in statuses] == [REAL], out + err
                assert GHOST not in out + err
                assert f"host {SILENT}: no offload agent runs there" in err
                assert code == 0, err

                code, out, err = await sriovctl(nats_url, "offload-status", "--host", GHOST)
                assert code == 1 and "no service answers" in out + err  # asked by name only
            finally:
                await fake.stop()
    finally:
        await forger.close()
        ovs.stop()
