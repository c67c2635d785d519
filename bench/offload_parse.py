"""Parse (and audit) a 100,000-flow ``dpctl/dump-flows -m`` dump; target: parse < 1 s.

The dump mixes every format the parser knows (userspace lines captured from a live
datapath, tc/kernel/DPDK lines in the documented formats), with distinct ufids and 64-bit
counters. Usage: ``./stack bench offload_parse [--flows=N] [--rounds=R]``.
"""

from __future__ import annotations

import os
import random
import statistics
import time
import uuid
from pathlib import Path

from bench import parser
from sriov.offload.audit import DatapathDump, build_audit
from sriov.offload.flows import parse_dump

FIXTURES = Path(__file__).resolve().parents[1] / "services" / "offload" / "tests" / "fixtures"
SOURCES = ("netdev-m.txt", "netdev-hw-offload-on-m.txt", "tc-m.txt", "kernel-m.txt",
           "dpdk-pmd-m.txt")  # fmt: skip


def templates() -> list[str]:
    lines = []
    for name in SOURCES:
        for line in (FIXTURES / name).read_text().splitlines():
            if line.startswith("ufid:"):
                lines.append(line.split(", ", 1)[1])
    return lines


def make_dump(n: int, seed: int = 7) -> str:
    rnd = random.Random(seed)
    tpl = templates()
    out = ["flow-dump from the main thread:"]
    for i in range(n):
        body = tpl[i % len(tpl)]
        head, _, rest = body.partition(", packets:")
        _old, _, tail = rest.partition(", used:")
        packets = rnd.randrange(0, 1 << 40)
        nbytes = packets * rnd.randrange(64, 1500)
        ufid = uuid.UUID(int=rnd.getrandbits(128), version=4)
        out.append(f"ufid:{ufid}, {head}, packets:{packets}, bytes:{nbytes}, used:{tail}")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> None:
    p = parser(__name__, __doc__)
    p.add_argument("--flows", type=int, default=100_000, help="flows in the dump")
    p.add_argument("--rounds", type=int, default=5, help="parses timed")
    args = p.parse_args(argv)
    n, rounds = args.flows, args.rounds
    text = make_dump(n)
    print(f"dump: {n} flows, {len(text) / 1e6:.1f} MB, {len(templates())} line shapes")
    parse_s, parse_cpu, audit_s = [], [], []
    for _ in range(rounds):
        c0 = time.process_time()
        t0 = time.perf_counter()
        dump = parse_dump(text, datapath="system@ovs-system")
        t1 = time.perf_counter()
        parse_cpu.append(time.process_time() - c0)
        build_audit("bench", True, [DatapathDump("system@ovs-system", dump)], top=10)
        t2 = time.perf_counter()
        assert len(dump.flows) == n and not dump.errors
        parse_s.append(t1 - t0)
        audit_s.append(t2 - t1)
    med = statistics.median(parse_s)
    print(
        f"parse: median {med * 1000:.0f} ms, best {min(parse_s) * 1000:.0f} ms, "
        f"worst {max(parse_s) * 1000:.0f} ms over {rounds} rounds "
        f"({n / med / 1e6:.2f} M flows/s, {len(text) / med / 1e6:.0f} MB/s)"
    )
    print(
        f"parse CPU time: median {statistics.median(parse_cpu) * 1000:.0f} ms "
        f"(wall time above includes waiting for a busy CPU; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    print(f"count into an audit: median {statistics.median(audit_s) * 1000:.0f} ms")
    print(f"target parse < 1000 ms: {'met' if med < 1 else 'MISSED'}")
