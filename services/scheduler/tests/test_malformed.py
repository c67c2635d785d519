"""Malformed requests to the endpoints: a clear error naming the field, never a 500."""

from __future__ import annotations

import asyncio

import pytest

from sriov.common import subjects
from sriov.common.bus import raise_service_error
from sriov.common.errors import BusError, InvalidRequest


@pytest.mark.parametrize(
    ("endpoint", "payload", "field"),
    [
        ("place", b"{not json", "$"),
        ("place", b"", "$"),  # "empty body"
        ("place", b'{"type": "placement.place.v1", "guest_id": "g", "nets": [{"desc": "x"}]}',
         "request_id"),  # a missing field is named
        ("place", b'{"type": "placement.place.v1", "request_id": "r", "guest_id": "g", '
                  b'"nets": []}', "nets"),
        ("place", b'{"type": "placement.place.v1", "request_id": "r", "guest_id": "g", '
                  b'"nets": [{"desc": 5}]}', "$.nets[0].desc"),
        ("place", b'{"type": "placement.place.v1", "request_id": "r", "guest_id": "g", '
                  b'"nets": [{"desc": "sriov-nic-model=X"}], "packing": "tight"}', "$.packing"),
        ("place", b'{"type": "placement.place.v1", "request_id": "r", "guest_id": "a.b", '
                  b'"nets": [{"desc": "sriov-nic-model=X"}]}', "guest_id"),
        ("place", b'{"type": "placement.place.v1", "request_id": "r", "guest_id": "g", '
                  b'"nets": [{"desc": "sriov-nic-colour=red"}]}', "nets[0].desc"),
        ("attach", b'{"type": "placement.attach.v1", "request_id": "r", "guest_id": "g"}', "net"),
        ("release", b'{"type": "placement.get.v1", "guest_id": "g"}', "type"),
        ("get", b'{"type": "placement.get.v1", "guest_id": ""}', "guest_id"),
    ],
)  # fmt: skip
async def test_malformed_request(replica, bus, endpoint: str, payload: bytes, field: str) -> None:
    subject = subjects.endpoint(subjects.SCHEDULER_GROUP, endpoint).subject
    try:
        reply = await bus.request_raw(subject, payload, timeout=10)
    except BusError:  # "no responders" just after start-up: as Bus.request does, ask again
        await asyncio.sleep(0.1)
        reply = await bus.request_raw(subject, payload, timeout=10)
    with pytest.raises(InvalidRequest) as err:
        raise_service_error(reply.headers, reply.data)
    assert field in str(err.value.details.get("field", "")) or field in str(err.value)
    assert "Traceback" not in str(err.value) and "internal" not in str(err.value)
