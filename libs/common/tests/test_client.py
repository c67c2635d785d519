"""Our nats-py client's fast paths behave as nats-py does (see sriov.common.bus.client)."""

from __future__ import annotations

import asyncio

import nats.aio.client
import nats.errors
import pytest
from nats.aio.msg import Msg

from sriov.common.bus.client import Client, Subscription, delivery_counts

HEADER_BLOCKS = [
    b"ce-id: a\r\nNats-Msg-Id: a\r\ntraceparent: 00-ab-cd-01\r\n\r\n",
    b"Name:Value\r\nTabbed:\tv \r\n  Padded  :  x  \r\n\r\n",
    b"bad name: skipped\r\nno-colon-line\r\n: empty name\r\nempty:\r\n\r\n",
    "caf\u00e9: non-ascii name skipped\r\nok: caf\u00e9\r\n\r\n".encode(),
    b"bad-utf8: \xff\xfe\r\nvt\x0bname: skipped\r\nfs\x1cname: skipped\r\n\r\n",
    b"Nats-Stream: S\r\nNats-Sequence: 7\r\nNats-Num-Delivered: 1\r\n\r\n",
    b"",
]


@pytest.mark.parametrize("raw", HEADER_BLOCKS)
def test_headers_parse_as_nats_py_parses_them(raw: bytes) -> None:
    assert Client._parse_header_lines(raw) == nats.aio.client.Client._parse_header_lines(raw)


async def test_next_msg_takes_queued_messages_in_order_and_still_times_out(
    nats_url: str,
) -> None:
    nc = Client()
    await nc.connect(nats_url)
    try:
        sub = await nc.subscribe("t.quick")
        assert isinstance(sub, Subscription)
        for i in range(5):
            await nc.publish("t.quick", b"m%d" % i, headers={"n": str(i)})
        await nc.flush()
        for _ in range(100):  # until the read loop queued all five
            if sub.pending_msgs == 5:
                break
            await asyncio.sleep(0.01)
        assert sub.pending_msgs == 5  # all queued: next_msg takes them without waiting
        got = [await sub.next_msg(timeout=0.5) for _ in range(5)]
        assert [(m.data, m.headers) for m in got] == [(b"m%d" % i, {"n": str(i)}) for i in range(5)]
        assert (sub.pending_msgs, sub.pending_bytes) == (0, 0)
        with pytest.raises(nats.errors.TimeoutError):  # empty: nats-py's waiting path
            await sub.next_msg(timeout=0.05)
        waiter = asyncio.ensure_future(sub.next_msg(timeout=2))
        await nc.publish("t.quick", b"later")
        assert (await waiter).data == b"later"
    finally:
        await nc.close()


async def test_delivery_counts_read_what_nats_py_metadata_reads(nats_url: str) -> None:
    nc = Client()
    await nc.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="COUNTS", subjects=["t.counts.>"])
        for i in range(3):
            await js.publish(f"t.counts.{i}", b"x")
        psub = await js.pull_subscribe("t.counts.>", durable="counts")
        first = await psub.fetch(3, timeout=2)
        await first[1].nak()
        again = await psub.fetch(1, timeout=2)
        seen = [(delivery_counts(m), m.metadata) for m in [*first, *again]]
        assert [c for c, _md in seen] == [(1, 1), (1, 2), (1, 3), (2, 2)]
        assert all(c == (md.num_delivered, md.sequence.stream) for c, md in seen)
    finally:
        await nc.close()
    # the v2 layout (domain, account hash) nats-py also reads, and what is no JetStream reply
    v2 = Msg(nc, subject="s", reply="$JS.ACK.dom.acchash.S.c.3.41.40.1764576000000000000.0.r")
    assert delivery_counts(v2) == (v2.metadata.num_delivered, v2.metadata.sequence.stream)
    assert delivery_counts(v2) == (3, 41)
    for reply in ("_INBOX.x", "$JS.ACK.S.c.1.2"):
        with pytest.raises(nats.errors.NotJSMessageError):
            delivery_counts(Msg(nc, subject="s", reply=reply))
