"""What happens to hosts beside placements, on the soak's seeded schedule: PF carrier flaps,
VF count changes (``set-numvfs``), host.conf reloads (SIGHUP) and drift (a held VF's VLAN
changed at the simulated PF, behind hostd's back).

VF counts change only on ``eth2`` (the I350 PF; the soak's long-held guests hold ConnectX-5
VFs on ``eth1``), never forced, and :meth:`HostChurn.settle` puts every count and carrier
back, so the checker can expect the guide's 15 VFs per host once faults stop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil
from fleet import Fleet

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import Bus
from sriov.common.errors import SriovError

CHURN_PF, CHURN_PF_VFS = "eth2", 7
ACTIONS = ("link-flap", "numvfs", "reload", "drift")


@dataclass
class HostChurn:
    fleet: Fleet
    bus: Bus
    rng: random.Random
    note: Callable[[str], None]
    drift_targets: list[tuple[int, str]] = field(default_factory=list)
    """(host index, VF PCI address) of VFs long-held guests hold: drift goes there."""
    done: collections.Counter[str] = field(default_factory=collections.Counter)
    _changed: set[int] = field(default_factory=set)
    """Hosts whose churn PF has a VF count other than host.conf's."""

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(2.0, 6.0))
            if stop.is_set():
                return
            action = self.rng.choice(ACTIONS)
            host = self.rng.randrange(len(self.fleet.sim_hosts))
            try:
                await getattr(self, "_" + action.replace("-", "_"))(host)
            except (SriovError, OSError) as exc:  # hostd down or busy: the next one may work
                self.done[f"{action} refused"] += 1
                self.note(f"churn {action} host{host + 1}: {type(exc).__name__}: {exc}")

    async def _link_flap(self, host: int) -> None:
        ifname = self.rng.choice(("eth1", "eth2"))
        await asyncio.to_thread(self.fleet.set_link, ifname, False, host)
        try:
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))
        finally:
            await asyncio.to_thread(self.fleet.set_link, ifname, True, host)
        self.done["link-flap"] += 1

    async def _numvfs(self, host: int) -> None:
        num = self.rng.randint(1, CHURN_PF_VFS - 1)
        self._changed.add(host)
        ack = await self._set_numvfs(host, num)
        self.done["numvfs"] += 1
        self.note(f"churn numvfs host{host + 1}: {ack.message}")

    async def _reload(self, host: int) -> None:
        pid = self.fleet.proc(f"hostd-{host + 1}").popen.pid
        # hostd keeps a SIGHUP from its first Python line on (a reload while it starts is
        # done once it runs); before that line the interpreter's default ends the process,
        # as for any program, so a process younger than a second is left alone
        try:
            young = time.time() - psutil.Process(pid).create_time() < 1.0
        except psutil.NoSuchProcess:  # being restarted by the nemesis
            young = True
        if young:
            self.done["reload skipped: just exec'd"] += 1
            return
        os.kill(pid, signal.SIGHUP)
        self.done["reload"] += 1

    async def _drift(self, _host: int) -> None:
        if not self.drift_targets:
            return
        host, pci = self.rng.choice(self.drift_targets)
        vlan = self.rng.randint(2, 4000)
        cmd = await asyncio.to_thread(self.fleet.sim_hosts[host].ip_link_set_vf, pci, vlan=vlan)
        self.done["drift"] += 1
        self.note(f"churn drift host{host + 1}: {cmd}")

    async def _set_numvfs(self, host: int, num: int) -> m.CommandAck:
        group = subjects.hostcmd_group(self.fleet.sim_hosts[host].host_id)
        req = m.SetNumVfsRequest(pf=CHURN_PF, num_vfs=num)
        return await self.bus.request(
            subjects.endpoint(group, "set-numvfs"), req, m.CommandAck, timeout=15
        )

    async def settle(self, timeout: float = 300) -> None:
        """Every churn PF back at host.conf's VF count and every carrier up (the workload has
        stopped, so a refusal because a guest holds a VF ends when its release lands)."""
        deadline = time.monotonic() + timeout
        for host in range(len(self.fleet.sim_hosts)):
            for ifname in ("eth1", "eth2"):
                await asyncio.to_thread(self.fleet.set_link, ifname, True, host)
        for host in sorted(self._changed):
            while True:
                try:
                    await self._set_numvfs(host, CHURN_PF_VFS)
                    break
                except SriovError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(1.0)
        self._changed.clear()
