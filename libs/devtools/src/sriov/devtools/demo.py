"""The guide's workflow as one narrated run on the local stack (``sriov-stack up --demo``).

Every step runs the real ``sriovctl`` command a person would type, shows it and its output,
and checks the outcome, so the run is also an end-to-end test (it fails loudly if a step
does not do what the guide says).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sriov.devtools.launcher import SimHost, Stack

I350 = "I350 Ethernet Controller Virtual Function"
CX5 = "ConnectX-5 Virtual Function"
GUEST = "wyq-test-sriov-nic"


class DemoFailed(RuntimeError):
    pass


class Demo:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.host: SimHost = stack.sim_hosts[0]
        self.step_no = 0

    # --- narration ------------------------------------------------------------------------
    def step(self, title: str, why: str) -> None:
        self.step_no += 1
        print(f"\n{_bold(f'== {self.step_no}. {title}')}\n   {why}", flush=True)

    def ctl(
        self, *args: str, expect_fail: bool = False, show: bool = True, prog: str = "sriovctl"
    ) -> str:
        argv = [str(Path(sys.executable).parent / prog), *args]
        shown = " ".join(f"'{a}'" if " " in a else a for a in [prog, *args])
        if show:
            print(f"$ {shown}", flush=True)
        res = subprocess.run(argv, capture_output=True, text=True, env=self.stack.env(), timeout=60)
        out = (res.stdout + res.stderr).rstrip()
        if show and out:
            print(out, flush=True)
        if (res.returncode != 0) != expect_fail:
            raise DemoFailed(f"`{shown}` exited {res.returncode}: {out[-600:]}")
        return out

    def ctl_json(self, *args: str) -> Any:
        return json.loads(self.ctl("--json", *args, show=False))

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 30) -> None:
        print(f"   ... waiting for {what}", end="", flush=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                print(" done", flush=True)
                return
            print(".", end="", flush=True)
            time.sleep(0.5)
        raise DemoFailed(f"timed out after {timeout}s waiting for {what}")

    def devices(self, **filters: str) -> list[dict[str, Any]]:
        args = ["isolated-device-list", "--limit", "100"]
        for k, v in filters.items():
            args += [f"--{k.replace('_', '-')}", v]
        return list(self.ctl_json(*args)["devices"])

    # --- the guide, step by step ----------------------------------------------------------
    def run(self) -> None:
        h = self.host.host_id
        self.step("Services", "Every service registered itself with NATS service discovery.")
        self.wait("inventory, scheduler, hostd and offload", self._all_services)
        self.ctl("services")

        self.step(
            "climc isolated-device-list",
            "hostd discovered the PFs and VFs in sysfs; inventory lists them like climc.",
        )
        self.wait("the 15 VFs of the guide's host", lambda: len(self.devices(host=h)) >= 15)
        self.ctl("isolated-device-list", "--host", h)

        self.step(
            "climc server-create --net 'sriov-nic-model=I350 ...'",
            "The scheduler reserves a free I350 VF for the guest in one transaction.",
        )
        self.ctl("server-create", GUEST, "--net", f"sriov-nic-model={I350}")
        held = [d for d in self.devices(guest=GUEST)]
        if len(held) != 1 or held[0]["model"] != I350:
            raise DemoFailed(f"expected one I350 VF for {GUEST}, inventory shows {held}")

        self.step(
            "climc server-attach-network",
            "Attach a second VF (ConnectX-5) to the same guest on its host.",
        )
        self.ctl("server-attach-network", GUEST, f"sriov-nic-model={CX5}")
        self.wait("inventory's guest column", lambda: len(self.devices(guest=GUEST)) == 2)
        self.ctl("isolated-device-list", "--guest", GUEST)

        cx5_pf = self._pf_of(CX5)
        self.step(
            f"PF {cx5_pf} loses its carrier",
            "A real netlink event in the host's namespace: hostd publishes link.down, "
            "inventory marks the PF's VFs, the scheduler stops choosing them.",
        )
        self._link(cx5_pf, "down")
        self.wait(
            "the ConnectX-5 VFs to show link down",
            lambda: all(d["link_state"] == "down" for d in self.devices(model=CX5)),
        )
        out = self.ctl(
            "server-create", "guest-2", "--net", f"sriov-nic-model={CX5}", expect_fail=True
        )
        if "no_capacity" not in out:
            raise DemoFailed(f"expected no_capacity while {cx5_pf} is down, got: {out}")
        self._link(cx5_pf, "up")
        self.wait(
            "the link to come back",
            lambda: all(d["link_state"] == "up" for d in self.devices(model=CX5)),
        )
        self.ctl("server-create", "guest-2", "--net", f"sriov-nic-model={CX5}")

        if any(p.name.startswith("offload") for p in self.stack.procs):
            self.step(
                "OVS hw-offload",
                "Enable hw-offload through OVSDB, pass real traffic through a userspace "
                "bridge, and audit dpctl/dump-flows type=offloaded.",
            )
            self.ctl("offload-enable", "--host", h, "--allow-restart")
            self.ctl("offload-status", "--host", h)
            self._traffic()
            self.ctl("offload-audit", "--host", h)

        self.step("Doctor", "Every check of the guide's set-up steps and Common Questions.")
        self.ctl("host-doctor", "--host", h)

        self.step(
            "sriov-hostd discover",
            "The same host read offline, without NATS: the host id to make credentials for, "
            "and the PFs, VFs and errors hostd publishes (what support asks a customer for).",
        )
        self.ctl("discover", "--config", str(self.host.conf), prog="sriov-hostd")

        self.step("Release", "Release the guests; their VFs are free again.")
        self.ctl("server-release", GUEST)
        self.ctl("server-release", "guest-2")
        self.wait("inventory to show the VFs free", lambda: not self.devices(guest=GUEST))
        if self._has_lifecycle():
            self._lifecycle()
        print("\n" + _bold("Demo complete: the guide's workflow ran end to end."), flush=True)

    # --- the VF lifecycle (issue 12): shown once hostd reports PF capabilities ------------
    def _has_lifecycle(self) -> bool:
        return any(d.get("lifecycle") for d in self.devices(host=self.host.host_id))

    def _lifecycle(self) -> None:
        h = self.host.host_id
        self.step(
            "Release leaves a clean VF",
            "hostd restored each released VF (MAC cleared, VLAN 0, its own driver), read it "
            "back, and only then reported it clean: the scheduler offers it again.",
        )
        self.wait(
            "every VF of the host to be clean (free)",
            lambda: all(d.get("lifecycle") == "free" for d in self.devices(host=h)),
        )
        self.ctl("isolated-device-list", "--host", h, "--lifecycle", "any")
        self._drift()

    def _drift(self) -> None:
        guest = "drift-guest"
        self.step(
            "Drift repaired",
            "A prepared VF is changed behind hostd's back at its PF, as `ip link set <pf> vf N "
            "vlan 7` would: the PF's link notification makes hostd compare the VF with its "
            "desired state, put it back and report it (VfApplied 'repaired').",
        )
        self.ctl("server-create", guest, "--net", f"sriov-nic-model={CX5};vlan=100")
        [dev] = self.devices(guest=guest)
        argv = ["events", "--kind", "vf", "--host", self.host.host_id, "--count", "1",
                "--for", "30"]  # fmt: skip
        follower = subprocess.Popen(
            [str(Path(sys.executable).parent / "sriovctl"), *argv],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.stack.env(),
        )  # fmt: skip
        assert follower.stderr is not None
        follower.stderr.readline()  # "following vf events ...": subscribed
        print(f"$ {self.host.ip_link_set_vf(dev['pci_address'], vlan=7)}"
              "   # at the simulated PF driver", flush=True)  # fmt: skip
        out, err = follower.communicate(timeout=60)
        print(f"$ sriovctl {' '.join(argv)}\n{out.rstrip()}", flush=True)
        if "repaired (vlan put back)" not in out:
            raise DemoFailed(f"expected hostd to repair the VLAN, events showed: {out}{err}")
        self.wait(
            "the VF's VLAN to read back 100 again",
            lambda: (
                [(d.get("actual") or {}).get("vlan") for d in self.devices(guest=guest)] == [100]
            ),
        )
        self.ctl("isolated-device-list", "--guest", guest, "--lifecycle", "any")
        self.ctl("server-release", guest)

    # --- helpers --------------------------------------------------------------------------
    def _all_services(self) -> bool:
        names = {s["name"] for s in self.ctl_json("services")}
        want = {"sriov-inventory", "sriov-scheduler", "sriov-hostd"}
        if any(p.name.startswith("offload") for p in self.stack.procs):
            want.add("sriov-offload")
        return want <= names

    def _pf_of(self, model: str) -> str:
        devs = self.devices(model=model)
        if not devs or not devs[0].get("pf_ifname"):
            raise DemoFailed(f"no PF netdev known for {model}")
        return str(devs[0]["pf_ifname"])

    def _link(self, ifname: str, state: str) -> None:
        print(f"$ sriov-hostd simulate --netns {self.host.netns} --link {ifname}={state}")
        subprocess.run(
            [
                str(Path(sys.executable).parent / "sriov-hostd"),
                "simulate",
                "--root",
                str(self.host.sys_root),
                "--netns",
                self.host.netns,
                "--link",
                f"{ifname}={state}",
            ],
            check=True,
            capture_output=True,
            env=self.stack.env(),
        )

    def _traffic(self) -> None:
        from sriov.offload.testing import netns
        from sriov.offload.testing.sandbox import OvsSandbox

        sb = OvsSandbox(self.host.ovs_dir)
        sb.add_bridge("br-demo")
        a = sb.add_host_port("br-demo", "vm1", "10.77.0.1/24")
        b = sb.add_host_port("br-demo", "vm2", "10.77.0.2/24")
        print(f"   sending UDP from {a.address} to {b.address} through br-demo")
        netns.send_udp(a.netns, b.address, count=200)


def _bold(text: str) -> str:
    return f"\033[1m{text}\033[0m" if sys.stdout.isatty() else text


def run_demo(stack: Stack) -> int:
    try:
        Demo(stack).run()
    except DemoFailed as exc:
        print("\n" + _bold(f"demo failed: {exc}"), flush=True)
        return 1
    return 0
