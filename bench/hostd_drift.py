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
        applied: list[m.VfApplied] = []
        got = asyncio.Event()
        ready = asyncio.Event()

        async def tail() -> None:
            async with bus.subscribe(f"sriov.v1.host.{host}.>") as messages:
                ready.set()
                async for msg in messages:
                    ev = m.HOST_EVENTS.decode(msg.data)
                    if isinstance(ev, m.VfApplied):
                        applied.append(ev)
                        got.set()

        tailer = asyncio.create_task(tail())
        await ready.wait()
        hostd = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "sriov-hostd"), "run", "--config", str(conf),
            "--nats-url", server.url, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

        async def until(pred: Callable[[m.VfApplied], bool], timeout: float = 10) -> float:
            async with asyncio.timeout(timeout):
                while True:
                    for ev in applied:
                        if pred(ev):
                            return time.perf_counter()
                    got.clear()
                    await got.wait()

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
            end = await until(lambda e: e.revision == want and e.outcome != "repaired", 60)
            return (end - start) * 1000

        await desire(None)  # the first one waits for hostd to start
        prepare, clean = [], []
        for _ in range(args.cycles):
            prepare.append(await desire(GUEST))
            clean.append(await desire(None))
        await desire(GUEST)
        drift: list[float] = []
        missing = 0
        for i in range(args.injections):
            seen = sum(1 for e in applied if e.outcome == "repaired")

            def repaired(_ev: m.VfApplied, before: int = seen) -> bool:
                return sum(1 for e in applied if e.outcome == "repaired") > before

            start = time.perf_counter()
            vftable.ip_link_set_vf(root, "eth1", 3, **DRIFTS[i % len(DRIFTS)])
            try:
                end = await until(repaired, 5)
                drift.append((end - start) * 1000)
            except TimeoutError:
                missing += 1
            await asyncio.sleep(0.05)
        print(line("desired assigned -> ready (vfio-pci, MAC, VLAN, rate)", prepare))
        print(line("desired clean -> clean (restore, read back)", clean))
        print(line("drift -> repaired", drift, "p99 < 1000 ms") + f", {missing} not repaired")
        tailer.cancel()
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
