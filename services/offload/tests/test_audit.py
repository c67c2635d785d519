"""Audit arithmetic and findings over the fixture dumps."""

from __future__ import annotations

from pathlib import Path

from sriov.offload.audit import DatapathDump, build_audit
from sriov.offload.flows import parse_dump

FIXTURES = Path(__file__).parent / "fixtures"


def dump(name: str, dp: str) -> DatapathDump:
    return DatapathDump(dp, parse_dump((FIXTURES / name).read_text(), datapath=dp))


def test_live_userspace_flows_with_hw_offload_on_count_as_not_offloaded_and_raise_finding() -> None:
    d = dump("netdev-hw-offload-on-m.txt", "netdev@ovs-netdev")
    audit = build_audit("h1", True, [d], top=3)
    assert audit.flows == 10
    assert audit.offloaded == 0 and audit.partial == 0 and audit.not_offloaded == 10
    assert audit.ratio == 0.0
    assert audit.bytes == sum(f.bytes for f in d.dump.flows)
    assert audit.offloaded_bytes == 0
    assert audit.datapaths == ["netdev@ovs-netdev"]
    finding = next(f for f in audit.findings if f.check == "audit.nothing_offloaded")
    assert finding.severity == "error"
    assert "output will be empty" in finding.message
    assert "netdev@ovs-netdev" in finding.fix and "datapath_type=system" in finding.fix
    top = audit.top_not_offloaded
    assert len(top) == 3
    assert [t.bytes for t in top] == sorted((f.bytes for f in d.dump.flows), reverse=True)[:3]
    assert top[0].in_port in finding.evidence and str(top[0].bytes) in finding.evidence
    ports = {p.port: p for p in audit.per_port}
    assert set(ports) == {"vm1", "vm2"}
    assert sum(p.flows for p in ports.values()) == 10
    assert all(p.offloaded == 0 for p in ports.values())


def test_same_flows_with_hw_offload_off_are_only_informational() -> None:
    audit = build_audit("h1", False, [dump("netdev-m.txt", "netdev@ovs-netdev")])
    assert [f.check for f in audit.findings] == ["audit.hw_offload_off"]
    assert audit.findings[0].severity == "info"


def test_no_traffic_no_finding() -> None:
    d = dump("netdev-m.txt", "netdev@ovs-netdev")
    for f in d.dump.flows:
        f.packets = f.bytes = 0
    assert build_audit("h1", True, [d]).findings == []


def test_tc_host_counts_per_port_and_per_pf_with_64_bit_bytes() -> None:
    d = dump("tc-m.txt", "system@ovs-system")
    port_pf = {name: "enp59s0f0" for name in ("enp59s0f0", "enp59s0f0_1", "enp59s0f0_2")}
    audit = build_audit("h1", True, [d], port_pf=port_pf, top=10)
    assert (audit.flows, audit.offloaded, audit.partial, audit.not_offloaded) == (6, 3, 0, 3)
    assert audit.ratio == 0.5
    assert audit.offloaded_bytes == 148722125898 + 6442450944000 + 518
    assert audit.packets == sum(f.packets for f in d.dump.flows)
    ports = {p.port: p for p in audit.per_port}
    assert ports["enp59s0f0_2"].offloaded_bytes == 6442450944000
    assert ports["enp59s0f0_2"].pf == "enp59s0f0"
    assert ports["enp59s0f0_3"].pf is None
    [pf] = audit.per_pf
    assert pf.port == "enp59s0f0" and pf.flows == 4 and pf.offloaded == 3
    assert pf.not_offloaded == 1  # the tc flow held back by skip_hw
    assert [t.dp for t in audit.top_not_offloaded] == ["tc", "ovs", "ovs"]
    assert audit.top_not_offloaded[1].actions.startswith("userspace(")
    assert [f.check for f in audit.findings] == ["audit.software_flows"]


def test_dpdk_partial_offload_is_its_own_bucket() -> None:
    audit = build_audit("h1", True, [dump("dpdk-pmd-m.txt", "netdev@ovs-netdev")])
    assert (audit.offloaded, audit.partial, audit.not_offloaded) == (1, 1, 2)
    assert audit.partial_bytes == 12_884_901_888_000
    assert all(t.offloaded == "no" for t in audit.top_not_offloaded)


def test_several_datapaths_and_unparsed_lines() -> None:
    bad = DatapathDump("system@ovs-system", parse_dump("garbage line\n", datapath="x"))
    audit = build_audit("h1", True, [dump("kernel.txt", "system@ovs-system"), bad])
    assert audit.flows == 5 and audit.unparsed_lines == 1
    unparsed = next(f for f in audit.findings if f.check == "audit.unparsed")
    assert "line 1" in unparsed.evidence and "garbage line" in unparsed.evidence


def test_empty_host() -> None:
    audit = build_audit("h1", True, [])
    assert audit.flows == 0 and audit.ratio == 0.0 and audit.findings == []


def test_a_dump_without_m_says_nothing_about_offload_so_flows_are_unknown() -> None:
    d = dump("kernel.txt", "system@ovs-system")  # no -m: no dp:, no offloaded:
    assert {f.offloaded for f in d.dump.flows} == {"unknown"}
    audit = build_audit("h1", True, [d])
    assert (audit.flows, audit.unknown, audit.not_offloaded, audit.offloaded) == (5, 5, 0, 0)
    assert audit.top_not_offloaded == [] and audit.ratio == 0.0
    checks = [f.check for f in audit.findings]
    assert checks == ["audit.offload_unknown"]  # never "nothing offloaded" on no evidence
    assert "without -m" in audit.findings[0].message
    assert sum(p.unknown for p in audit.per_port) == 5
    # the same flows with -m are known
    m = dump("kernel-m.txt", "system@ovs-system")
    assert "unknown" not in {f.offloaded for f in m.dump.flows}
    assert build_audit("h1", True, [m]).unknown == 0


def test_a_dump_taken_with_type_offloaded_lists_offloaded_flows_only() -> None:
    text = (FIXTURES / "tc-offloaded.txt").read_text()
    d = DatapathDump("system@ovs-system", parse_dump(text, offloaded_only=True))
    audit = build_audit("h1", True, [d])
    assert audit.flows == audit.offloaded == 2 and audit.unknown == 0 and audit.ratio == 1.0
    assert audit.findings == []
