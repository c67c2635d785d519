"""The VF lifecycle: what the scheduler wants of each VF, and what hostd made of it.

The scheduler owns desired state. It writes a :class:`VfDesired` in the same transaction as
the reservation (or the release, expiry or loss that ends it) and publishes it through its
outbox on one subject per VF in a last-value stream, so a restarted hostd replays exactly
the current desired state of its own host and of no other. hostd applies it (driver, MAC,
VLAN, rates, trust, spoof check, link state), reads the VF back and reports the outcome for
that ``revision`` as a ``VfApplied`` host event; the scheduler declares a placement ``ready``
once every VF of it is, and offers a released VF again only after hostd reported it ``clean``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from sriov.common.schemas._base import Message, Model
from sriov.common.schemas._limits import PciAddress, Reason, RequestId, Revision, Token
from sriov.common.schemas._vfconfig import VfConfig, clean_config

DesiredState = Literal["assigned", "clean"]
VfLifecycleState = Literal["free", "preparing", "ready", "cleaning", "quarantined"]
"""A VF as the scheduler sees it: offered only when ``free``."""


class VfDesired(Message, kw_only=True, tag="vf.desired.v1"):
    """What one VF should be now: prepared for a guest, or clean (released, expired, lost,
    or returned to service by an operator)."""

    host_id: Token
    pci_address: PciAddress
    device_id: str
    revision: Revision
    """Strictly increasing per VF (the scheduler's commit seq): hostd reports the revision it
    applied, so an outcome for an older revision is never taken for the current one."""
    state: DesiredState
    guest_id: Token | None = None
    """The guest the VF is prepared for (``assigned``); None when clean."""
    config: VfConfig = msgspec.field(default_factory=clean_config)
    """For ``clean``: the baseline, ``driver`` None (the VF's default driver)."""
    reset: bool = False
    """An operator returned a quarantined VF to service: hostd restores it once more."""


class HeldVf(Model, kw_only=True):
    guest_id: str
    device_id: str
    pci_address: str


class CordonRequest(Message, kw_only=True, tag="scheduler.cordon.v1"):
    """Cordon (no new placements on the host) or uncordon it; returns who still holds VFs
    there, so ``host-drain`` can wait for that list to empty."""

    host_id: Token
    cordoned: bool = True
    reason: Reason = ""


class CordonReply(Message, kw_only=True, tag="scheduler.cordon.reply.v1"):
    host_id: str
    cordoned: bool
    reason: str = ""
    held: list[HeldVf] = msgspec.field(default_factory=list)


class VfResetRequest(Message, kw_only=True, tag="scheduler.vf-reset.v1"):
    """Return a quarantined VF to service: hostd restores it again and reports it clean
    before the scheduler offers it."""

    request_id: RequestId
    host_id: Token
    pci_address: PciAddress


class VfResetReply(Message, kw_only=True, tag="scheduler.vf-reset.reply.v1"):
    host_id: str
    pci_address: str
    device_id: str
    state: VfLifecycleState
    revision: int
