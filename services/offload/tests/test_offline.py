"""``sriov-offload audit --dump FILE``: the audit of a saved dump, as a process, no NATS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = str(Path(sys.executable).with_name("sriov-offload"))
FIXTURES = Path(__file__).parent / "fixtures"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, "audit", *args], capture_output=True, text=True, timeout=60, input=stdin
    )


def test_a_dump_with_m_and_nothing_offloaded_is_an_error_naming_the_busiest_flows() -> None:
    proc = run("--dump", str(FIXTURES / "netdev-hw-offload-on-m.txt"), "--top", "2")
    assert proc.returncode == 1, proc.stderr
    assert "netdev@ovs-netdev" in proc.stdout and "audit.nothing_offloaded" in proc.stdout
    assert proc.stdout.count("in_port(vm") >= 2


def test_json_of_a_dump_without_m_marks_offload_unknown() -> None:
    proc = run("--dump", str(FIXTURES / "kernel.txt"), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    audit = json.loads(proc.stdout)
    assert audit["type"] == "offload.audit.v1" and audit["datapaths"] == ["system@ovs-system"]
    assert (audit["flows"], audit["unknown"], audit["not_offloaded"]) == (5, 5, 0)
    assert [f["check"] for f in audit["findings"]] == ["audit.offload_unknown"]


def test_type_offloaded_counts_every_listed_flow_as_offloaded_read_from_stdin() -> None:
    text = (FIXTURES / "tc-offloaded.txt").read_text()
    proc = run("--dump", "-", "--type", "offloaded", "-o", "json", stdin=text)
    assert proc.returncode == 0, proc.stderr
    audit = json.loads(proc.stdout)
    assert audit["offloaded"] == audit["flows"] == 2 and audit["ratio"] == 1.0


def test_a_missing_dump_is_named() -> None:
    proc = run("--dump", "/nonexistent/dump.txt")
    assert proc.returncode == 2
    assert "--dump /nonexistent/dump.txt: cannot read it" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_without_a_subcommand_the_agent_still_parses_its_options() -> None:
    proc = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--ovsdb" in proc.stdout and "audit --dump" in proc.stdout
