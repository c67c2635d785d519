"""Turn changed devices and hosts into outbox rows: subject, payload, headers.

Headers are built once per transaction (CloudEvents attributes, the W3C trace context of
the span that made the change) and specialised per message; the event id, also the
``Nats-Msg-Id``, names the object and its revision, so relaying the same row twice after a
crash is dropped by JetStream's duplicate window and a consumer can tell versions apart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import NamedTuple

import msgspec

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import HDR_MSG_ID, event_headers
from sriov.inventory.model import DeviceRec, HostView

_DEVICE_TYPE = m.type_of(m.DeviceState)
_HOST_TYPE = m.type_of(m.HostState)
_TEMPLATE = m.HostState(host=m.HostInfo(host_id="-"), revision=0)
_encode_headers = msgspec.json.Encoder().encode


class OutboxRow(NamedTuple):
    subject: str
    payload: bytes
    headers: bytes


def device_event_id(device_id: str, revision: int) -> str:
    return f"device/{device_id}/{revision}"


def host_event_id(host_id: str, revision: int) -> str:
    return f"host/{host_id}/{revision}"


def outbox_rows(
    devices: Iterable[DeviceRec], hosts: Iterable[HostView], source: str
) -> list[OutboxRow]:
    """One row per announced device and host (their revisions already assigned)."""
    base = event_headers(_TEMPLATE, source, "-")
    base["ce-time"] = dt.datetime.now(dt.UTC).isoformat()
    rows: dict[str, OutboxRow] = {}
    for rec in devices:
        d = rec.device
        subject = subjects.device_state(d.host_id, d.pci_address).subject
        eid = device_event_id(d.id, rec.revision)
        msg = m.DeviceState(device=d, revision=rec.revision, removed=rec.removed)
        rows[subject] = OutboxRow(subject, m.encode(msg), _headers(base, eid, _DEVICE_TYPE))
    for view in hosts:
        h = view.host
        subject = subjects.host_state(h.host_id).subject
        eid = host_event_id(h.host_id, h.revision)
        msg_h = m.HostState(host=view.info(), revision=h.revision)
        rows[subject] = OutboxRow(subject, m.encode(msg_h), _headers(base, eid, _HOST_TYPE))
    return list(rows.values())


def _headers(base: dict[str, str], event_id: str, ce_type: str) -> bytes:
    h = dict(base)
    h["ce-id"] = event_id
    h[HDR_MSG_ID] = event_id
    h["ce-type"] = ce_type
    return _encode_headers(h)


def decode_headers(raw: bytes) -> dict[str, str]:
    return msgspec.json.decode(raw, type=dict[str, str])
