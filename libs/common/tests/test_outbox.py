"""Headers of a stored event: built once per transaction, specialised per event.

The relay itself runs against each service's real outbox table: services/scheduler/tests/
test_outbox.py (ordered log) and services/inventory/tests/test_state_stream.py (last value).
"""

from __future__ import annotations

import datetime as dt

from sriov.common.bus import HDR_MSG_ID
from sriov.common.outbox import base_headers, header_block, stored_block, stored_headers


def test_stored_headers_are_cloudevents_with_the_event_id_as_message_id() -> None:
    base = base_headers("sriov/test/1")
    h = stored_headers(base, "device/d1/7", "device.state.v1")
    assert h["ce-id"] == h[HDR_MSG_ID] == "device/d1/7"
    assert (h["ce-type"], h["ce-source"], h["ce-specversion"]) == (
        "device.state.v1", "sriov/test/1", "1.0"
    )  # fmt: skip
    assert h["ce-time"] == base["ce-time"] and h["content-type"] == "application/json"
    # an event stored earlier keeps the time it was committed; the base is not changed
    at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    later = stored_headers(base, "e2", "placement.reserved.v1", at)
    assert later["ce-time"] == "2026-01-02T02:04:05Z"  # UTC with Z, as payloads have it
    assert base["ce-time"].endswith("Z")
    assert base["ce-id"] == "-" and base["ce-time"] != later["ce-time"]


def test_a_stored_block_holds_exactly_the_stored_headers() -> None:
    """Inventory stores each state's headers encoded (shared part once per transaction): the
    block must carry the same headers, each once, as the dict nats-py would encode."""
    base = base_headers("sriov/test/1") | {
        "traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    }
    block = stored_block(header_block(base), "device/d1/7", "device.state.v1")
    lines = block.decode().split("\r\n")
    assert lines[0] == "NATS/1.0" and lines[-2:] == ["", ""]
    pairs = [line.split(": ", 1) for line in lines[1:-2]]
    assert len(pairs) == len({k for k, _v in pairs})  # no header twice
    assert dict(pairs) == stored_headers(base, "device/d1/7", "device.state.v1")
