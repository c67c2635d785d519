"""ovs-vswitchd through its unixctl control socket: datapaths, flow dumps, flow-API state.

The socket may be named directly (``--unixctl=PATH``) or through the daemon's pidfile
(``/var/run/openvswitch/ovs-vswitchd.pid``): the default socket is
``ovs-vswitchd.<pid>.ctl`` beside it, so the path changes on every restart and is
re-resolved on each call.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

from sriov.common.errors import Unavailable
from sriov.offload import unixctl
from sriov.offload.unixctl import UnixctlError

WHO = "ovs-vswitchd"
Incarnation = tuple[str, int, int]


@dataclass(frozen=True)
class FlowApiState:
    """Whether the running daemon has its hardware-offload flow API on, per datapath."""

    enabled: bool | None
    """True/False when a datapath could say; None when none could (kernel datapath)."""
    evidence: str


class Vswitchd:
    def __init__(self, ctl: str, *, timeout: float = 2.0, dump_timeout: float = 60.0) -> None:
        self.ctl = ctl
        self.timeout = timeout
        self.dump_timeout = dump_timeout

    def socket_path(self) -> str:
        """The control socket to use now (resolving a pidfile to ``ovs-vswitchd.<pid>.ctl``)."""
        if not self.ctl.endswith(".pid"):
            return self.ctl
        pidfile = Path(self.ctl)
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            raise Unavailable(
                f"cannot read {WHO}'s pid from {pidfile}: {exc} (is ovs-vswitchd running?)",
                socket=str(pidfile),
            ) from exc
        return str(pidfile.with_name(f"ovs-vswitchd.{pid}.ctl"))

    def incarnation(self) -> Incarnation | None:
        """Identity of the running daemon: a restart creates its socket anew (the inode
        number alone may be reused at once, so the creation time is part of it)."""
        try:
            path = self.socket_path()
            st = os.stat(path)
        except (OSError, Unavailable):
            return None
        return path, st.st_ino, st.st_ctime_ns

    async def call(self, command: str, *args: str, timeout: float | None = None) -> str:
        return await unixctl.call(
            self.socket_path(), command, *args, timeout=timeout or self.timeout, what=WHO
        )

    async def version(self) -> str:
        return (await self.call("version")).strip()

    async def datapaths(self) -> list[str]:
        """``type@name`` of every datapath (``netdev@ovs-netdev``, ``system@ovs-system``)."""
        try:
            text = await self.call("dpctl/dump-dps")
        except UnixctlError:
            return []  # no datapath at all (no bridge yet): nothing to dump
        return [line.strip() for line in text.splitlines() if "@" in line]

    async def dump_flows(self, datapath: str, *, verbose: bool = True) -> str:
        args = ["-m", datapath] if verbose else [datapath]
        return await self.call("dpctl/dump-flows", *args, timeout=self.dump_timeout)

    async def flow_api(self, datapaths: list[str] | None = None) -> FlowApiState:
        """Ask each datapath for offload statistics: the userspace datapath refuses with
        EINVAL while the flow API is off; the kernel one cannot tell (EOPNOTSUPP)."""
        dps = datapaths if datapaths is not None else await self.datapaths()
        seen: list[str] = []
        for dp in dps:
            try:
                await self.call("dpctl/offload-stats-show", dp)
            except UnixctlError as exc:
                if "Invalid argument" in exc.message:
                    return FlowApiState(False, f"{dp}: offload statistics refused: flow API off")
                seen.append(f"{dp}: {exc.message}")
                continue
            return FlowApiState(True, f"{dp}: offload statistics available: flow API on")
        why = "; ".join(seen) if seen else "no datapath exists yet"
        return FlowApiState(None, f"cannot tell whether the flow API is on ({why})")

    async def wait_restarted(self, before: Incarnation | None, timeout: float) -> Incarnation:
        """Wait until a new daemon (another socket inode) answers ``version``."""
        deadline = time.monotonic() + timeout
        last = "it never came back"
        while time.monotonic() < deadline:
            now = self.incarnation()
            if now is not None and now != before:
                try:
                    await self.version()
                    return now
                except Unavailable as exc:
                    last = exc.message
            await asyncio.sleep(0.1)
        raise Unavailable(
            f"{WHO} did not come back on {self.ctl} within {timeout}s after the restart: {last}",
            socket=self.ctl,
        )
