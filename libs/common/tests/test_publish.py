"""The relay's publish path: nats-py's header block byte for byte, and JetStream's
acknowledgements and refusals through a real nats-server."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from sriov.common import outbox
from sriov.common import subjects as s
from sriov.common.bus import Bus
from sriov.common.bus.client import Client
from sriov.common.bus.publish import encode_headers
from sriov.common.errors import BusError, BusTimeout


async def _sent(headers: Any) -> bytes:
    """The protocol command a (never connected) client queues for one publish."""
    nc = Client()
    sent: list[bytes] = []

    async def capture(cmd: bytes, priority: bool = False) -> None:
        sent.append(cmd)

    nc._send_command = capture  # type: ignore[method-assign]
    nc._flush_queue = None
    await nc._send_publish("sriov.v1.x", "_INBOX.r.1", b"{}", 2, headers)
    return sent[0]


async def test_an_encoded_header_block_is_what_nats_py_would_send() -> None:
    headers = outbox.stored_headers(outbox.base_headers("sriov/test/1"), "device/d1/7", "t.v1")
    headers |= {"odd": "  a\r\nb ", " ": "an empty key is skipped", "traceparent": "00-ab-cd-01"}
    assert await _sent(encode_headers(headers)) == await _sent(headers)
    with pytest.raises(Exception, match="invalid header: 'no spaces please'"):
        encode_headers({"no spaces please": "x"})


async def test_a_batch_is_acknowledged_and_a_refusal_names_the_subject(bus: Bus) -> None:
    base = outbox.base_headers("sriov/test/1")
    batch = [
        (s.host_heartbeat(f"h{i}").subject, b'{"n": %d}' % i,
         outbox.stored_headers(base, f"e-{i}", "t.v1"))
        for i in range(300)
    ]  # fmt: skip
    await bus.js_publish_many(batch)
    await bus.js_publish_many(batch[:10])  # the same ids again: dropped, not an error
    assert (await bus.stream_info(s.STREAM_HOST_EVENTS)).messages == 300
    stored = [msg async for msg in bus.history(s.STREAM_HOST_EVENTS)]
    assert stored[7].headers is not None and stored[7].headers["ce-id"] == "e-7"

    too_big = (s.device_state("h1", "0000:3b:00.1").subject, b"x" * 70_000, batch[0][2])
    # refused at once and named (nats-py's own handler let the refusal escape: a timeout)
    with pytest.raises(BusError, match=re.escape(
            f"JetStream refused {too_big[0]} (70000 bytes): message size exceeds maximum allowed "
            "(err_code 10054)")):  # fmt: skip
        await asyncio.wait_for(bus.js_publish_many([batch[0], too_big]), 2)
    with pytest.raises(BusError, match=r"no JetStream stream accepted sriov\.v1\.nowhere"):
        await bus.js_publish_many([("sriov.v1.nowhere", b"{}", batch[0][2])])


async def test_acks_not_come_in_time_are_counted_then_forgotten(bus: Bus) -> None:
    """A batch waits for every acknowledgement within its timeout, says how many are
    missing, and forgets them (one that came later would settle nothing)."""
    base = outbox.base_headers("sriov/test/1")
    stored = [
        (s.host_heartbeat(f"h{i}").subject, b"{}", outbox.stored_headers(base, f"t-{i}", "t.v1"))
        for i in range(2)
    ]
    # a subject no stream takes but a subscriber receives and never answers: no ack, no 503
    async with bus.subscribe("t.silent"):
        silent = ("t.silent", b"{}", stored[0][2])
        with pytest.raises(BusTimeout, match=r"did not acknowledge 1 of 3 messages in 0\.3s"):
            await bus.js_publish_many([stored[0], silent, stored[1]], timeout=0.3)
    assert bus._acks._waiting == {}
    assert (await bus.stream_info(s.STREAM_HOST_EVENTS)).messages == 2
