"""PCI configuration space: the capability lists ``lspci -v`` prints, parsed and built.

Discovery and the doctor read a function's ``config`` file to see what the hardware says
(an SR-IOV extended capability, ARI, ACS) rather than trusting what a driver exported; the
simulator builds the same bytes so the parsing is exercised on realistic layouts.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

CONFIG_SIZE = 4096
HEADER_SIZE = 64
EXT_START = 0x100

CAP_PM, CAP_VPD, CAP_MSI, CAP_VNDR, CAP_EXP, CAP_MSIX = 0x01, 0x03, 0x05, 0x09, 0x10, 0x11
EXT_AER, EXT_DSN, EXT_ACS, EXT_ARI, EXT_SRIOV = 0x0001, 0x0003, 0x000D, 0x000E, 0x0010
EXT_LTR, EXT_TPH, EXT_SECPCI = 0x0018, 0x0017, 0x0019

_STD_NAMES = {
    CAP_PM: "Power Management version 3",
    CAP_VPD: "Vital Product Data",
    CAP_MSI: "MSI: Enable- Count=1/1 Maskable+ 64bit+",
    CAP_VNDR: "Vendor Specific Information: Len=18 <?>",
    CAP_EXP: "Express Endpoint, MSI 00",
    CAP_MSIX: "MSI-X: Enable+ Count=64 Masked-",
}
_EXT_NAMES = {
    EXT_AER: "Advanced Error Reporting",
    EXT_DSN: "Device Serial Number",
    EXT_ACS: "Access Control Services",
    EXT_ARI: "Alternative Routing-ID Interpretation (ARI)",
    EXT_SRIOV: "Single Root I/O Virtualization (SR-IOV)",
    EXT_TPH: "Transaction Processing Hints",
    EXT_LTR: "Latency Tolerance Reporting",
}


@dataclass(frozen=True)
class Capability:
    offset: int
    cap_id: int
    extended: bool

    @property
    def name(self) -> str:
        names = _EXT_NAMES if self.extended else _STD_NAMES
        return names.get(self.cap_id, f"#{self.cap_id:02x}")

    def lspci(self) -> str:
        """The line ``lspci -v`` prints for it: ``Capabilities: [180] Single Root ...``."""
        return f"Capabilities: [{self.offset:x}] {self.name}"


@dataclass(frozen=True)
class SriovCap:
    """The SR-IOV extended capability's registers (PCIe base spec, 9.3.3)."""

    offset: int
    vf_enable: bool
    ari_hierarchy: bool
    initial_vfs: int
    total_vfs: int
    num_vfs: int
    first_vf_offset: int
    vf_stride: int
    vf_device_id: int


@dataclass(frozen=True)
class ConfigSpace:
    vendor_id: int
    device_id: int
    class_code: int
    capabilities: tuple[Capability, ...]
    sriov: SriovCap | None
    extended_readable: bool
    """False when only the 64-byte header could be read (not root, or a short file)."""

    def has(self, ext_id: int) -> bool:
        return any(c.extended and c.cap_id == ext_id for c in self.capabilities)

    def lspci(self) -> list[str]:
        return [c.lspci() for c in self.capabilities]


class ConfigSpaceError(ValueError):
    """The bytes are not a usable configuration space; the message says why."""


def parse(data: bytes) -> ConfigSpace:
    """Parse standard and extended capability lists; loops and bad pointers are errors."""
    if len(data) < HEADER_SIZE:
        raise ConfigSpaceError(f"only {len(data)} bytes of config space (need at least 64)")
    vendor, device = struct.unpack_from("<HH", data, 0)
    if vendor == 0xFFFF and device == 0xFFFF and not any(data[8:HEADER_SIZE]):
        raise ConfigSpaceError("config space reads all ones: the device is not responding")
    class_code = int.from_bytes(data[9:12], "little")
    caps: list[Capability] = []
    status = struct.unpack_from("<H", data, 6)[0]
    seen: set[int] = set()
    if status & 0x10 and len(data) >= 0x100:  # capabilities list present and readable
        ptr = data[0x34] & 0xFC
        while ptr:
            if ptr < 0x40 or ptr > 0xFC or ptr in seen:
                raise ConfigSpaceError(f"bad capability pointer {ptr:#x}")
            seen.add(ptr)
            caps.append(Capability(ptr, data[ptr], False))
            ptr = data[ptr + 1] & 0xFC
    sriov: SriovCap | None = None
    extended = len(data) >= CONFIG_SIZE
    if extended:
        off = EXT_START
        while off:
            if off < EXT_START or off > CONFIG_SIZE - 4 or off in seen:
                raise ConfigSpaceError(f"bad extended capability pointer {off:#x}")
            seen.add(off)
            header = struct.unpack_from("<I", data, off)[0]
            if header in (0, 0xFFFFFFFF):
                break
            cap_id, nxt = header & 0xFFFF, (header >> 20) & 0xFFC
            caps.append(Capability(off, cap_id, True))
            if cap_id == EXT_SRIOV:
                sriov = _parse_sriov(data, off)
            off = nxt
    return ConfigSpace(vendor, device, class_code, tuple(caps), sriov, extended)


def _parse_sriov(data: bytes, off: int) -> SriovCap:
    if off + 0x40 > len(data):
        raise ConfigSpaceError(f"SR-IOV capability at {off:#x} runs past the end")
    ctrl = struct.unpack_from("<H", data, off + 0x08)[0]
    initial, total, num = struct.unpack_from("<HHH", data, off + 0x0C)
    first, stride = struct.unpack_from("<HH", data, off + 0x14)
    vf_dev = struct.unpack_from("<H", data, off + 0x1A)[0]
    return SriovCap(
        off, bool(ctrl & 1), bool(ctrl & 0x10), initial, total, num, first, stride, vf_dev
    )


# --- building (the simulator) ------------------------------------------------------------------
@dataclass(frozen=True)
class SriovRegs:
    total_vfs: int
    num_vfs: int
    first_vf_offset: int
    vf_stride: int
    vf_device_id: int
    ari: bool = True


def build(
    vendor_id: int,
    device_id: int,
    class_code: int,
    std_caps: Sequence[tuple[int, int]],
    ext_caps: Sequence[tuple[int, int]],
    sriov: SriovRegs | None = None,
    *,
    is_vf: bool = False,
) -> bytes:
    """4096 bytes of config space with the capabilities given as ``(offset, id)`` lists, in
    the order ``lspci`` walks them. A VF's vendor/device registers read ``ffff`` (the spec
    says so; the kernel fills sysfs ``vendor``/``device`` from the PF)."""
    buf = bytearray(CONFIG_SIZE)
    struct.pack_into("<HH", buf, 0, 0xFFFF if is_vf else vendor_id, 0xFFFF if is_vf else device_id)
    struct.pack_into("<HH", buf, 4, 0x0406, 0x0010 if std_caps else 0)  # cmd, status
    buf[9:12] = class_code.to_bytes(3, "little")
    buf[0x0E] = 0x80 if not is_vf else 0  # header type 0, multi-function
    if std_caps:
        buf[0x34] = std_caps[0][0]
        for i, (off, cap) in enumerate(std_caps):
            buf[off] = cap
            buf[off + 1] = std_caps[i + 1][0] if i + 1 < len(std_caps) else 0
            if cap == CAP_EXP:
                struct.pack_into("<H", buf, off + 2, 0x0002)  # version 2, endpoint
    for i, (off, cap) in enumerate(ext_caps):
        nxt = ext_caps[i + 1][0] if i + 1 < len(ext_caps) else 0
        version = 1
        struct.pack_into("<I", buf, off, cap | (version << 16) | (nxt << 20))
        if cap == EXT_SRIOV and sriov is not None:
            ctrl = (1 if sriov.num_vfs else 0) | (0x10 if sriov.ari else 0)
            if sriov.num_vfs:
                ctrl |= 0x08  # VF memory space enable
            struct.pack_into("<I", buf, off + 0x04, 0x2 if sriov.ari else 0)  # capabilities
            struct.pack_into("<H", buf, off + 0x08, ctrl)
            struct.pack_into(
                "<HHH", buf, off + 0x0C, sriov.total_vfs, sriov.total_vfs, sriov.num_vfs
            )
            struct.pack_into("<HH", buf, off + 0x14, sriov.first_vf_offset, sriov.vf_stride)
            struct.pack_into("<H", buf, off + 0x1A, sriov.vf_device_id)
            struct.pack_into("<I", buf, off + 0x1C, 0x553)  # supported page sizes
            struct.pack_into("<I", buf, off + 0x20, 0x1)  # system page size 4K
    return bytes(buf)
