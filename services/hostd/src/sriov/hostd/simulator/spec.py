"""What a simulated host looks like: cards, ports, VF counts, NUMA, bonds, platform.

A spec is YAML (``sriov-hostd simulate --spec host.yaml``) or one of the built-in names:
``guide`` is the guide's example host (ConnectX-5 with 8 VFs and I350 with 7 VFs, host
``c48b1b8b-28a3-453a-863f-ddf7c62bcfe2``); ``models`` has one card of every supported
model including an InfiniBand ConnectX and a bonded offload pair.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import msgspec

from sriov.common.config import Settings, convert, load_yaml, locate
from sriov.common.errors import ConfigError
from sriov.hostd.simulator import models

GUIDE_HOST_ID = "c48b1b8b-28a3-453a-863f-ddf7c62bcfe2"
_SLOT = re.compile(r"^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})$")


class PortSpec(Settings, kw_only=True):
    ifname: str | None = None
    """PF netdev name (default ``eth<N>``, or ``ib<N>`` for InfiniBand)."""
    num_vfs: int = 0
    vfio: list[int] = msgspec.field(default_factory=list)
    """VF indexes bound to vfio-pci (no netdev), as for a VF passed to a guest."""
    unbound: list[int] = msgspec.field(default_factory=list)
    """VF indexes with no driver at all."""
    link: Literal["up", "down"] = "up"


class CardSpec(Settings, kw_only=True):
    model: str
    slot: str
    """PCI slot of function 0 without the function: ``0000:0a:00`` or ``0a:00``."""
    numa_node: int = 0
    link_type: Literal["ethernet", "infiniband"] = "ethernet"
    total_vfs: int | None = None
    """``sriov_totalvfs`` (firmware's NUM_OF_VFS for Mellanox); default: the model's."""
    ports: list[PortSpec] | None = None
    """One entry per PF; default: the model's port count with no VFs."""
    driver: bool = True
    """Whether the PF driver is bound."""
    sriov: bool = True
    """False simulates SR-IOV disabled in BIOS/firmware: no capability, no sriov_* files."""

    @property
    def domain_bus_dev(self) -> tuple[int, int, int]:
        m = _SLOT.match(self.slot)
        if m is None:
            raise ConfigError(f"slot {self.slot!r} is not DDDD:BB:DD or BB:DD")
        return int(m.group(1) or "0", 16), int(m.group(2), 16), int(m.group(3), 16)


class BondSpec(Settings, kw_only=True):
    name: str
    members: list[str]
    mode: Literal["active-backup", "balance-xor", "802.3ad"] = "active-backup"


class HostSpec(Settings, kw_only=True):
    host_id: str
    hostname: str = "simulated-host"
    cards: list[CardSpec] = msgspec.field(default_factory=list)
    bonds: list[BondSpec] = msgspec.field(default_factory=list)
    vf_ifname: str = "{pf}v{vf}"
    """VF netdev name template (``{pf}`` = PF ifname, ``{vf}`` = VF index)."""
    # platform
    iommu: Literal["intel", "amd", "off"] = "intel"
    cmdline: str | None = None
    """Kernel command line; default: what the guide asks for, for the chosen IOMMU."""
    kernel_log: list[str] | None = None
    vfio_pci: bool = True
    """vfio-pci driver available."""
    # host.conf written with --write-config
    networks: list[str] = msgspec.field(default_factory=list)
    sriov_nics: list[str] | None = None
    """Default: every PF with VFs."""
    ovs_offload_nics: list[str] = msgspec.field(default_factory=list)
    disable_security_group: bool = False
    num_vfs: dict[str, int] = msgspec.field(default_factory=dict)

    def default_cmdline(self) -> str:
        base = "BOOT_IMAGE=/vmlinuz root=/dev/mapper/root ro quiet"
        if self.iommu == "intel":
            return f"{base} intel_iommu=on iommu=pt"
        if self.iommu == "amd":
            return f"{base} amd_iommu=on iommu=pt"
        return base

    def default_kernel_log(self) -> list[str]:
        if self.iommu == "intel":
            return [
                "[    0.000000] Command line: " + (self.cmdline or self.default_cmdline()),
                "[    0.012345] DMAR: IOMMU enabled",
                "[    0.023456] DMAR: Host address width 46",
                "[    1.234567] DMAR: Intel(R) Virtualization Technology for Directed I/O",
            ]
        if self.iommu == "amd":
            return [
                "[    0.000000] Command line: " + (self.cmdline or self.default_cmdline()),
                "[    1.234567] AMD-Vi: AMD IOMMUv2 loaded and initialized",
                "[    1.234999] pci 0000:00:00.2: AMD-Vi: Found IOMMU cap 0x40",
            ]
        return ["[    0.000000] Command line: " + (self.cmdline or self.default_cmdline())]


def load_spec(name_or_path: str) -> HostSpec:
    """A built-in spec by name, or a YAML file (errors name file:line: key)."""
    builtin = BUILTIN.get(name_or_path)
    if builtin is not None:
        return builtin()
    path = Path(name_or_path)
    if not path.exists():
        raise ConfigError(
            f"spec {name_or_path!r} is neither a file nor a built-in spec "
            f"({', '.join(sorted(BUILTIN))})"
        )
    data, lines = load_yaml(path)
    spec = convert(data or {}, HostSpec, source=str(path), lines=lines)
    validate(spec, str(path), lines)
    return spec


def validate(spec: HostSpec, source: str = "spec", lines: dict | None = None) -> None:  # type: ignore[type-arg]
    lines = lines or {}
    for i, card in enumerate(spec.cards):
        where = locate(source, lines, ("cards", i))
        try:
            model = models.model(card.model)
            card.domain_bus_dev  # noqa: B018 - validates the slot
        except (KeyError, ConfigError) as exc:
            raise ConfigError(f"{where}: cards[{i}]: {exc.args[0]}") from None
        if card.link_type == "infiniband" and not model.infiniband:
            raise ConfigError(f"{where}: cards[{i}]: {model.key} has no InfiniBand mode")
        ports = card.ports or []
        if len(ports) > 8:
            raise ConfigError(f"{where}: cards[{i}]: at most 8 ports (PCI functions)")
        total = card.total_vfs if card.total_vfs is not None else model.total_vfs
        for j, port in enumerate(ports):
            if port.num_vfs < 0 or port.num_vfs > total:
                raise ConfigError(
                    f"{where}: cards[{i}].ports[{j}].num_vfs: {port.num_vfs} is not within "
                    f"0..{total} (sriov_totalvfs)"
                )
    names = [p for p in pf_ifnames(spec)]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"{source}: PF ifnames used twice: {', '.join(sorted(dup))}")


def ports_of(spec: HostSpec, card: CardSpec) -> list[PortSpec]:
    if card.ports is not None:
        return card.ports
    return [PortSpec() for _ in range(models.model(card.model).ports)]


def pf_ifnames(spec: HostSpec) -> list[str]:
    """PF netdev names in card/port order, with defaults filled in."""
    out: list[str] = []
    eth = ib = 0
    for card in spec.cards:
        for port in ports_of(spec, card):
            if port.ifname:
                out.append(port.ifname)
            elif card.link_type == "infiniband":
                out.append(f"ib{ib}")
                ib += 1
            else:
                eth += 1
                out.append(f"eth{eth}")
    return out


def host_conf_text(spec: HostSpec, extra: dict[str, object] | None = None) -> str:
    """A host.conf for the simulated host in the guide's layout."""
    import yaml

    sriov = spec.sriov_nics
    if sriov is None:
        names = pf_ifnames(spec)
        idx = 0
        sriov = []
        for card in spec.cards:
            for port in ports_of(spec, card):
                if port.num_vfs:
                    sriov.append(names[idx])
                idx += 1
    data: dict[str, object] = {"host_id": spec.host_id, "hostname": spec.hostname}
    if spec.networks:
        data["networks"] = list(spec.networks)
    data["sriov_nics"] = sriov
    if spec.ovs_offload_nics:
        data["ovs_offload_nics"] = list(spec.ovs_offload_nics)
    if spec.disable_security_group:
        data["disable_security_group"] = True
    if spec.num_vfs:
        data["num_vfs"] = dict(spec.num_vfs)
    data.update(extra or {})
    header = "# written by sriov-hostd simulate: the guide's host.conf keys plus hostd's own\n"
    return header + yaml.safe_dump(data, sort_keys=False)


def guide() -> HostSpec:
    """The guide's example host: its host.conf and its isolated-device-list table."""
    return HostSpec(
        host_id=GUIDE_HOST_ID,
        hostname="guide-host",
        cards=[
            CardSpec(
                model="ConnectX-5",
                slot="0000:0a:00",
                numa_node=0,
                total_vfs=64,
                ports=[PortSpec(ifname="eth1", num_vfs=8), PortSpec(ifname="eth3")],
            ),
            CardSpec(
                model="I350",
                slot="0000:03:00",
                numa_node=0,
                ports=[PortSpec(ifname="eth2", num_vfs=7), PortSpec(ifname="eth4")],
            ),
        ],
        networks=["eth1/br0/192.168.100.111", "eth2/br1/bcast1"],
        sriov_nics=["eth1", "eth2"],
    )


def every_model() -> HostSpec:
    """One card of each supported model, an InfiniBand ConnectX and an offload bond."""
    return HostSpec(
        host_id="sim-models",
        hostname="models-host",
        cards=[
            CardSpec(
                model="ConnectX-4 Lx",
                slot="0000:3b:00",
                numa_node=0,
                ports=[PortSpec(ifname="cx4lx0", num_vfs=4), PortSpec(ifname="cx4lx1")],
            ),
            CardSpec(
                model="ConnectX-5",
                slot="0000:5e:00",
                numa_node=0,
                total_vfs=16,
                ports=[PortSpec(ifname="cx5p0", num_vfs=4), PortSpec(ifname="cx5p1", num_vfs=2)],
            ),
            CardSpec(
                model="ConnectX-6 Dx",
                slot="0000:86:00",
                numa_node=1,
                ports=[PortSpec(ifname="cx6dx0", num_vfs=4), PortSpec(ifname="cx6dx1", num_vfs=4)],
            ),
            CardSpec(
                model="ConnectX-6 Lx",
                slot="0000:af:00",
                numa_node=1,
                ports=[PortSpec(ifname="cx6lx0", num_vfs=2), PortSpec(ifname="cx6lx1")],
            ),
            CardSpec(
                model="ConnectX-6",
                slot="0000:d8:00",
                numa_node=1,
                link_type="infiniband",
                total_vfs=8,
                ports=[PortSpec(ifname="ib0", num_vfs=2)],
            ),
            CardSpec(
                model="I350",
                slot="0000:03:00",
                numa_node=0,
                ports=[PortSpec(ifname="i350p0", num_vfs=7), PortSpec(ifname="i350p1")],
            ),
            CardSpec(
                model="X710",
                slot="0000:18:00",
                numa_node=0,
                ports=[PortSpec(ifname="x710p0", num_vfs=4), PortSpec(ifname="x710p1")],
            ),
            CardSpec(
                model="E810",
                slot="0000:17:00",
                numa_node=0,
                ports=[PortSpec(ifname="e810p0", num_vfs=4)],
            ),
        ],
        bonds=[BondSpec(name="bond0", members=["cx6dx0", "cx6dx1"], mode="802.3ad")],
        networks=["cx4lx0/br0/10.0.0.11", "bond0/br1/bcast0"],
        sriov_nics=["cx4lx0", "cx5p0", "cx5p1", "cx6lx0", "ib0", "i350p0", "x710p0", "e810p0"],
        ovs_offload_nics=["bond0"],
        disable_security_group=True,
    )


def bench(pfs: int = 4, vfs: int = 128) -> HostSpec:
    """``pfs`` single-port ConnectX-6 Dx with ``vfs`` VFs each (the discovery benchmark)."""
    cards = [
        CardSpec(
            model="ConnectX-6 Dx",
            slot=f"0000:{0x20 * (i + 1):02x}:00",
            numa_node=i % 2,
            total_vfs=vfs,
            ports=[PortSpec(ifname=f"eth{i + 1}", num_vfs=vfs)],
        )
        for i in range(pfs)
    ]
    return HostSpec(host_id="sim-bench", hostname="bench-host", cards=cards)


BUILTIN = {"guide": guide, "models": every_model, "bench": bench}
