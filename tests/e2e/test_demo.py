"""The README's run command with --demo: the guide's workflow end to end, as a person sees it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_demo_walks_through_the_guide(tmp_path: Path) -> None:
    res = subprocess.run(
        [BIN / "sriov-stack", "up", "--state-dir", str(tmp_path / "state"), "--demo", "--exit",
         "--quiet"],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "Demo complete: the guide's workflow ran end to end." in out
    # the guide's table, its footer, the two example commands, the link-down refusal
    assert "| I350 Ethernet Controller Virtual Function | 03:12.4 | 8086:1520" in out
    assert "*** Total: 15 Pages: 1 Limit: 15 Offset: 0 Page: 1 ***" in out
    assert "$ sriovctl server-create wyq-test-sriov-nic --net 'sriov-nic-model=I350" in out
    assert "$ sriovctl server-attach-network wyq-test-sriov-nic" in out
    assert "8 with PF link down" in out
    assert "audit.nothing_offloaded" in out
    assert "$ sriov-hostd discover --config" in out and "PFs: 2" in out and "VFs: 15" in out
    # the VF lifecycle: a VLAN changed behind hostd's back at the PF is put back and reported
    assert "vlan 7   # at the simulated PF driver" in out
    assert "repaired (vlan put back)" in out and "vlan=100" in out
    assert "stopped; nothing left running" in out


def test_bad_arguments_are_refused_before_anything_starts(tmp_path: Path) -> None:
    res = subprocess.run(
        [BIN / "sriov-stack", "up", "--state-dir", str(tmp_path / "state"), "--demo", "--exit",
         "--quiet", "--replicas", "9"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2
    assert "--hosts must be 1-16 and --replicas 1-8" in res.stderr
    assert not (tmp_path / "state").exists()
