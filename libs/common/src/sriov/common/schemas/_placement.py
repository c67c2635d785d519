"""Placement requests, replies and events (the scheduler's contract)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

from sriov.common.schemas._base import Message, Model, utcnow

NumaPolicy = Literal["required", "preferred", "none"]
Packing = Literal["spread", "pack"]


class NetRequest(Model, kw_only=True):
    """One net of a request, in the guide's netdesc form.

    ``desc`` is what ``climc server-create --net`` takes: ``sriov-nic-model=<model>`` or
    ``sriov-nic-id=<vf id>``, optionally followed by ``:<network id or wire>``.
    """

    desc: str
    """e.g. ``sriov-nic-model=I350 Ethernet Controller Virtual Function``."""


class PlaceRequest(Message, kw_only=True, tag="placement.place.v1"):
    request_id: str
    """Idempotency key: a retried request with the same id gets the same answer."""
    guest_id: str
    nets: list[NetRequest]
    host_id: str | None = None
    """Only consider this host."""
    numa_policy: NumaPolicy = "none"
    numa_node: int | None = None
    """The guest's NUMA node, for ``required``/``preferred``."""
    packing: Packing = "spread"
    """Across PFs of the chosen host: spread over PFs or pack onto the fullest."""
    ttl_s: float | None = None
    """Unconfirmed reservations expire after this; the scheduler's default when unset."""


class AttachRequest(Message, kw_only=True, tag="placement.attach.v1"):
    """Add a VF to an existing guest on its host (``server-attach-network``)."""

    request_id: str
    guest_id: str
    net: NetRequest
    host_id: str | None = None
    """The guest's host, needed only when the guest holds no VF yet (so its host is unknown)."""
    ttl_s: float | None = None
    """Unconfirmed reservations expire after this; the scheduler's default when unset."""


class ReleaseRequest(Message, kw_only=True, tag="placement.release.v1"):
    """Release one VF (``device_id``) or every VF of the guest; idempotent."""

    request_id: str
    guest_id: str
    device_id: str | None = None


class ConfirmRequest(Message, kw_only=True, tag="placement.confirm.v1"):
    """The guest really started: its reservations no longer expire."""

    request_id: str
    guest_id: str


class GetRequest(Message, kw_only=True, tag="placement.get.v1"):
    guest_id: str


class Assignment(Model, kw_only=True):
    device_id: str
    host_id: str
    pci_address: str
    addr: str
    model: str
    vendor_device_id: str
    pf_pci_address: str
    pf_ifname: str | None = None
    numa_node: int = -1
    wire: str | None = None
    net: str = ""
    """The netdesc this VF satisfies."""
    state: Literal["reserved", "confirmed"] = "reserved"
    expires_at: dt.datetime | None = None


class PlacementReply(Message, kw_only=True, tag="placement.reply.v1"):
    request_id: str
    guest_id: str
    host_id: str | None
    assignments: list[Assignment]
    """For place/attach: the VFs reserved by this request; for get: all of the guest's."""
    released: list[str] = msgspec.field(default_factory=list)
    """For release: device ids released by this request (empty when nothing was held)."""


class ErrorInfo(Model, kw_only=True):
    code: str
    """Stable code: no_capacity, unknown_model, device_busy, host_offline, invalid_request..."""
    message: str
    details: dict[str, str | int | float | bool | None] = msgspec.field(default_factory=dict)


class PlacementEvent(Message, kw_only=True):
    request_id: str
    guest_id: str
    ts: dt.datetime = msgspec.field(default_factory=utcnow)
    seq: int = 0
    """The scheduler's commit sequence: an event caused by another (a release after its place,
    a VF placed again after its release) has a higher ``seq``, whatever order the stream holds
    them in (a batch republished after a partial failure lands out of order). Consumers that
    keep state order by it. 0 from a producer that does not number its events."""


class Reserved(PlacementEvent, kw_only=True, tag="placement.reserved.v1"):
    host_id: str
    assignments: list[Assignment]


class Confirmed(PlacementEvent, kw_only=True, tag="placement.confirmed.v1"):
    device_ids: list[str]


class Released(PlacementEvent, kw_only=True, tag="placement.released.v1"):
    device_ids: list[str]


class Expired(PlacementEvent, kw_only=True, tag="placement.expired.v1"):
    device_ids: list[str]


class Lost(PlacementEvent, kw_only=True, tag="placement.lost.v1"):
    """A reserved VF disappeared or its host went offline: the guest must be told."""

    device_ids: list[str]
    reason: Literal["vf_removed", "host_offline"]
    host_id: str
    still_reserved: bool = False
    """True when the reservation is kept (``host_offline``: the guest may still run there, so
    its VFs are not handed to anyone else until it is released); False when it ended
    (``vf_removed``: the VF no longer exists and the guest holds it no more)."""


class Failed(PlacementEvent, kw_only=True, tag="placement.failed.v1"):
    """An asynchronous request failed; ``error`` is what a synchronous caller would get."""

    op: Literal["place", "attach", "release", "confirm"]
    error: ErrorInfo


PlacementEventT = Reserved | Confirmed | Released | Expired | Lost | Failed
PlacementRequestT = PlaceRequest | AttachRequest | ReleaseRequest | ConfirmRequest
