"""Netlink link event to NATS subscriber latency, through a real ``sriov-hostd run``.

A simulated guide host gets real veth netdevs in a namespace; the real daemon watches them.
The bench drops and raises VF carriers (through the veth peers, over netlink) and times
each change from just before the netlink request to the moment a core NATS subscriber
receives hostd's LinkChanged event (target p99 < 20 ms). It also reports the daemon's
resident memory (target < 80 MB) after the run. Prints figures.

    ./stack bench hostd_link_latency [--events=N] [--interval-ms=N] [--pfs=N --vfs=N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import parser, stop_process
from sriov.common import schemas as m
from sriov.common.bus import Bus
from sriov.devtools.embedded import NatsServer
from sriov.hostd.nsock import async_iproute
from sriov.hostd.simulator import netdevs
from sriov.hostd.simulator.spec import bench, guide, host_conf_text
from sriov.hostd.simulator.tree import write_tree


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


async def run(args: argparse.Namespace, base: Path) -> None:
    ns = f"sriovb-{uuid.uuid4().hex[:6]}"
    spec = bench(args.pfs, args.vfs) if args.pfs else guide()
    state = write_tree(spec, base / "sys", ns)
    t0 = time.perf_counter()
    netdevs.create(state.netdevs, ns)
    print(
        f"host: {len(state.pfs)} PFs, {sum(d.role == 'vf' for d in state.netdevs)} VF "
        f"netdevs as veths in {ns} ({time.perf_counter() - t0:.1f}s to create)"
    )
    conf = base / "host.conf"
    conf.write_text(
        host_conf_text(
            spec, {"sysfs_root": str(base / "sys"), "netns": ns, "cmdline_file": "/proc/cmdline"}
        )
    )
    server = NatsServer(store_dir=base / "nats").start()
    hostd: asyncio.subprocess.Process | None = None
    try:
        bus = await Bus.connect(server.url, name="bench")
        await bus.ensure_streams()
        arrived: dict[str, float] = {}
        got = asyncio.Event()
        ready = asyncio.Event()

        async def on_msg(msg: Any) -> None:
            ev = m.HOST_EVENTS.decode(msg.data)
            if isinstance(ev, m.LinkChanged):
                arrived[f"{ev.ifname}/{ev.state}"] = time.perf_counter()
                got.set()
            elif isinstance(ev, m.Diagnostics):
                ready.set()

        subscribed = asyncio.Event()

        async def tail() -> None:
            async with bus.subscribe(f"sriov.v1.host.{spec.host_id}.>") as messages:
                subscribed.set()
                async for msg in messages:
                    await on_msg(msg)

        tailer = asyncio.create_task(tail())
        await subscribed.wait()
        hostd = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "sriov-hostd"),
            "run",
            "--config",
            str(conf),
            "--nats-url",
            server.url,
            stderr=asyncio.subprocess.DEVNULL,
        )
        t0 = time.perf_counter()
        await asyncio.wait_for(ready.wait(), 120)
        print(f"hostd up and first snapshot published in {time.perf_counter() - t0:.2f}s")
        rss0, _ = rss_mb(hostd.pid)
        vfs = [d.ifname for d in state.netdevs if d.role == "vf"][: args.links]
        ipr: Any = async_iproute(ns)
        peers = {}
        for name in vfs:
            peers[name] = (await ipr.link_lookup(ifname=netdevs.peer_name(name)))[0]
        lat: list[float] = []
        missing = 0
        up = dict.fromkeys(vfs, True)
        for i in range(args.events):
            name = vfs[i % len(vfs)]
            up[name] = not up[name]
            key = f"{name}/{'up' if up[name] else 'down'}"
            arrived.pop(key, None)
            got.clear()
            start = time.perf_counter()
            await ipr.link("set", index=peers[name], state="up" if up[name] else "down")
            try:
                async with asyncio.timeout(2):
                    while key not in arrived:
                        got.clear()
                        await got.wait()
                lat.append((arrived[key] - start) * 1000)
            except TimeoutError:
                missing += 1
            await asyncio.sleep(args.interval_ms / 1000)
        ipr.close()
        rss1, hwm = rss_mb(hostd.pid)
        lat.sort()

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(len(lat) * q))]

        print(f"link events: {len(lat)} measured, {missing} missing, over {len(vfs)} VF links")
        print(
            f"netlink -> NATS subscriber: p50 {pct(0.5):.2f} ms, p90 {pct(0.9):.2f} ms, "
            f"p99 {pct(0.99):.2f} ms, max {lat[-1]:.2f} ms, mean {statistics.mean(lat):.2f} ms"
            "  (target p99 < 20 ms)"
        )
        print(
            f"hostd resident memory: {rss0:.1f} MB after start, {rss1:.1f} MB after the run, "
            f"peak {hwm:.1f} MB  (target < 80 MB)"
        )
        tailer.cancel()
        await bus.close()
    finally:
        await stop_process(hostd)
        server.stop()
        netdevs.remove_netns(ns)


def main(argv: list[str]) -> None:
    p = parser(__name__, __doc__)
    p.add_argument("--events", type=int, default=400)
    p.add_argument("--interval-ms", type=float, default=40)
    p.add_argument("--links", type=int, default=15, help="VF links to rotate over")
    p.add_argument("--pfs", type=int, default=0, help="use N ConnectX-6 Dx PFs (0: guide host)")
    p.add_argument("--vfs", type=int, default=128)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hostd-bench-") as tmp:
        asyncio.run(run(args, Path(tmp)))
