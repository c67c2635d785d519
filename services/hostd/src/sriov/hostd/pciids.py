"""Model names from the system's pci.ids (hwdata), read lazily one vendor at a time.

The file is 1.3 MB; hostd needs a handful of vendors, so it indexes vendor lines once and
parses a vendor's block only when asked. VF models are shown as the guide's table shows
them: the bracketed part of the pci.ids name (``MT27800 Family [ConnectX-5 Virtual
Function]`` -> ``ConnectX-5 Virtual Function``), or the whole name when it has none.
"""

from __future__ import annotations

import re
from pathlib import Path

from sriov.common.errors import ConfigError

SYSTEM_PATHS = ("/usr/share/hwdata/pci.ids", "/usr/share/misc/pci.ids", "/usr/share/pci.ids")
_VENDOR = re.compile(rb"^([0-9a-f]{4})  (.*)$", re.M)
_BRACKET = re.compile(r"\[([^\[\]]+)\]\s*$")


def system_path() -> Path:
    for p in SYSTEM_PATHS:
        if Path(p).is_file():
            return Path(p)
    raise ConfigError(
        f"no pci.ids found (looked in {', '.join(SYSTEM_PATHS)}): install hwdata "
        "(apt-get install hwdata) or set pci_ids in host.conf"
    )


def short_model(name: str) -> str:
    """The bracketed part of a pci.ids name where there is one, else the name itself."""
    m = _BRACKET.search(name)
    return m.group(1).strip() if m else name.strip()


class PciIds:
    """Vendor and device names of one pci.ids file; build once, share, never mutated after."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else system_path()
        try:
            self._data = self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read pci.ids {self.path}: {exc.strerror}") from exc
        # vendor id -> (name, start of its device block, end of block)
        self._vendors: dict[str, tuple[str, int, int]] = {}
        matches = list(_VENDOR.finditer(self._data))
        for i, m in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(self._data)
            vid = m.group(1).decode()
            if vid == "ffff":  # "ffff  Illegal Vendor ID" ends the vendor list
                end = m.end()
            self._vendors[vid] = (m.group(2).decode("utf-8", "replace"), m.end(), end)
        self._devices: dict[str, dict[str, str]] = {}

    def vendor(self, vendor_id: str) -> str | None:
        entry = self._vendors.get(vendor_id.lower())
        return entry[0] if entry else None

    def device(self, vendor_id: str, device_id: str) -> str | None:
        """Full pci.ids device name (``MT27800 Family [ConnectX-5]``), None if unknown."""
        vid = vendor_id.lower()
        devices = self._devices.get(vid)
        if devices is None:
            devices = self._devices[vid] = self._parse_vendor(vid)
        return devices.get(device_id.lower())

    def _parse_vendor(self, vid: str) -> dict[str, str]:
        entry = self._vendors.get(vid)
        if entry is None:
            return {}
        _name, start, end = entry
        out: dict[str, str] = {}
        for raw in self._data[start:end].splitlines():
            # "\tdddd  name" is a device; "\t\tssss ssss  name" a subsystem (skipped)
            if raw.startswith(b"\t") and not raw.startswith(b"\t\t") and len(raw) > 7:
                out[raw[1:5].decode().lower()] = raw[7:].decode("utf-8", "replace").strip()
        return out

    def model(self, vendor_id: str, device_id: str, *, vf: bool = False) -> str:
        """The model string hostd reports; ``vendor:device`` when pci.ids does not know it."""
        name = self.device(vendor_id, device_id)
        if name is None:
            return f"{vendor_id}:{device_id}"
        return short_model(name) if vf else name
