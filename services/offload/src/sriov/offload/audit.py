"""Turn parsed datapath flows into an :class:`~sriov.common.schemas.Audit`: how many flows
(and bytes) are offloaded, partially offloaded or in software, per port and per PF, which
software flows carry the most traffic, and what that means.

The headline finding is the guide's own test: with hw-offload on and traffic flowing,
``ovs-appctl dpctl/dump-flows type=offloaded`` prints nothing -- "if hardware offload does
not take effect, output will be empty".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sriov.common.schemas import Audit, Finding, FlowSummary, PortCounters
from sriov.offload.flows import NOT_OFFLOADED, OFFLOADED, PARTIAL, UNKNOWN, Dump, Flow

MAX_TOP = 1000
NO_PORT = "(no in_port)"


@dataclass
class DatapathDump:
    datapath: str
    dump: Dump


class _Counters:
    __slots__ = ("bytes", "flows", "not_offloaded", "off_bytes", "offloaded", "packets",
                 "part_bytes", "partial", "unknown")  # fmt: skip

    def __init__(self) -> None:
        self.flows = self.offloaded = self.partial = self.not_offloaded = self.unknown = 0
        self.bytes = self.off_bytes = self.part_bytes = self.packets = 0

    def add(self, f: Flow) -> None:
        self.flows += 1
        self.bytes += f.bytes
        self.packets += f.packets
        if f.offloaded == OFFLOADED:
            self.offloaded += 1
            self.off_bytes += f.bytes
        elif f.offloaded == PARTIAL:
            self.partial += 1
            self.part_bytes += f.bytes
        elif f.offloaded == UNKNOWN:
            self.unknown += 1
        else:
            self.not_offloaded += 1

    def model(self, port: str, pf: str | None) -> PortCounters:
        return PortCounters(
            port=port, pf=pf, flows=self.flows, offloaded=self.offloaded, partial=self.partial,
            not_offloaded=self.not_offloaded, bytes=self.bytes, offloaded_bytes=self.off_bytes,
            partial_bytes=self.part_bytes, packets=self.packets, unknown=self.unknown,
        )  # fmt: skip


def build_audit(
    host_id: str,
    hw_offload: bool,
    dumps: Sequence[DatapathDump],
    *,
    port_pf: Mapping[str, str] | None = None,
    top: int = 10,
) -> Audit:
    """Count ``dumps`` into an audit; ``port_pf`` maps a port (PF, representor, bond) to the
    offload PF it belongs to."""
    port_pf = port_pf or {}
    total = _Counters()
    ports: dict[str, _Counters] = {}
    pfs: dict[str, _Counters] = {}
    software: list[Flow] = []
    unparsed = 0
    for d in dumps:
        unparsed += len(d.dump.errors)
        for f in d.dump.flows:
            total.add(f)
            port = f.in_port or NO_PORT
            c = ports.get(port)
            if c is None:
                c = ports[port] = _Counters()
            c.add(f)
            pf = port_pf.get(port)
            if pf is not None:
                p = pfs.get(pf)
                if p is None:
                    p = pfs[pf] = _Counters()
                p.add(f)
            if f.offloaded == NOT_OFFLOADED:
                software.append(f)
    software.sort(key=lambda f: (f.bytes, f.packets), reverse=True)
    top_flows = [_summary(f) for f in software[: max(0, min(top, MAX_TOP))]]
    audit = Audit(
        host_id=host_id,
        hw_offload=hw_offload,
        flows=total.flows,
        offloaded=total.offloaded,
        partial=total.partial,
        not_offloaded=total.not_offloaded,
        bytes=total.bytes,
        offloaded_bytes=total.off_bytes,
        partial_bytes=total.part_bytes,
        packets=total.packets,
        unknown=total.unknown,
        ratio=total.offloaded / known if (known := total.flows - total.unknown) else 0.0,
        per_port=[c.model(port, port_pf.get(port)) for port, c in sorted(ports.items())],
        per_pf=[c.model(pf, pf) for pf, c in sorted(pfs.items())],
        top_not_offloaded=top_flows,
        datapaths=[d.datapath for d in dumps],
        unparsed_lines=unparsed,
    )
    audit.findings = _findings(audit, dumps, software)
    return audit


def _summary(f: Flow) -> FlowSummary:
    return FlowSummary(
        ufid=f.ufid, in_port=f.in_port, match=f.match, actions=f.actions, packets=f.packets,
        bytes=f.bytes, dp=f.dp, offloaded=f.offloaded, used_s=f.used, datapath=f.datapath,
    )  # fmt: skip


def describe_flow(f: FlowSummary) -> str:
    return (
        f"in_port({f.in_port}) {f.packets} packets {f.bytes} bytes, actions:{f.actions}"
        f" [{f.datapath or '?'} dp:{f.dp or '?'}]"
    )


def _findings(audit: Audit, dumps: Sequence[DatapathDump], software: list[Flow]) -> list[Finding]:
    out: list[Finding] = []
    busy = [f for f in software if f.packets > 0]
    top = "; ".join(describe_flow(s) for s in audit.top_not_offloaded[:3]) or "none"
    counts = (
        f"{audit.flows} flows ({audit.offloaded} offloaded, {audit.partial} partially, "
        f"{audit.not_offloaded} in software"
        + (f", {audit.unknown} unknown" if audit.unknown else "")
        + f") on {', '.join(audit.datapaths) or 'no datapath'}"
    )
    if audit.hw_offload and busy and audit.offloaded == 0 and audit.partial == 0:
        out.append(
            Finding(
                check="audit.nothing_offloaded",
                severity="error",
                message=(
                    f"hw-offload is on and {len(busy)} flows carry traffic, but none is "
                    "offloaded: 'ovs-appctl dpctl/dump-flows type=offloaded' is empty (the "
                    "guide: if hardware offload does not take effect, output will be empty)"
                ),
                evidence=f"{counts}; busiest software flows: {top}",
                fix=_nothing_offloaded_fix(dumps),
            )
        )
    elif audit.hw_offload and busy and (audit.offloaded or audit.partial):
        out.append(
            Finding(
                check="audit.software_flows",
                severity="info",
                message=f"{len(busy)} flows with traffic still run in software",
                evidence=f"{counts}; busiest: {top}",
                fix="flows with actions the NIC cannot do (e.g. conntrack on ConnectX-6 and "
                "older, slow-path actions) stay in software; see the busiest flows' actions",
            )
        )
    elif not audit.hw_offload and busy:
        out.append(
            Finding(
                check="audit.hw_offload_off",
                severity="info",
                message=f"hw-offload is off: all {len(busy)} flows with traffic run in software",
                evidence=counts,
                fix="sriovctl offload-enable --host <host> (once the NIC checks pass)",
            )
        )
    if audit.unknown:
        out.append(
            Finding(
                check="audit.offload_unknown",
                severity="warning",
                message=f"{audit.unknown} of {audit.flows} flows: the dump does not say whether "
                "they are offloaded (no 'dp:' or 'offloaded:' field: it was taken without -m)",
                evidence=counts,
                fix="take the dump with 'ovs-appctl dpctl/dump-flows -m'; a dump taken with "
                "type=offloaded lists offloaded flows only: audit it with --type offloaded",
            )
        )
    if audit.unparsed_lines:
        first = next(e for d in dumps for e in d.dump.errors)
        out.append(
            Finding(
                check="audit.unparsed",
                severity="warning",
                message=f"{audit.unparsed_lines} dump-flows lines could not be parsed",
                evidence=f"first: {first}",
                fix="report the line: this OVS prints a format the parser does not know",
            )
        )
    return out


def _nothing_offloaded_fix(dumps: Sequence[DatapathDump]) -> str:
    userspace = [d.datapath for d in dumps if d.datapath.startswith("netdev@")]
    tips = []
    if userspace:
        tips.append(
            f"{', '.join(userspace)} is the userspace datapath, which offloads only DPDK "
            "ports (rte_flow): put the offload PF and its VF representors on a bridge with "
            "datapath_type=system"
        )
    tips.append(
        "check the NIC findings (eswitch in switchdev mode, hw-tc-offload on, representors "
        "rather than VFs on the bridge), tc-policy is not skip_hw, and ovs-vswitchd was "
        "restarted after hw-offload was enabled"
    )
    return "; ".join(tips)
