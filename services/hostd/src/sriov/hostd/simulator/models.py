"""The NIC models the simulator can build, with the numbers real cards use.

Each model carries its PCI ids, drivers, default port and VF counts, the capability layout
``lspci -v`` shows, and how its firmware numbers VFs (First VF Offset / VF Stride of the
SR-IOV capability), so simulated VF addresses are the ones a real host would have: a
ConnectX-5 at ``0a:00.0`` has VFs ``0a:00.2 .. 0a:01.1``; an I350 at ``03:00.0`` has
``03:10.0, 03:10.4 .. 03:13.0``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sriov.hostd import configspace as cs

CLASS_ETHERNET = 0x020000
CLASS_INFINIBAND = 0x020700
CLASS_PCI_BRIDGE = 0x060400

# capability layouts, as (offset, id) in the order lspci walks them
MLX_STD = (
    (0x60, cs.CAP_EXP),
    (0x48, cs.CAP_VPD),
    (0x9C, cs.CAP_MSIX),
    (0xC0, cs.CAP_VNDR),
    (0x40, cs.CAP_PM),
)
MLX_EXT = (
    (0x100, cs.EXT_AER),
    (0x150, cs.EXT_ARI),
    (0x180, cs.EXT_SRIOV),
    (0x1C0, cs.EXT_SECPCI),
    (0x230, cs.EXT_ACS),
    (0x320, 0x27),
    (0x370, 0x26),
    (0x420, 0x25),
)
MLX_VF_STD = ((0x60, cs.CAP_EXP), (0x9C, cs.CAP_MSIX))
MLX_VF_EXT = ((0x100, cs.EXT_AER),)
INTEL_STD = (
    (0x40, cs.CAP_PM),
    (0x50, cs.CAP_MSI),
    (0x70, cs.CAP_MSIX),
    (0xA0, cs.CAP_EXP),
    (0xE0, cs.CAP_VPD),
)
IGB_EXT = (
    (0x100, cs.EXT_AER),
    (0x140, cs.EXT_DSN),
    (0x150, cs.EXT_ARI),
    (0x160, cs.EXT_SRIOV),
    (0x1A0, cs.EXT_TPH),
    (0x1C0, cs.EXT_LTR),
    (0x1D0, cs.EXT_ACS),
)
I40E_EXT = (
    (0x100, cs.EXT_AER),
    (0x140, cs.EXT_DSN),
    (0x150, cs.EXT_ARI),
    (0x160, cs.EXT_SRIOV),
    (0x1A0, cs.EXT_TPH),
    (0x1B0, cs.EXT_ACS),
    (0x1D0, cs.EXT_SECPCI),
)
ICE_EXT = (
    (0x100, cs.EXT_AER),
    (0x148, cs.EXT_ARI),
    (0x150, cs.EXT_DSN),
    (0x160, cs.EXT_SRIOV),
    (0x1A0, cs.EXT_ACS),
    (0x1B0, cs.EXT_SECPCI),
    (0x1D0, 0x26),
    (0x200, 0x27),
)
INTEL_VF_STD = ((0x70, cs.CAP_MSIX), (0xA0, cs.CAP_EXP))
INTEL_VF_EXT = ((0x100, cs.EXT_AER), (0x150, cs.EXT_ARI), (0x1D0, cs.EXT_ACS))
ROOT_PORT_STD = ((0x40, cs.CAP_EXP), (0x80, cs.CAP_MSI), (0x90, cs.CAP_PM))
ROOT_PORT_EXT = ((0x100, cs.EXT_AER), (0x110, cs.EXT_ACS))

#: First VF Offset of port ``p`` of an ``n``-port card with ``total`` VFs per port.
Offset = Callable[[int, int, int], int]


def _after_pfs(first: int) -> Offset:
    """Firmware that packs each port's VFs after the PFs and the previous ports' VFs."""
    return lambda p, n, total: first - p + p * total


def _mlx(p: int, n: int, total: int) -> int:
    return n - p + p * total


@dataclass(frozen=True)
class CardModel:
    key: str
    vendor_id: int
    device_id: int
    vf_device_id: int
    pf_driver: str
    vf_driver: str
    total_vfs: int
    ports: int
    offset: Offset
    stride: int
    std_caps: tuple[tuple[int, int], ...]
    ext_caps: tuple[tuple[int, int], ...]
    vf_std_caps: tuple[tuple[int, int], ...]
    vf_ext_caps: tuple[tuple[int, int], ...]
    mac_oui: str
    ari: bool = True
    infiniband: bool = False
    """Can run its ports as InfiniBand (VPI cards)."""

    @property
    def mellanox(self) -> bool:
        return self.vendor_id == 0x15B3


def _mlx_model(key: str, device: int, vf_device: int, ports: int, ib: bool) -> CardModel:
    return CardModel(
        key,
        0x15B3,
        device,
        vf_device,
        "mlx5_core",
        "mlx5_core",
        8,
        ports,
        _mlx,
        1,
        MLX_STD,
        MLX_EXT,
        MLX_VF_STD,
        MLX_VF_EXT,
        "b8:59:9f",
        infiniband=ib,
    )


MODELS: dict[str, CardModel] = {
    m.key.lower(): m
    for m in (
        _mlx_model("ConnectX-4", 0x1013, 0x1014, 1, True),
        _mlx_model("ConnectX-4 Lx", 0x1015, 0x1016, 2, False),
        _mlx_model("ConnectX-5", 0x1017, 0x1018, 2, True),
        _mlx_model("ConnectX-6", 0x101B, 0x101C, 1, True),
        _mlx_model("ConnectX-6 Dx", 0x101D, 0x101E, 2, False),
        _mlx_model("ConnectX-6 Lx", 0x101F, 0x101E, 2, False),
        CardModel(
            "I350",
            0x8086,
            0x1521,
            0x1520,
            "igb",
            "igbvf",
            7,
            2,
            lambda p, n, total: 0x80,
            4,
            INTEL_STD,
            IGB_EXT,
            INTEL_VF_STD,
            INTEL_VF_EXT,
            "a0:36:9f",
            ari=False,
        ),
        CardModel(
            "X710",
            0x8086,
            0x1572,
            0x154C,
            "i40e",
            "iavf",
            64,
            2,
            _after_pfs(16),
            1,
            INTEL_STD,
            I40E_EXT,
            INTEL_VF_STD,
            INTEL_VF_EXT,
            "3c:fd:fe",
        ),
        CardModel(
            "E810",
            0x8086,
            0x1592,
            0x1889,
            "ice",
            "iavf",
            256,
            1,
            _after_pfs(8),
            1,
            INTEL_STD,
            ICE_EXT,
            INTEL_VF_STD,
            INTEL_VF_EXT,
            "b4:96:91",
        ),
    )
}

#: Kernel module behind each driver name (``/sys/bus/pci/drivers/<d>/module``).
MODULES = {"vfio-pci": "vfio_pci"}


def model(key: str) -> CardModel:
    found = MODELS.get(key.lower())
    if found is None:
        known = ", ".join(m.key for m in MODELS.values())
        raise KeyError(f"unknown card model {key!r}; known models: {known}")
    return found


def parse_pci(address: str) -> tuple[int, int, int, int]:
    """``0000:0a:00.1`` -> (domain, bus, device, function)."""
    dom, bus, rest = address.split(":")
    dev, fn = rest.split(".")
    return int(dom, 16), int(bus, 16), int(dev, 16), int(fn, 16)


def pci_address(domain: int, rid: int) -> str:
    return f"{domain:04x}:{rid >> 8:02x}:{(rid >> 3) & 0x1F:02x}.{rid & 7}"


def vf_address(pf_address: str, offset: int, stride: int, index: int) -> str:
    """The routing id arithmetic of the SR-IOV spec: VF n is at PF + offset + n * stride."""
    dom, bus, dev, fn = parse_pci(pf_address)
    rid = (bus << 8) | (dev << 3) | fn
    return pci_address(dom, rid + offset + stride * index)
