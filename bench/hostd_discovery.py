"""Full sysfs discovery of a simulated host: 4 PFs x 128 VFs by default (target < 100 ms).

Writes the tree with the simulator, then times ``discover()`` (every PF and VF: ids, model
from pci.ids, driver, NUMA, IOMMU group, netdev, MAC, link state), once cold (pci.ids read
and parsed inside the timing) and repeatedly warm (as the daemon runs). Prints figures.

    ./stack bench hostd_discovery [--pfs=N] [--vfs=N] [--runs=N]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import yaml

from bench import parser
from sriov.hostd.discovery import discover
from sriov.hostd.hostconf import parse_host_conf
from sriov.hostd.pciids import PciIds
from sriov.hostd.simulator.spec import bench, host_conf_text
from sriov.hostd.simulator.tree import write_tree
from sriov.hostd.sysfs import Sysfs


def main(argv: list[str]) -> None:
    p = parser(__name__, __doc__)
    p.add_argument("--pfs", type=int, default=4)
    p.add_argument("--vfs", type=int, default=128)
    p.add_argument("--runs", type=int, default=50)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hostd-bench-") as tmp:
        root = Path(tmp) / "sys"
        spec = bench(args.pfs, args.vfs)
        t0 = time.perf_counter()
        write_tree(spec, root)
        print(f"simulated {args.pfs} PFs x {args.vfs} VFs in {time.perf_counter() - t0:.2f}s")
        conf = parse_host_conf(yaml.safe_load(host_conf_text(spec)), "bench")
        sysfs = Sysfs(root)
        t0 = time.perf_counter()
        ids = PciIds()
        found = discover(conf, sysfs, ids)
        cold = (time.perf_counter() - t0) * 1000
        assert len(found.vfs) == args.pfs * args.vfs and not found.errors, found.errors[:3]
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            found = discover(conf, sysfs, ids)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
        print(f"discovery cold (incl. pci.ids load): {cold:.1f} ms")
        print(
            f"discovery warm over {args.runs} runs: min {times[0]:.1f} ms, "
            f"median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms, max {times[-1]:.1f} ms"
        )
        print(f"  {len(found.pfs)} PFs, {len(found.vfs)} VFs; target: < 100 ms")
