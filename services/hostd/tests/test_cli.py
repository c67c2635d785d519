"""The commands as an operator runs them: sriov-hostd simulate/run/doctor, sriovctl host-*."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from sriov.common import schemas as m
from sriov.common.bus import Bus
from sriov.hostd.hostconf import load_host_conf
from sriov.hostd.simulator.spec import GUIDE_HOST_ID

from .conftest import EventTap
from .test_simulator import GUIDE_CX5_VFS, GUIDE_I350_VFS

pytestmark = pytest.mark.netns
BIN = Path(sys.executable).parent


async def run(*argv: str, check: bool = True) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    rc = proc.returncode or 0
    if check and rc != 0:
        raise AssertionError(f"{argv} exited {rc}: {err.decode()}")
    return rc, out.decode(), err.decode()


async def simulate(tmp_path: Path, netns: str) -> Path:
    conf = tmp_path / "host1" / "host.conf"
    _, out, _ = await run(
        str(BIN / "sriov-hostd"), "simulate", "--spec", "guide", "--root",
        str(tmp_path / "host1" / "sys"), "--netns", netns, "--write-config", str(conf),
    )  # fmt: skip
    assert out.splitlines() == [
        f"wrote {tmp_path / 'host1' / 'sys'}: 4 PFs, 15 VF netdevs",
        f"created 19 veth netdevs in namespace {netns}",
        f"wrote {conf}",
    ]
    return conf


async def test_simulate_doctor_remove(tmp_path: Path, netns: str) -> None:
    conf_path = await simulate(tmp_path, netns)
    conf = load_host_conf(conf_path)
    assert (conf.host_id, conf.netns, conf.sriov_nics) == (GUIDE_HOST_ID, netns, ["eth1", "eth2"])
    rc, out, _ = await run(str(BIN / "sriov-hostd"), "doctor", "--config", str(conf_path),
                           "--json")  # fmt: skip
    findings = msgspec.json.decode(out, type=list[m.Finding])
    assert rc == 0 and [f for f in findings if f.severity in ("error", "warning")] == []
    off = tmp_path / "cmdline-off"
    off.write_text("ro intel_iommu=off\n")
    rc, out, _ = await run(str(BIN / "sriov-hostd"), "doctor", "--config", str(conf_path),
                           "--cmdline-file", str(off), check=False)  # fmt: skip
    assert rc == 1 and "ERROR     iommu.cmdline" in out
    # a broken host.conf: one clear line naming file, line and key; exit 2
    conf_path.write_text(conf_path.read_text() + "num_vfs: {eth1: -1}\n")
    rc, _, err = await run(str(BIN / "sriov-hostd"), "doctor", "--config", str(conf_path),
                           check=False)  # fmt: skip
    assert rc == 2
    assert err.strip().startswith(f"sriov-hostd: error: {conf_path}:")
    assert err.strip().endswith("num_vfs.eth1: VF count must be 0 or more, got -1")
    _, out, _ = await run(str(BIN / "sriov-hostd"), "simulate", "--remove", "--root",
                          str(tmp_path / "host1" / "sys"))  # fmt: skip
    assert out.strip() == f"removed {tmp_path / 'host1' / 'sys'} and namespace {netns}"
    assert not (tmp_path / "host1" / "sys").exists()
    _, out, _ = await run("ip", "netns", "list")
    assert netns not in out


def fast(conf_path: Path) -> None:
    data = yaml.safe_load(conf_path.read_text())
    data["heartbeat_interval_s"] = 0.5
    conf_path.write_text(yaml.safe_dump(data))


async def start_hostd(
    conf: Path, nats_url: str, stderr: Any = asyncio.subprocess.DEVNULL
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(BIN / "sriov-hostd"), "run", "--config", str(conf), "--nats-url", nats_url,
        stderr=stderr,
    )  # fmt: skip


def _caught(pid: int) -> int:
    """The process's mask of signals it has handlers for (SigCgt in /proc)."""
    with open(f"/proc/{pid}/status") as f:
        return int(next(ln for ln in f if ln.startswith("SigCgt:")).split()[1], 16)


async def catches(pid: int, sig: int) -> None:
    """Until the process has a handler for ``sig``."""
    while not _caught(pid) & (1 << (sig - 1)):
        await asyncio.sleep(0.005)


async def stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    return await proc.wait()


async def test_daemon_commands_sighup_and_restart(
    tmp_path: Path, netns: str, nats_url: str, bus: Bus, tap: EventTap
) -> None:
    conf = await simulate(tmp_path, netns)
    fast(conf)
    proc = await start_hostd(conf, nats_url)
    try:
        first = await tap.wait(lambda e: isinstance(e, m.HostSnapshot), timeout=60)
        assert [v.pci_address for v in first.vfs] == GUIDE_CX5_VFS + GUIDE_I350_VFS
        beat = await tap.wait(lambda e: isinstance(e, m.Heartbeat))
        assert (beat.snapshot_seq, beat.vf_count, beat.interval_s) == (first.seq, 15, 0.5)

        ctl = [str(BIN / "sriovctl"), "--nats-url", nats_url]
        _, out, _ = await run(*ctl, "host-rescan", "--host", GUIDE_HOST_ID)
        assert out.startswith(f"{GUIDE_HOST_ID}: 2 PFs, 15 VFs, 0 errors (snapshot seq ")
        _, out, _ = await run(*ctl, "host-set-numvfs", "--host", GUIDE_HOST_ID, "--pf", "eth2",
                              "--num", "3")  # fmt: skip
        assert out.strip() == f"{GUIDE_HOST_ID}: eth2: 7 -> 3 VFs"
        _, out, _ = await run(*ctl, "host-doctor", "--host", GUIDE_HOST_ID, "--json")
        diag = json.loads(out)
        assert diag["type"] == "host.diagnostics.v1" and diag["host_id"] == GUIDE_HOST_ID
        rc, out, err = await run(*ctl, "host-set-numvfs", "--host", GUIDE_HOST_ID, "--pf",
                                 "eth2", "--num", "99", check=False)  # fmt: skip
        assert rc == 2 and "99 VFs is not within 0..7 [invalid_request]" in err
        rc, _, err = await run(*ctl, "--timeout", "1", "host-rescan", "--host", "no-such-host",
                               check=False)  # fmt: skip
        assert rc == 1 and "no service answers sriov.v1.hostcmd.no-such-host.rescan" in err

        # SIGHUP reloads host.conf without a restart (the reload re-runs the doctor)
        diags = len(tap.of(m.Diagnostics))
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGHUP)
        await tap.until(lambda: len(tap.of(m.Diagnostics)) > diags)
        await tap.until(lambda: len(tap.view()) == 11)
        before = tap.view()
        generation = first.generation
    finally:
        assert await stop(proc) == 0
    # a restarted hostd: a new generation, and a snapshot equal to what consumers hold; a
    # SIGHUP while it still starts (its imports take a second) is kept, not fatal, and done
    log = tmp_path / "hostd-restarted.log"
    with log.open("wb") as err:
        proc = await start_hostd(conf, nats_url, stderr=err)
    try:
        assert proc.pid is not None
        await asyncio.wait_for(catches(proc.pid, signal.SIGHUP), 10)
        assert "host_id" not in log.read_text()  # caught long before it even connects
        os.kill(proc.pid, signal.SIGHUP)
        again = await tap.wait(
            lambda e: isinstance(e, m.HostSnapshot) and e.generation != generation, timeout=60
        )
        async with asyncio.timeout(30):
            while "host.conf reloaded" not in log.read_text():
                await asyncio.sleep(0.05)
        assert proc.returncode is None
        assert again.generation > generation and again.seq == 1
        assert {v.pci_address: v for v in again.vfs} == before
        assert again.pfs[1].num_vfs == 3
    finally:
        assert await stop(proc) == 0
