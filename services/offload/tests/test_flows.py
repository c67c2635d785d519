"""The dump-flows parser on real and documented-format samples of every datapath."""

from __future__ import annotations

from pathlib import Path

import pytest

from sriov.offload.flows import parse_dump

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.mark.parametrize(
    ("name", "flows"),
    [
        ("netdev.txt", 9),
        ("netdev-m.txt", 9),
        ("netdev-hw-offload-on-m.txt", 10),
        ("netdev-type-offloaded.txt", 0),
        ("kernel.txt", 5),
        ("kernel-m.txt", 3),
        ("tc-m.txt", 6),
        ("tc-offloaded.txt", 2),
        ("dpdk-pmd-m.txt", 4),
        ("netdev-legacy-header.txt", 2),
    ],
)
def test_every_fixture_line_is_a_flow_or_a_header(name: str, flows: int) -> None:
    text = load(name)
    dump = parse_dump(text, datapath="dp@x")
    assert dump.errors == []
    assert len(dump.flows) == flows
    headers = sum(1 for line in text.splitlines() if line.startswith("flow-dump from "))
    assert len(dump.flows) + headers == len([ln for ln in text.splitlines() if ln.strip()])
    assert all(f.datapath == "dp@x" for f in dump.flows)


def test_live_userspace_dump_with_m_has_names_ufids_and_dp_ovs() -> None:
    dump = parse_dump(load("netdev-m.txt"))
    tcp = [f for f in dump.flows if "proto=6/0" in f.match]
    assert {f.in_port for f in tcp} == {"vm1", "vm2"}
    for f in dump.flows:
        assert f.ufid is not None and len(f.ufid) == 36
        assert f.dp == "ovs"
        assert f.offloaded == "no"
        assert f.pmd == -1  # "flow-dump from the main thread:"
        assert f.extra is not None and f.extra.startswith("miniflow_bits(")
        assert not f.match.startswith("ufid")
        assert f.match.startswith("skb_priority(0/0)")
    big = max(tcp, key=lambda f: f.bytes)
    assert big.flags == "FP."
    assert big.packets > 100 and big.bytes > 200_000
    assert big.actions == "vm2"


def test_live_userspace_dump_without_m_has_port_numbers_and_no_layer() -> None:
    dump = parse_dump(load("netdev.txt"))
    assert {f.in_port for f in dump.flows} == {"2", "3"}
    assert all(f.ufid is None and f.dp is None and f.extra is None for f in dump.flows)
    never = [f for f in dump.flows if f.packets == 0]
    assert never and all(f.used is None for f in never)
    arp = next(f for f in dump.flows if "arp(" in f.match)
    assert arp.actions == "1,3"


def test_kernel_datapath_counters_beyond_32_bits_and_tcp_flags() -> None:
    flows = parse_dump(load("kernel.txt")).flows
    first = flows[0]
    assert first.packets == 5_000_000_000
    assert first.bytes == 7_500_000_000_000
    assert first.used == pytest.approx(0.004)
    assert first.flags == "P."
    assert first.in_port == "2"
    assert first.actions == "3"
    assert first.pmd is None
    assert flows[1].packets == 2_147_483_650
    assert flows[-1].actions == "drop" and flows[-1].flags == "S" and flows[-1].used is None


def test_tc_offloaded_partial_and_software_flows_are_told_apart() -> None:
    flows = parse_dump(load("tc-m.txt")).flows
    assert [(f.dp, f.offloaded) for f in flows] == [
        ("tc", "yes"),
        ("tc", "yes"),
        ("tc", "yes"),
        ("tc", "no"),  # in tc but not in hardware (skip_hw)
        ("ovs", "no"),
        ("ovs", "no"),
    ]
    assert flows[1].packets == 4_294_967_297
    assert flows[2].actions == "ct(zone=4,nat),recirc(0x1f)"
    assert flows[5].actions == "userspace(pid=3165847382,slow_path(action))"
    assert flows[5].flags == "P."
    assert flows[0].in_port == "enp59s0f0_1"
    assert flows[0].ufid == "a3c1f2d4-6b7e-4c8f-9d0a-1b2c3d4e5f60"


def test_dpdk_pmd_headers_full_and_partial_offload() -> None:
    flows = parse_dump(load("dpdk-pmd-m.txt")).flows
    assert [(f.pmd, f.dp, f.offloaded) for f in flows] == [
        (2, "dpdk", "yes"),
        (2, "ovs", "partial"),
        (3, "ovs", "no"),
        (-1, "ovs", "no"),
    ]
    assert flows[1].bytes == 12_884_901_888_000
    assert flows[1].extra == "miniflow_bits(4,1)"
    assert flows[1].actions == "pf0"


def test_legacy_non_dpdk_header_and_nested_actions() -> None:
    flows = parse_dump(load("netdev-legacy-header.txt")).flows
    assert [f.pmd for f in flows] == [-1, 1]
    assert flows[1].actions == "set(eth(src=02:ac:10:ff:01:01,dst=de:75:cc:e1:c6:85)),4"
    assert flows[1].match.startswith("recirc_id(0x6),in_port(3)")


def test_bad_lines_are_reported_with_their_number_and_the_rest_still_parses() -> None:
    good = load("kernel.txt").splitlines()
    text = "\n".join(
        [
            good[0],
            "ovs-vswitchd: something unexpected",
            "in_port(2),eth_type(0x0800), packets:x, bytes:1, used:never, actions:3",
            "in_port(2),eth_type(0x0800), packets:1, bytes:1, used:never",
            "ufid:zz, in_port(2), packets:1, bytes:1, used:never, actions:3",
            good[1],
        ]
    )
    dump = parse_dump(text)
    assert len(dump.flows) == 2
    assert [e.line for e in dump.errors] == [2, 3, 4, 5]
    assert "not a dump-flows line" in dump.errors[0].reason
    assert "statistics" in dump.errors[1].reason
    assert "actions" in dump.errors[2].reason
    assert "ufid" in dump.errors[3].reason
    assert "line 2:" in str(dump.errors[0])
    assert dump.flows[1].line == 6


def test_empty_output_and_crlf() -> None:
    assert parse_dump("").flows == []
    line = load("kernel.txt").splitlines()[0]
    dump = parse_dump(line + "\r\n" + line + "\r\n")
    assert len(dump.flows) == 2 and dump.flows[0].actions == "3"
