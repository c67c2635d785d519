"""The one-machine launcher: up, discoverable, Ctrl-C leaves nothing behind, clear errors."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

BIN = Path(sys.executable).parent


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_up_lists_four_services_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [BIN / "sriov-stack", "up", "--state-dir", str(state), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen: set[str] = set()
    listing: list[dict[str, Any]] = []
    last = ""
    pids: set[int] = set()
    try:
        deadline = time.monotonic() + 90
        want = {"sriov-hostd", "sriov-inventory", "sriov-scheduler", "sriov-offload"}
        while time.monotonic() < deadline and not want <= seen:
            time.sleep(1)
            if not (state / "stack.json").exists():
                continue
            res = subprocess.run(
                [BIN / "sriovctl", "--json", "services"],
                capture_output=True, text=True, env={**os.environ, "SRIOV_STATE_DIR": str(state)},
            )  # fmt: skip
            last = res.stdout + res.stderr
            if res.returncode == 0:
                listing = json.loads(res.stdout)
                seen = {s["name"] for s in listing}
        if not want <= seen:
            proc.kill()
            out = proc.communicate(timeout=30)[0]
            raise AssertionError(f"services seen: {seen}; sriovctl: {last}; stack: {out[-2000:]}")
        # the per-replica readiness probe of deploy/: one instance answers, a stranger not
        env = {**os.environ, "SRIOV_STATE_DIR": str(state)}
        sched = next(s for s in listing if s["name"] == "sriov-scheduler")
        probe = [BIN / "sriovctl", "services", "--name", "sriov-scheduler", "--self", "--require"]
        instance = sched["metadata"]["instance"]
        ok = subprocess.run(probe, capture_output=True, text=True,
                            env={**env, "SRIOV_INSTANCE_ID": instance})  # fmt: skip
        assert ok.returncode == 0 and instance in ok.stdout, ok.stderr
        gone = subprocess.run(probe, capture_output=True, text=True,
                              env={**env, "SRIOV_INSTANCE_ID": "sched-nope"})  # fmt: skip
        assert gone.returncode == 1
        assert "sriov-scheduler instance sched-nope did not answer" in gone.stderr
        pids = {p.pid for p in _descendants(proc.pid)}
        assert len(pids) >= 6  # NATS, PostgreSQL, four services (+ OVS daemons)
        ovs_pids = {
            int(p.read_text())
            for p in state.glob("host*/ovs/*.pid")
            if p.read_text().strip().isdigit()
        }
        pids |= ovs_pids
        sandbox = json.loads((state / "host1" / "ovs" / "sandbox.json").read_text())
        tag = hashlib.sha1(str(state.absolute()).encode()).hexdigest()[:6]
        ours = {sandbox["netns"], f"sriov-{tag}-h1"}
        assert ours <= _netns()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, 130), out
    assert "nothing left running" in out
    alive = [
        pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
    ]
    assert not alive, f"left running: {alive}"
    assert not (ours & _netns()), f"namespaces left behind: {ours & _netns()}"
    assert not (state / "stack.json").exists()


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run(
            [BIN / "sriov-stack", "up", "--state-dir", str(tmp_path), "--nats-port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert res.returncode == 2
    assert f"NATS port 127.0.0.1:{port} is already in use" in res.stderr


def test_unusable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = subprocess.run(
        [BIN / "sriov-stack", "up", "--state-dir", str(blocker / "state")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2
    assert "directory" in res.stderr
    assert str(blocker) in res.stderr
