"""``sriovctl events`` follows a running stack live, filtered by host and kind.

Several followers run at once as real ``sriovctl`` processes while the workflow runs: a link
goes down (a real netlink event in the host's namespace), a guest gets a VF and releases it.
Each follower must show exactly what its filters let through.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import Bus
from sriov.devtools.launcher import GUIDE_HOST_ID, Stack

SRIOVCTL = str(Path(sys.executable).parent / "sriovctl")
CX5 = "ConnectX-5 Virtual Function"  # its PF goes down
I350 = "I350 Ethernet Controller Virtual Function"  # the guest gets one
GUEST = "events-guest"
HOST = GUIDE_HOST_ID


class Follower:
    """One ``sriovctl events`` process; its output lines collected as they come."""

    def __init__(self, stack: Stack, *args: str) -> None:
        self.proc = subprocess.Popen(
            [SRIOVCTL, *args], env=stack.env(), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.lines: list[str] = []
        self.err: list[str] = []
        self.ready = threading.Event()
        self._threads = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)
            if line.startswith("following "):
                self.ready.set()

    def wait_ready(self) -> None:
        assert self.ready.wait(30), f"sriovctl events did not start: {''.join(self.err)}"

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines)]

    def stop(self) -> int:
        """Ctrl-C, as a person would; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        for t in self._threads:
            t.join(5)
        return code


async def _place_and_release(url: str) -> m.PlacementReply:
    bus = await Bus.connect(url, name="events-test")
    try:
        reply = await bus.request(
            subjects.endpoint(subjects.SCHEDULER_GROUP, "place"),
            m.PlaceRequest(request_id="ev-1", guest_id=GUEST,
                           nets=[m.NetRequest(desc=f"sriov-nic-model={I350}")]),
            m.PlacementReply, timeout=20,
        )  # fmt: skip
        await bus.request(
            subjects.endpoint(subjects.SCHEDULER_GROUP, "release"),
            m.ReleaseRequest(request_id="ev-2", guest_id=GUEST),
            m.PlacementReply,
            timeout=20,
        )
        return reply
    finally:
        await bus.close()


def test_events_follow_live_filtered_by_host_and_kind(
    stack: Stack, sriovctl: Callable[..., Any], eventually: Callable[..., Any]
) -> None:
    eventually(
        lambda: len(sriovctl("--json", "isolated-device-list", "--model", CX5)["devices"]) == 8,
        "inventory to list the host's ConnectX-5 VFs",
        timeout=40,
    )
    pf = sriovctl("--json", "isolated-device-list", "--model", CX5)["devices"][0]["pf_ifname"]
    everything = Follower(stack, "--json", "events", "--host", HOST)
    placements = Follower(stack, "--json", "events", "--kind", "placement")
    elsewhere = Follower(stack, "--json", "events", "--host", "some-other-host")
    one_link = Follower(stack, "events", "--kind", "link", "--count", "1")
    followers = (everything, placements, elsewhere, one_link)
    try:
        for f in followers:
            f.wait_ready()
        sim = stack.sim_hosts[0]
        stack._run(["sriov-hostd", "simulate", "--root", str(sim.sys_root),
                    "--netns", sim.netns, "--link", f"{pf}=down"])  # fmt: skip
        reply = asyncio.run(_place_and_release(stack.env()["SRIOV_NATS_URL"]))
        held = reply.assignments[0]

        def seen(f: Follower, kind: str, text: str) -> bool:
            return any(e["kind"] == kind and text in e["summary"] for e in f.events())

        eventually(lambda: seen(everything, "link", f"{pf} down"), "the link event")
        eventually(lambda: seen(everything, "placement", f"{GUEST} reserved {held.addr}"),
                   "the reservation")  # fmt: skip
        eventually(lambda: seen(everything, "placement", f"{GUEST} released 1 VF"),
                   "the release, placed on its host through the device")  # fmt: skip
        eventually(lambda: seen(everything, "device", "link=down"),
                   "inventory's device state of a VF behind the down PF")  # fmt: skip
        eventually(lambda: seen(placements, "placement", f"{GUEST} released"),
                   "the unfiltered placement follower's release")  # fmt: skip
        eventually(lambda: one_link.proc.poll() is not None, "--count 1 to stop by itself")
    finally:
        codes = [f.stop() for f in followers]
    assert codes == [0, 0, 0, 0], [f.err for f in followers]
    assert {e["host_id"] for e in everything.events()} == {HOST}
    assert {e["kind"] for e in everything.events()} >= {"link", "placement", "device"}
    link = next(e for e in everything.events() if e["kind"] == "link")
    assert link["subject"] == subjects.host_link(HOST, up=False).subject
    assert link["type"] == "host.link.v1" and link["event"]["ifname"] == pf
    assert {e["kind"] for e in placements.events()} == {"placement"}
    assert {e["type"] for e in placements.events()} >= {"placement.reserved.v1",
                                                        "placement.released.v1"}  # fmt: skip
    assert elsewhere.events() == []
    assert len(one_link.lines) == 1 and " link " in one_link.lines[0]
    assert HOST in one_link.lines[0]
