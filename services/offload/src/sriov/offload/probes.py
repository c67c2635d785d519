"""Kernel questions the NIC checks ask: devlink eswitch mode and ethtool features.

:class:`SystemProbes` asks the kernel through pyroute2; the checks take any object with the
same two coroutines, so tests inject the answers a ConnectX card would give. A probe that
cannot answer raises :class:`ProbeError` carrying the evidence of why.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from pyroute2 import DL
from pyroute2.ethtool import Ethtool
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
from pyroute2.netlink.devlink import DEVLINK_NAMES, devlinkcmd
from pyroute2.netlink.exceptions import NetlinkError

#: ``DEVLINK_ATTR_ESWITCH_MODE`` values (include/uapi/linux/devlink.h).
ESWITCH_MODES = {0: "legacy", 1: "switchdev", 2: "switchdev_inline"}


class ProbeError(Exception):
    """The kernel could not answer; ``str()`` is the evidence."""


class Probes(Protocol):
    async def eswitch_mode(self, pci_address: str) -> str:
        """``legacy`` or ``switchdev`` for ``pci/<address>``."""
        ...

    async def features(self, ifname: str) -> dict[str, bool]:
        """ethtool feature name -> enabled (``hw-tc-offload`` among them)."""
        ...


class SystemProbes:
    """The real kernel, via pyroute2 (generic netlink devlink; ethtool ioctls)."""

    async def eswitch_mode(self, pci_address: str) -> str:
        return await asyncio.to_thread(_eswitch_mode, pci_address)

    async def features(self, ifname: str) -> dict[str, bool]:
        return await asyncio.to_thread(_features, ifname)


def _eswitch_mode(pci_address: str) -> str:
    try:
        dl = DL()
    except NetlinkError as exc:
        raise ProbeError(
            f"devlink is not available: the kernel has no 'devlink' generic netlink family "
            f"({exc.args[-1] if exc.args else exc}); no driver registered a devlink device"
        ) from exc
    except OSError as exc:
        raise ProbeError(f"cannot open a devlink socket: {exc}") from exc
    try:
        msg = devlinkcmd()
        msg["cmd"] = DEVLINK_NAMES["DEVLINK_CMD_ESWITCH_GET"]
        msg["version"] = 1
        msg["attrs"] = [
            ("DEVLINK_ATTR_BUS_NAME", "pci"),
            ("DEVLINK_ATTR_DEV_NAME", pci_address),
        ]
        replies = list(dl.nlm_request(msg, msg_type=dl.prid, msg_flags=NLM_F_REQUEST | NLM_F_ACK))
    except NetlinkError as exc:
        raise ProbeError(
            f"devlink dev eswitch show pci/{pci_address} failed: "
            f"{exc.args[-1] if exc.args else exc} (errno {exc.code})"
        ) from exc
    finally:
        dl.close()
    for reply in replies:
        mode = reply.get_attr("DEVLINK_ATTR_ESWITCH_MODE")
        if mode is not None:
            return ESWITCH_MODES.get(int(mode), f"unknown({mode})")
    raise ProbeError(f"devlink answered for pci/{pci_address} without an eswitch mode")


def _features(ifname: str) -> dict[str, bool]:
    eth = Ethtool()
    try:
        feats = eth.get_features(ifname)
    except Exception as exc:  # pyroute2 raises NoSuchDevice, OSError, ... per path taken
        raise ProbeError(f"ethtool -k {ifname} failed: {exc}") from exc
    finally:
        eth.close()
    return {name: bool(f.enable) for name, f in feats.features.items() if name}
