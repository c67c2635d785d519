"""The VF configurator end to end on a simulated host: real sysfs writes, real netlink
(veths in a namespace, a real watcher), the simulated PF driver at the one boundary."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path
from typing import Any

import pytest

from sriov.common.schemas import VfConfig, clean_config
from sriov.hostd.netview import LinkInfo
from sriov.hostd.nsock import async_iproute
from sriov.hostd.simulator import vftable
from sriov.hostd.simulator.kernel import apply_numvfs
from sriov.hostd.simulator.spec import guide
from sriov.hostd.simulator.tree import load_state
from sriov.hostd.sysfs import Sysfs
from sriov.hostd.vfconfig import VfConfigError, VfConfigurator, VfUnsupported
from sriov.hostd.vfconfig import driver as drv
from sriov.hostd.watcher import LinkWatcher

from .conftest import SimHost, make_host

CX5, I350 = "0000:0a:00.0", "0000:03:00.0"
GUEST = VfConfig(
    mac="fa:16:3e:00:00:01", vlan=100, qos=2, spoof_check=True, trust=True,
    link_state="enable", min_tx_rate=100, max_tx_rate=1000, driver="vfio-pci",
)  # fmt: skip


@pytest.fixture
def host(tmp_path: Path, netns: str) -> SimHost:
    return make_host(tmp_path, guide(), netns)


async def link(ns: str, ifname: str) -> Any | None:
    ipr: Any = async_iproute(ns)
    try:
        found = await ipr.link_lookup(ifname=ifname)
        return (await ipr.link("get", index=found[0]))[0] if found else None
    finally:
        ipr.close()


async def test_apply_full_config_then_restore_reads_back_clean(host: SimHost) -> None:
    cfg = VfConfigurator(str(host.root), host.netns)
    assert await link(host.netns, "eth1v0") is not None  # bound to mlx5_core: a netdev
    actual = await cfg.apply(CX5, 0, GUEST)
    assert actual == GUEST
    assert await cfg.read_vf(CX5, 0) == GUEST
    vf_addr = cfg.vf_address(CX5, 0)
    assert drv.current_driver(Sysfs(host.root), vf_addr) == "vfio-pci"
    assert await link(host.netns, "eth1v0") is None  # vfio-pci: the netdev went away
    assert (await cfg.read_vf(CX5, 1)) == clean_config("mlx5_core")  # neighbours untouched

    clean = await cfg.restore(CX5, 0)
    assert clean == clean_config("mlx5_core")
    assert await link(host.netns, "eth1v0") is not None  # back on its netdev driver
    override = Sysfs(host.root).read(os.path.join(Sysfs(host.root).pci_device(vf_addr),
                                                   "driver_override"))  # fmt: skip
    assert override == ""  # the default driver, not a pinned one


async def test_netdev_driver_gets_mac_and_link_on_its_netdev(host: SimHost) -> None:
    cfg = VfConfigurator(str(host.root), host.netns)
    want = VfConfig(mac="fa:16:3e:00:00:02", vlan=10, link_state="disable", driver="mlx5_core")
    assert await cfg.apply(CX5, 1, want) == want
    netdev = await link(host.netns, "eth1v1")
    assert netdev.get("address") == "fa:16:3e:00:00:02"
    assert netdev.get("carrier") == 0  # link forced down by the PF


async def test_a_killed_apply_converges_when_repeated(host: SimHost) -> None:
    """hostd killed between the bind and the MAC: the next apply does only what is left."""
    cfg = VfConfigurator(str(host.root), host.netns)
    sysfs = Sysfs(host.root)
    await drv.bind(sysfs, cfg.vf_address(CX5, 2), "vfio-pci")
    assert str((await cfg.plan(CX5, 2, GUEST))[0]) == "set vlan"  # bound, nothing else
    again = VfConfigurator(str(host.root), host.netns)  # a restarted hostd
    assert await again.apply(CX5, 2, GUEST) == GUEST


async def test_igb_refuses_min_rate_and_nothing_changes(host: SimHost) -> None:
    cfg = VfConfigurator(str(host.root), host.netns)
    with pytest.raises(VfUnsupported) as exc:
        await cfg.apply(I350, 0, VfConfig(min_tx_rate=10, max_tx_rate=100))
    assert exc.value.details["field"] == "min_tx_rate"
    assert await cfg.read_vf(I350, 0) == clean_config("igbvf")
    ok = VfConfig(mac="fa:16:3e:00:00:03", vlan=5, max_tx_rate=100, driver="vfio-pci")
    assert await cfg.apply(I350, 0, ok) == ok


async def test_drift_is_announced_to_the_watcher_and_repaired(host: SimHost) -> None:
    cfg = VfConfigurator(str(host.root), host.netns)
    await cfg.apply(CX5, 3, GUEST)
    seen: list[str] = []
    arrived = asyncio.Event()

    def on_link(info: LinkInfo) -> None:
        seen.append(info.ifname)
        if info.ifname == "eth1":
            arrived.set()

    watcher = LinkWatcher(lambda *_: None, lambda _: None, netns=host.netns, on_link=on_link)
    await watcher.start()
    task = asyncio.create_task(watcher.run())
    try:
        # as `ip link set eth1 vf 3 vlan 7` would, through the kernel boundary
        await asyncio.to_thread(vftable.ip_link_set_vf, str(host.root), "eth1", 3, vlan=7)
        await asyncio.wait_for(arrived.wait(), 5)
        assert (await cfg.read_vf(CX5, 3)).vlan == 7
        assert [str(a) for a in await cfg.plan(CX5, 3, GUEST)] == ["set vlan"]
        assert await cfg.apply(CX5, 3, GUEST) == GUEST
    finally:
        watcher.close()
        task.cancel()


async def test_a_netdev_changed_directly_is_put_back(host: SimHost) -> None:
    cfg = VfConfigurator(str(host.root), host.netns)
    want = VfConfig(mac="fa:16:3e:00:00:04", driver="mlx5_core")
    await cfg.apply(CX5, 4, want)
    await asyncio.to_thread(vftable.set_vf_veth, str(host.root), "eth1", 4, mac="02:aa:bb:cc:dd:ee")
    assert [str(a) for a in await cfg.plan(CX5, 4, want)] == ["netdev_mac fa:16:3e:00:00:04"]
    await cfg.apply(CX5, 4, want)
    assert (await link(host.netns, "eth1v4")).get("address") == "fa:16:3e:00:00:04"


async def test_a_restore_that_fails_is_reported_naming_the_setting(host: SimHost) -> None:
    cfg = VfConfigurator(str(host.root), host.netns, retries=2)
    await cfg.apply(CX5, 5, GUEST)
    vftable.inject_fault(str(host.root), "eth1", 5, "IFLA_VF_MAC", errno.EIO)
    with pytest.raises(VfConfigError) as exc:
        await cfg.restore(CX5, 5)
    assert exc.value.details["field"] == "mac" and exc.value.details["errno"] == errno.EIO
    left = await cfg.read_vf(CX5, 5)
    assert left.mac == GUEST.mac and left.vlan == 0  # VLAN was reset first, MAC was not
    vftable.inject_fault(str(host.root), "eth1", 5, "IFLA_VF_MAC", None)
    assert await cfg.restore(CX5, 5) == clean_config("mlx5_core")  # the operator's reset


async def test_busy_is_retried_like_the_cni_does(host: SimHost) -> None:
    cfg = VfConfigurator(str(host.root), host.netns, retries=3)
    vftable.inject_fault(str(host.root), "eth1", 6, "IFLA_VF_TRUST", errno.EBUSY)

    async def clear_soon() -> None:
        await asyncio.sleep(0.15)
        vftable.inject_fault(str(host.root), "eth1", 6, "IFLA_VF_TRUST", None)

    clearing = asyncio.create_task(clear_soon())
    assert (await cfg.apply(CX5, 6, VfConfig(trust=True))).trust is True
    await clearing


async def test_vfio_missing_is_an_error_with_the_fix(host: SimHost) -> None:
    cfg = VfConfigurator(str(host.root), host.netns, settle_s=0.3)
    os.rename(Path(host.root, "bus/pci/drivers/vfio-pci"), Path(host.root, "vfio-gone"))
    with pytest.raises(VfConfigError, match="modprobe vfio-pci"):
        await cfg.apply(CX5, 7, GUEST)


def test_changing_numvfs_forgets_the_vf_table(host: SimHost) -> None:
    root = str(host.root)
    vftable.ip_link_set_vf(root, "eth1", 0, vlan=9)
    assert load_state(root).vf_table[CX5][0].vlan == 9
    apply_numvfs(root, CX5, 4)
    assert CX5 not in load_state(root).vf_table
    msg = vftable.getlink(root, "eth1")
    assert len(msg.get_attr("IFLA_VFINFO_LIST").get_attrs("IFLA_VF_INFO")) == 4
