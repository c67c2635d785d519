"""VF lifecycle on the host, through a real ``sriov-hostd run`` on a simulated guide host.

The bench publishes desired VF states on NATS as the scheduler does and times, on a core NATS
subscriber of hostd's ``vf.applied``: desired ``assigned`` -> ``ready`` and ``clean`` ->
``clean`` (hostd's share of place -> ready and release -> offered again), then drift -> repaired:
a VF changed behind hostd's back through the simulated PF driver, as ``ip link set eth1 vf 3
vlan 7`` makes it (target p99 < 1 s). Prints figures.

    ./stack bench hostd_drift [--injections=N] [--cycles=N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import parser, stop_process
from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import Bus
from sriov.devtools.embedded import NatsServer
from sriov.hostd.simulator import netdevs, vftable
from sriov.hostd.simulator.spec import guide, host_conf_text
from sriov.hostd.simulator.tree import write_tree

GUEST = m.VfConfig(mac="fa:16:3e:00:00:01", vlan=100, max_tx_rate=1000)
#: Drifts injected in turn: (what ``ip link set eth1 vf 3 ...`` changes, the setting reported).
DRIFTS: list[dict[str, Any]] = [{"vlan": 7}, {"trust": True}, {"spoofchk": False},
                                {"max_tx_rate": 10}, {"mac": "fa:16:3e:00:00:99"}]  # fmt: skip
VF3 = "0000:0a:00.5"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def line(name: str, values: list[float], target: str = "") -> str:
    return (
        f"{name}: n={len(values)} p50 {pct(values, 0.5):.1f} ms, p99 {pct(values, 0.99):.1f} ms, "
        f"max {max(values):.1f} ms{f'  (target {target})' if target else ''}"
    )


class AppliedTail:
    """hostd's ``vf.applied`` outcomes of ``subject`` (core NATS), as they arrive."""

    def __init__(self, bus: Bus, subject: str) -> None:
        self.bus = bus
        self.subject = subject
        self.applied: list[m.VfApplied] = []
        self._got = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AppliedTail:
        self._task = asyncio.create_task(self._tail())
        await self._ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _tail(self) -> None:
        async with self.bus.subscribe(self.subject) as messages:
            await self.bus.flush()
            self._ready.set()
            async for msg in messages:
                ev = m.HOST_EVENTS.decode(msg.data)
                if isinstance(ev, m.VfApplied):
                    self.applied.append(ev)
                    self._got.set()

    async def until(self, pred: Callable[[m.VfApplied], bool], timeout: float = 10) -> float:
        """perf_counter() when an outcome matching ``pred`` has arrived."""
        async with asyncio.timeout(timeout):
            while True:
                if any(pred(ev) for ev in self.applied):
                    return time.perf_counter()
                self._got.clear()
                await self._got.wait()


async def time_drifts(
    tail: AppliedTail, root: str, pf: str, vf: int, pci: str, injections: int
) -> tuple[list[float], int]:
    """Change VF ``vf`` of ``pf`` behind hostd's back ``injections`` times, through the
    simulated PF driver as ``ip link set <pf> vf N ...`` does; (ms until each was reported
    ``repaired``, how many were not within 5 s)."""
    drift: list[float] = []
    missing = 0
    for i in range(injections):
        before = sum(1 for e in tail.applied if e.outcome == "repaired" and e.pci_address == pci)

        def repaired(_ev: m.VfApplied, before: int = before) -> bool:
            return (
                sum(1 for e in tail.applied if e.outcome == "repaired" and e.pci_address == pci)
                > before
            )

        start = time.perf_counter()
        vftable.ip_link_set_vf(root, pf, vf, **DRIFTS[i % len(DRIFTS)])
        try:
            drift.append((await tail.until(repaired, 5) - start) * 1000)
        except TimeoutError:
            missing += 1
        await asyncio.sleep(0.05)
    return drift, missing


async def run(args: argparse.Namespace, base: Path) -> None:
    ns = f"sriovb-{uuid.uuid4().hex[:6]}"
    spec = guide()
    host = spec.host_id
    root = str(base / "sys")
    state = write_tree(spec, base / "sys", ns)
    netdevs.create(state.netdevs, ns)
    conf = base / "host.conf"
    conf.write_text(host_conf_text(spec, {"sysfs_root": root, "netns": ns,
                                          "cmdline_file": "/proc/cmdline"}))  # fmt: skip
    server = NatsServer(store_dir=base / "nats").start()
    hostd: asyncio.subprocess.Process | None = None
    try:
        bus = await Bus.connect(server.url, name="bench")
        await bus.ensure_streams()
        async with AppliedTail(bus, f"sriov.v1.host.{host}.>") as tail:
            hostd = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "sriov-hostd"), "run", "--config", str(conf),
                "--nats-url", server.url, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            rev = 0

            async def desire(config: m.VfConfig | None) -> float:
                nonlocal rev
                rev += 1
                d = m.VfDesired(
                    host_id=host, pci_address=VF3, device_id="bench", revision=rev,
                    state="clean" if config is None else "assigned", guest_id="vm",
                    config=config or m.clean_config(),
                )  # fmt: skip
                start = time.perf_counter()
                await bus.js_publish(subjects.desired_vf(host, VF3), d)
                want = rev
                end = await tail.until(lambda e: e.revision == want and e.outcome != "repaired", 60)
                return (end - start) * 1000

            await desire(None)  # the first one waits for hostd to start
            prepare, clean = [], []
            for _ in range(args.cycles):
                prepare.append(await desire(GUEST))
                clean.append(await desire(None))
            await desire(GUEST)
            drift, missing = await time_drifts(tail, root, "eth1", 3, VF3, args.injections)
        print(line("desired assigned -> ready (vfio-pci, MAC, VLAN, rate)", prepare))
        print(line("desired clean -> clean (restore, read back)", clean))
        print(line("drift -> repaired", drift, "p99 < 1000 ms") + f", {missing} not repaired")
        await bus.close()
    finally:
        await stop_process(hostd)
        server.stop()
        netdevs.remove_netns(ns)


def main(argv: list[str]) -> None:
    p = parser(__name__, __doc__)
    p.add_argument("--injections", type=int, default=50, help="drifts injected")
    p.add_argument("--cycles", type=int, default=20, help="assign/clean cycles timed")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hostd-drift-") as tmp:
        asyncio.run(run(args, Path(tmp)))
