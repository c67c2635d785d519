"""``sriov-offload audit --dump FILE``: audit a saved ``ovs-appctl dpctl/dump-flows`` output.

What support asks a customer to send is a dump, not access to the host: this runs the same
parser and audit as the agent, without NATS, OVSDB or ovs-vswitchd. A dump taken without
``-m`` does not say where a flow runs (its flows count as ``unknown``, never as "not
offloaded"); ``--type offloaded`` says it was taken with ``type=offloaded``, so every flow it
lists is offloaded.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from sriov.common.errors import ConfigError
from sriov.common.schemas import Audit
from sriov.hostd.doctor import render as render_findings
from sriov.offload.audit import DatapathDump, build_audit, describe_flow
from sriov.offload.flows import parse_dump

PROG = "sriov-offload audit"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].strip("`"))
    p.add_argument("--dump", required=True, help="saved dpctl/dump-flows output ('-': stdin)")
    p.add_argument(
        "--type",
        choices=("all", "offloaded"),
        default="all",
        help="'offloaded' if the dump was taken with type=offloaded (default: all)",
    )
    p.add_argument(
        "--datapath",
        help="the dump's datapath (default: netdev@ovs-netdev if it has PMD headers, "
        "else system@ovs-system)",
    )
    p.add_argument(
        "--hw-offload",
        choices=("on", "off"),
        default="on",
        help="other_config:hw-offload on the host the dump came from (default: on)",
    )
    p.add_argument("--host-id", default="offline", help="host id to print (default: offline)")
    p.add_argument("--top", type=int, default=10, help="software flows to name (default: 10)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    return p


def audit_file(args: argparse.Namespace) -> Audit:
    text = _read(args.dump)
    datapath = args.datapath or (
        "netdev@ovs-netdev" if "flow-dump from " in text else "system@ovs-system"
    )
    dump = parse_dump(text, datapath=datapath, offloaded_only=args.type == "offloaded")
    return build_audit(
        args.host_id, args.hw_offload == "on", [DatapathDump(datapath, dump)], top=args.top
    )


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(errors="replace")
    except OSError as exc:
        raise ConfigError(f"--dump {path}: cannot read it: {exc.strerror or exc}") from exc


def render_audit(a: Audit) -> str:
    unknown = f", {a.unknown} unknown (no -m)" if a.unknown else ""
    lines = [
        f"host {a.host_id}, {', '.join(a.datapaths)}, hw-offload {'on' if a.hw_offload else 'off'}",
        f"flows {a.flows}: {a.offloaded} offloaded, {a.partial} partially, "
        f"{a.not_offloaded} in software{unknown}; offloaded ratio {a.ratio:.0%}",
    ]
    if a.per_port:
        lines.append("per in_port: " + ", ".join(
            f"{p.port} {p.offloaded}/{p.flows}" + (f" ({p.unknown} unknown)" if p.unknown else "")
            for p in a.per_port
        ))  # fmt: skip
    if a.top_not_offloaded:
        lines.append("busiest software flows:")
        lines.extend(f"  {describe_flow(f)}" for f in a.top_not_offloaded)
    if a.findings:
        lines += ["", render_findings(a.findings)]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """Exit 0 when the audit found no error, 1 when it did, 2 on bad input."""
    args = parser().parse_args(argv)
    if args.top < 0:
        raise ConfigError(f"--top {args.top}: use 0 or more")
    audit = audit_file(args)
    if args.output == "json":
        print(msgspec.json.format(msgspec.json.encode(audit), indent=2).decode())
    else:
        print(render_audit(audit))
    return 1 if any(f.severity == "error" for f in audit.findings) else 0
