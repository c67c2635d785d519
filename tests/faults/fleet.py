"""The whole system as real processes, with handles to hurt it: kill, pause, restart.

One simulated guide host (sysfs tree + veth netdevs in a namespace of our own) runs hostd
and offload (with a userspace Open vSwitch); inventory and scheduler run as replicas; NATS is
whatever URLs the caller gives (a 3-node cluster for the fault tests) and PostgreSQL is a
restartable :class:`PostgresServer`. Every process is its own session so it can be killed
alone; :meth:`Fleet.close` leaves nothing behind, also when a test failed half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sriov.common.bus import Bus
from sriov.devtools.embedded import PostgresServer

GUIDE_HOST = "c48b1b8b-28a3-453a-863f-ddf7c62bcfe2"
GUIDE_VFS = 15  # the guide's host.conf enables SR-IOV on eth1 (8 ConnectX-5 VFs) and eth2 (7 I350)


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@dataclass
class Fleet:
    base: Path
    nats_urls: list[str]
    pg: PostgresServer
    stream_replicas: int = 1
    netns: str = field(default_factory=lambda: f"sriovf-{uuid.uuid4().hex[:8]}")
    host_id: str = GUIDE_HOST
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    argv: dict[str, list[str]] = field(default_factory=dict)
    ovs: object | None = None

    @property
    def nats_url(self) -> str:
        return ",".join(self.nats_urls)

    @property
    def sys_root(self) -> Path:
        return self.base / "host" / "sys"

    @property
    def conf(self) -> Path:
        return self.base / "host" / "host.conf"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SRIOV_NATS_URL": self.nats_url,
            "SRIOV_DATABASE_URL": self.pg.dsn,
            "SRIOV_STREAM_REPLICAS": str(self.stream_replicas),
            "SRIOV_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }

    # --- processes --------------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str]) -> None:
        self.argv[name] = argv
        log = self.base / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self.procs[name] = subprocess.Popen(
                [_bin(argv[0]), *argv[1:]], env=self.env(), stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def restart(self, name: str) -> None:
        self.spawn(name, self.argv[name])

    def pause(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGCONT)

    def dead(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is not None]

    def obituaries(self) -> list[str]:
        """Each dead process with its exit code and the end of its log."""
        out = []
        for name in self.dead():
            tail = self.log(name).strip().splitlines()[-6:]
            out.append(f"{name} (exit {self.procs[name].returncode}): " + " | ".join(tail))
        return out

    def tails(self, lines: int = 4) -> str:
        """The end of every process's log (for a failure message)."""
        return "\n".join(
            f"--- {name}: " + " | ".join(self.log(name).strip().splitlines()[-lines:])
            for name in self.procs
        )

    def revive(self) -> list[str]:
        """Restart whatever died (so one failed test does not break the next ones)."""
        names = self.dead()
        for name in names:
            self.restart(name)
        return names

    def log(self, name: str) -> str:
        return (self.base / "logs" / f"{name}.log").read_text(errors="replace")

    # --- bring-up ---------------------------------------------------------------------------
    def start(self, replicas: int = 2, inventory_args: tuple[str, ...] = ()) -> None:
        asyncio.run(self._provision())
        for i in range(1, replicas + 1):
            self.spawn(
                f"inventory-{i}",
                ["sriov-inventory", "--instance-id", f"inv-{i}", *inventory_args],
            )
            self.spawn(f"scheduler-{i}", ["sriov-scheduler", "--instance-id", f"sch-{i}"])
        self._simulate("--spec", "guide", "--write-config", str(self.conf))
        cmdline = self.base / "host" / "cmdline"
        cmdline.write_text("BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on iommu=pt\n")
        self.spawn(
            "hostd",
            ["sriov-hostd", "run", "--config", str(self.conf), "--sysfs-root",
             str(self.sys_root), "--netns", self.netns, "--cmdline-file", str(cmdline)],
        )  # fmt: skip
        if shutil.which("ovsdb-server") and shutil.which("ovs-vswitchd"):
            from sriov.offload.testing.sandbox import OvsSandbox

            ovs_dir = self.base / "host" / "ovs"
            sandbox = OvsSandbox(ovs_dir).start()
            self.ovs = sandbox
            self.spawn(
                "offload",
                ["sriov-offload", "--host-id", self.host_id, "--ovsdb", sandbox.db_remote,
                 "--vswitchd-ctl", sandbox.ctl_sock, "--config", str(self.conf),
                 "--sysfs-root", str(self.sys_root), "--audit-interval", "5"],
            )  # fmt: skip

    async def _provision(self) -> None:
        """Create the streams with the wanted replicas before any service does."""
        bus = await Bus.connect(self.nats_urls, name="fleet-provision")
        try:
            await bus.ensure_streams(replicas=self.stream_replicas)
        finally:
            await bus.close()

    def _simulate(self, *args: str, check: bool = True) -> None:
        res = subprocess.run(
            [_bin("sriov-hostd"), "simulate", "--root", str(self.sys_root), "--netns",
             self.netns, *args],
            env=self.env(), capture_output=True, text=True,
        )  # fmt: skip
        if check and res.returncode != 0:
            raise RuntimeError(f"sriov-hostd simulate {args} failed: {res.stderr[-800:]}")

    def set_link(self, ifname: str, up: bool) -> None:
        """Raise or drop a simulated netdev's carrier (a real netlink event)."""
        self._simulate("--link", f"{ifname}={'up' if up else 'down'}")

    def close(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGCONT)
                    os.killpg(proc.pid, signal.SIGTERM)
        for name in list(self.procs):
            if self.procs[name].poll() is None:
                self.kill(name, signal.SIGTERM)
        if self.ovs is not None:
            with contextlib.suppress(Exception):
                self.ovs.stop()  # type: ignore[attr-defined]
        self._simulate("--remove", check=False)


@contextlib.contextmanager
def running_fleet(
    base: Path,
    nats_urls: list[str],
    pg: PostgresServer,
    stream_replicas: int = 1,
    replicas: int = 2,
    inventory_args: tuple[str, ...] = (),
) -> Iterator[Fleet]:
    fleet = Fleet(base, nats_urls, pg, stream_replicas)
    try:
        fleet.start(replicas, inventory_args)
        yield fleet
    finally:
        fleet.close()
