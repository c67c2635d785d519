"""The unixctl client, the vswitchd wrapper and the OVSDB replica against real OVS daemons."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from sriov.common.errors import Unavailable
from sriov.offload import unixctl
from sriov.offload.flows import parse_dump
from sriov.offload.ovsdb import OvsConfig, Ovsdb
from sriov.offload.testing import OvsSandbox, send_udp
from sriov.offload.unixctl import UnixctlError
from sriov.offload.vswitchd import Vswitchd

pytestmark = [pytest.mark.ovs, pytest.mark.netns]


async def test_unixctl_talks_to_ovs_vswitchd(ovs_sandbox: OvsSandbox) -> None:
    version = await unixctl.call(ovs_sandbox.ctl_sock, "version")
    assert version.startswith("ovs-vswitchd (Open vSwitch)")
    with pytest.raises(UnixctlError, match="no-such-command"):
        await unixctl.call(ovs_sandbox.ctl_sock, "no-such-command", what="ovs-vswitchd")


async def test_unixctl_errors_name_the_socket(tmp_path: Path) -> None:
    missing = str(tmp_path / "gone.ctl")
    with pytest.raises(Unavailable, match=f"{missing}: the socket file does not exist") as info:
        await unixctl.call(missing, "version", what="ovs-vswitchd")
    assert info.value.code == "unavailable"

    done = asyncio.Event()

    async def mute(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await done.wait()  # accepts, reads nothing, never answers: a hung daemon
        w.close()

    path = str(tmp_path / "mute.ctl")
    server = await asyncio.start_unix_server(mute, path)
    try:
        with pytest.raises(Unavailable, match=r"did not answer 'version' within 0\.3s"):
            await unixctl.call(path, "version", timeout=0.3, what="ovs-vswitchd")
    finally:
        done.set()
        server.close()
        await asyncio.sleep(0)
    refused = str(tmp_path / "refused.ctl")
    os.mknod(refused, 0o600 | 0o140000)  # a socket file nobody listens on (stale)
    with pytest.raises(Unavailable, match="nothing accepts connections"):
        await unixctl.call(refused, "version")


async def test_unixctl_reaches_sockets_beyond_the_108_byte_limit(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    sb = await asyncio.to_thread(OvsSandbox(deep).start)
    try:
        assert len(sb.ctl_sock) > 108
        assert "Open vSwitch" in await unixctl.call(sb.ctl_sock, "version")
    finally:
        await asyncio.to_thread(sb.stop)


async def test_vswitchd_datapaths_dump_and_flow_api_state(lab) -> None:  # type: ignore[no-untyped-def]
    vs = Vswitchd(lab.ovs.ctl_sock)
    assert await vs.datapaths() == ["netdev@ovs-netdev"]
    off = await vs.flow_api()
    assert off.enabled is False and "flow API off" in off.evidence
    send_udp(lab.a.netns, lab.b.address, count=20)
    dump = parse_dump(await vs.dump_flows("netdev@ovs-netdev"), datapath="netdev@ovs-netdev")
    assert dump.errors == []
    udp = [f for f in dump.flows if "proto=17/0" in f.match and f.in_port == "vm1"]
    assert udp and udp[0].packets >= 18 and udp[0].actions == "vm2"
    lab.ovs.set_other_config("hw-offload", "true")
    on = await vs.flow_api()
    assert on.enabled is True


async def test_vswitchd_pidfile_resolves_to_the_pid_socket(tmp_path: Path) -> None:
    pidfile = tmp_path / "ovs-vswitchd.pid"
    pidfile.write_text("4242\n")
    assert Vswitchd(str(pidfile)).socket_path() == str(tmp_path / "ovs-vswitchd.4242.ctl")
    with pytest.raises(Unavailable, match="cannot read ovs-vswitchd's pid"):
        Vswitchd(str(tmp_path / "none.pid")).socket_path()


async def test_ovsdb_replica_reads_writes_and_sees_outside_changes(
    ovs_sandbox: OvsSandbox,
) -> None:
    db = Ovsdb(ovs_sandbox.db_remote)
    seen: list[OvsConfig | None] = []
    db.on_change(seen.append)
    db.start()
    try:
        cfg = await db.read()
        assert cfg.hw_offload is False and "netdev" in cfg.datapath_types
        n = await db.update_other_config({"hw-offload": "true", "max-idle": "15000"})
        assert await db.wait_applied(n, 5)
        assert ovs_sandbox.vsctl("get", "Open_vSwitch", ".", "other_config:hw-offload") == (
            '"true"'
        )
        assert (await db.read()).max_idle_ms == 15000
        await asyncio.to_thread(ovs_sandbox.set_other_config, "tc-policy", "skip_sw")
        async with asyncio.timeout(5):
            while not (seen and seen[-1] is not None and seen[-1].tc_policy == "skip_sw"):
                await asyncio.sleep(0.02)
    finally:
        await db.close()


async def test_ovsdb_down_is_unavailable_naming_the_socket_then_recovers(
    ovs_sandbox: OvsSandbox,
) -> None:
    db = Ovsdb(ovs_sandbox.db_remote, timeout=1.0)
    db.start()
    try:
        await db.read()
        ovs_sandbox.kill_ovsdb()
        with pytest.raises(Unavailable, match=f"OVSDB at unix:{ovs_sandbox.db_sock}") as info:
            async with asyncio.timeout(10):
                while True:  # the replica notices the drop within a poll
                    await db.read()
                    await asyncio.sleep(0.05)
        assert "is ovsdb-server running?" in str(info.value)
        ovs_sandbox.start_ovsdb()
        async with asyncio.timeout(15):
            while True:
                try:
                    cfg = await db.read()
                    break
                except Unavailable:
                    await asyncio.sleep(0.1)
        assert cfg.datapath_types
    finally:
        await db.close()


async def test_ovsdb_never_reachable(tmp_path: Path) -> None:
    db = Ovsdb(f"unix:{tmp_path}/db.sock", timeout=0.5)
    db.start()
    try:
        with pytest.raises(Unavailable, match="the socket file does not exist"):
            await db.read()
    finally:
        await db.close()
