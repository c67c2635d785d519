"""Reading sysfs under a root passed in (``/sys`` on a host, a simulated tree in tests).

Every failure becomes a :class:`SysfsError` naming the path and what was wrong (missing,
dangling link, unparsable), so discovery can turn it into a per-device error instead of
crashing. String paths and ``os`` calls, not pathlib: discovery reads thousands of small
files and must stay well under 100 ms for 512 VFs.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from sriov.common.errors import SysfsError

ARPHRD_ETHER, ARPHRD_INFINIBAND = 1, 32


class Sysfs:
    """A sysfs tree at ``root``; no module-level state."""

    def __init__(self, root: str | Path = "/sys") -> None:
        self.root = os.path.abspath(str(root))

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def pci_device(self, address: str) -> str:
        return self.path("bus", "pci", "devices", address)

    def net(self, ifname: str) -> str:
        return self.path("class", "net", ifname)

    # --- primitives ---------------------------------------------------------------------------
    def read(self, path: str) -> str:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                return f.read().strip()
        except FileNotFoundError:
            raise SysfsError(f"{path} is missing", path=path) from None
        except OSError as exc:
            raise SysfsError(f"cannot read {path}: {_reason(exc)}", path=path) from None

    def read_opt(self, path: str) -> str | None:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                return f.read().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SysfsError(f"cannot read {path}: {_reason(exc)}", path=path) from None

    def read_bytes(self, path: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise SysfsError(f"{path} is missing", path=path) from None
        except OSError as exc:
            raise SysfsError(f"cannot read {path}: {_reason(exc)}", path=path) from None

    def read_int(self, path: str, base: int = 10) -> int:
        text = self.read(path)
        try:
            return int(text, base)
        except ValueError:
            raise SysfsError(f"{path} holds {text!r}, not a number", path=path) from None

    def read_hex_id(self, path: str) -> str:
        """``0x15b3`` -> ``15b3``."""
        text = self.read(path)
        try:
            return f"{int(text, 16):04x}"
        except ValueError:
            raise SysfsError(f"{path} holds {text!r}, not a hex id", path=path) from None

    def link_target(self, path: str) -> str | None:
        """Absolute target of a symlink (None if no link); error if it dangles.

        ``path``'s directory must be a real path (no symlinks), as sysfs links are relative
        to where they really live."""
        try:
            target = os.readlink(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise SysfsError(f"{path} is not a symlink", path=path) from None
            raise SysfsError(f"cannot read link {path}: {_reason(exc)}", path=path) from None
        full = os.path.normpath(os.path.join(os.path.dirname(path), target))
        if not os.path.exists(full):
            raise SysfsError(
                f"{path} is a dangling link: its target {full} does not exist", path=path
            )
        return full

    def link_name(self, path: str) -> str | None:
        """Basename of a symlink's target (``driver`` -> ``mlx5_core``)."""
        target = self.link_target(path)
        return os.path.basename(target) if target else None

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise SysfsError(f"cannot list {path}: {_reason(exc)}", path=path) from None

    def write(self, path: str, value: str) -> None:
        """Write a sysfs attribute; the kernel's errno becomes a readable error."""
        try:
            with open(path, "w", encoding="ascii") as f:
                f.write(value)
        except FileNotFoundError:
            raise SysfsError(f"{path} is missing", path=path) from None
        except OSError as exc:
            raise SysfsError(
                f"writing {value!r} to {path} failed: {_reason(exc)}",
                path=path,
                errno=exc.errno or 0,
            ) from None


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def link_state(operstate: str | None, carrier: str | int | bool | None) -> str:
    """Kernel operstate (+ carrier) -> ``up`` / ``down`` / ``unknown``."""
    op = (operstate or "").lower()
    if op == "up":
        return "up"
    if op in ("down", "lowerlayerdown", "notpresent", "dormant", "testing"):
        return "down"
    if carrier in ("1", 1, True):
        return "up"
    if carrier in ("0", 0, False):
        return "down"
    return "unknown"
