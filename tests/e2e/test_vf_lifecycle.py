"""The VF lifecycle's whole loop with the real programs on the guide's simulated host.

One stack, one guest after another, each step through the real ``sriovctl``: a VF prepared
and read back (driver, generated MAC, ``;vlan=100``), attach, drift put back, release ->
clean -> offered again, expiry -> cleaned, a VF whose restore fails quarantined until
``vf-reset``, ``host-set-numvfs`` refused while a guest holds a VF of the PF and forced ->
lost, and a drain that names its blocking guest and ends after the release. What the host
holds is read at the simulated PF driver (its VF table) and in sysfs (the bound driver).
"""

from __future__ import annotations

import asyncio
import errno
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sriov.common.bus import Bus
from sriov.devtools.launcher import SimHost, Stack
from sriov.hostd.simulator.tree import load_state
from sriov.scheduler.testing import read_events

SRIOVCTL = str(Path(sys.executable).parent / "sriovctl")
Ctl = Callable[..., Any]
CX5 = "ConnectX-5 Virtual Function"
I350 = "I350 Ethernet Controller Virtual Function"


def kernel_vf(sim: SimHost, pci: str) -> Any:
    """VF ``pci`` as its PF driver keeps it (what ``IFLA_VFINFO_LIST`` reports)."""
    pf_ifname, vf = sim.vf_of(pci)
    state = load_state(sim.sys_root)
    pf = next(p for p in state.pfs if p.ifname == pf_ifname)
    return state.vf_table[pf.pci_address][vf]


def bound_driver(sim: SimHost, pci: str) -> str | None:
    link = sim.sys_root / "bus" / "pci" / "devices" / pci / "driver"
    return link.resolve().name if link.is_symlink() else None


def placement_events(stack: Stack, guest: str) -> list[str]:
    """The guest's placement events as stored (Reserved, Ready, Expired, Lost...)."""

    async def read() -> list[str]:
        bus = await Bus.connect(stack.nats_url, name="test")
        try:
            return [type(ev).__name__ for ev in await read_events(bus, guest)]
        finally:
            await bus.close()

    return asyncio.run(read())


def test_vf_lifecycle_whole_loop(stack: Stack, sriovctl: Ctl, eventually: Ctl) -> None:
    sim = stack.sim_hosts[0]
    host = sim.host_id

    def devices() -> dict[str, dict[str, Any]]:
        out = sriovctl("--json", "isolated-device-list", "--limit", "100", "--host", host,
                       "--lifecycle", "any")  # fmt: skip
        return {d["pci_address"]: d for d in out["devices"]}

    def free(pci: str) -> bool:
        d = devices().get(pci)
        return d is not None and d.get("lifecycle") == "free" and d.get("guest_id") is None

    def clean(pci: str) -> bool:
        row = kernel_vf(sim, pci)
        return row.mac is None and row.vlan == 0 and bound_driver(sim, pci) != "vfio-pci"

    eventually(lambda: sum(d.get("lifecycle") == "free" for d in devices().values()) == 15,
               "the host's 15 VFs clean and free", 90)  # fmt: skip

    # create -> ready, with what a VM manager needs, read back from the host
    placed = sriovctl("--json", "server-create", "g1", "--net", f"sriov-nic-model={CX5};vlan=100")
    [a] = placed["assignments"]
    assert a["prepared"] == "ready" and a["config"]["vlan"] == 100, a
    assert a["config"]["driver"] == "vfio-pci" and isinstance(a["iommu_group"], int), a
    mac, pci = a["config"]["mac"], a["pci_address"]
    assert int(mac[:2], 16) & 0b11 == 0b10, mac  # locally administered, unicast
    row = kernel_vf(sim, pci)
    assert (row.mac, row.vlan, bound_driver(sim, pci)) == (mac, 100, "vfio-pci")

    # attach a second VF to the same guest
    attached = sriovctl("--json", "server-attach-network", "g1", f"sriov-nic-model={I350}")
    [b] = attached["assignments"]
    assert b["prepared"] == "ready" and b["host_id"] == host and b["config"]["mac"] != mac, b

    # drift: the VLAN changed behind hostd's back at the PF is put back, and said so
    sim.ip_link_set_vf(pci, vlan=7)
    eventually(lambda: kernel_vf(sim, pci).vlan == 100, "hostd to put VLAN 100 back", 10)
    eventually(lambda: "drifted (vlan)" in stack.log("hostd-1"), "hostd to report the drift", 5)

    # release -> clean (read back) -> offered again (placed by its id)
    sriovctl("server-release", "g1")
    for vf in (pci, b["pci_address"]):
        eventually(lambda vf=vf: clean(vf) and free(vf), f"{vf} cleaned and free", 20)
    again = sriovctl("--json", "server-create", "g2", "--net", f"sriov-nic-id={a['device_id']}")
    assert again["assignments"][0]["pci_address"] == pci
    sriovctl("server-release", "g2")
    eventually(lambda: free(pci), f"{pci} free after g2", 20)

    # expiry -> cleaned
    short = sriovctl("--json", "server-create", "g3", "--net", f"sriov-nic-model={CX5}",
                     "--ttl", "4")  # fmt: skip
    expiring = short["assignments"][0]["pci_address"]
    assert bound_driver(sim, expiring) == "vfio-pci"
    eventually(lambda: clean(expiring) and free(expiring), "the expired VF cleaned", 30)
    assert placement_events(stack, "g3") == ["Reserved", "Ready", "Expired"]

    # a VF whose restore fails is quarantined, never placed, until vf-reset after a repair
    q = sriovctl("--json", "server-create", "g4", "--net", f"sriov-nic-id={a['device_id']}")
    assert q["assignments"][0]["prepared"] == "ready"
    sim.inject_fault(pci, "IFLA_VF_MAC", errno.EIO)
    sriovctl("server-release", "g4")
    eventually(lambda: devices()[pci].get("lifecycle") == "quarantined", "quarantine", 20)
    refused = sriovctl("server-create", "g5", "--net", f"sriov-nic-id={a['device_id']}",
                       check=False)  # fmt: skip
    assert refused.returncode != 0 and "quarantined" in refused.stdout + refused.stderr
    sim.inject_fault(pci, "IFLA_VF_MAC", None)
    sriovctl("vf-reset", "--host", host, "--pci", pci)
    eventually(lambda: clean(pci) and free(pci), "the reset VF clean and free", 20)

    # set-numvfs: refused while a guest holds a VF of the PF, forced -> the guest's VF is lost
    held = sriovctl("--json", "server-create", "g6", "--net", f"sriov-nic-model={I350}")
    pf = held["assignments"][0]["pf_ifname"]
    busy = sriovctl("host-set-numvfs", "--host", host, "--pf", pf, "--num", "4", check=False)
    assert busy.returncode != 0 and "g6" in busy.stdout + busy.stderr
    sriovctl("host-set-numvfs", "--host", host, "--pf", pf, "--num", "4", "--force")
    eventually(lambda: "Lost" in placement_events(stack, "g6"), "g6's VF lost", 20)
    assert sriovctl("server-show", "g6", check=False).returncode != 0

    # drain: waits, naming the guest that blocks it, and ends once it lets go
    sriovctl("server-create", "g7", "--net", f"sriov-nic-model={CX5}")
    drain = subprocess.Popen(
        [SRIOVCTL, "host-drain", "--host", host, "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=stack.env(),
    )  # fmt: skip
    assert drain.stderr is not None
    assert "waiting for 1 guest(s): g7" in drain.stderr.readline()
    refused = sriovctl("server-create", "g8", "--net", f"sriov-nic-model={CX5}", check=False)
    assert refused.returncode != 0 and "cordon" in refused.stdout + refused.stderr
    sriovctl("server-release", "g7")
    out, err = drain.communicate(timeout=60)
    assert drain.returncode == 0, out + err
    sriovctl("host-uncordon", "--host", host)
    sriovctl("server-create", "g8", "--net", f"sriov-nic-model={CX5}", "--no-wait")
