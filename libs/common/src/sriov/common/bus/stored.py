"""What the streams hold, read without a durable consumer: stream and consumer state, stored
messages, replays. For readiness checks, operators' tools and tests; services consume.

Answers are our own small records (no ``Optional`` juggling, no nats-py type outside this
package); a stream, consumer or message that does not exist is a :class:`BusError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api

from sriov.common.errors import BusError


@dataclass(frozen=True)
class StreamInfo:
    name: str
    messages: int
    first_seq: int
    last_seq: int
    leader: str | None = None
    """The server leading this stream in a cluster; None on a single server."""
    followers: tuple[str, ...] = ()
    lagging: tuple[str, ...] = ()
    """Followers offline or not caught up with the leader."""


@dataclass(frozen=True)
class ConsumerInfo:
    stream: str
    name: str
    durable: bool
    num_pending: int
    """Messages of the stream not yet delivered to this consumer."""
    num_ack_pending: int
    """Delivered, not yet acknowledged."""
    ack_floor: int
    """Stream sequence up to which every message is acknowledged."""
    num_redelivered: int = 0
    """Messages delivered more than once (ack wait passed, or a nak): a consumer that falls
    behind its ack wait shows here before it loops."""
    delivered: int = 0
    """Stream sequence of the last message delivered."""
    ack_wait_s: float = 0.0
    """How soon a delivery not acknowledged (nor kept in progress) is redelivered."""
    filter_subjects: tuple[str, ...] = ()
    """The subjects it reads; empty for the whole stream."""


@dataclass(frozen=True)
class StoredMessage:
    subject: str
    seq: int
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


async def stream_info(js: JetStreamContext, stream: str) -> StreamInfo:
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError as exc:
        raise BusError(f"no stream {stream}", stream=stream) from exc
    peers = (info.cluster.replicas or []) if info.cluster else []
    return StreamInfo(
        name=info.config.name or stream,
        messages=info.state.messages,
        first_seq=info.state.first_seq,
        last_seq=info.state.last_seq,
        leader=info.cluster.leader if info.cluster else None,
        followers=tuple(p.name or "" for p in peers),
        lagging=tuple(p.name or "" for p in peers if p.offline or not p.current),
    )


def _consumer(info: api.ConsumerInfo) -> ConsumerInfo:
    return ConsumerInfo(
        stream=info.stream_name,
        name=info.name,
        durable=bool(info.config.durable_name),
        num_pending=info.num_pending or 0,
        num_ack_pending=info.num_ack_pending or 0,
        ack_floor=info.ack_floor.stream_seq if info.ack_floor else 0,
        num_redelivered=info.num_redelivered or 0,
        delivered=info.delivered.stream_seq if info.delivered else 0,
        ack_wait_s=float(info.config.ack_wait or 0),
        filter_subjects=tuple(
            info.config.filter_subjects
            or ([info.config.filter_subject] if info.config.filter_subject else [])
        ),
    )


async def consumer_info(js: JetStreamContext, stream: str, name: str) -> ConsumerInfo:
    try:
        return _consumer(await js.consumer_info(stream, name))
    except nats.js.errors.NotFoundError as exc:
        raise BusError(f"no consumer {name} on stream {stream}", stream=stream) from exc


async def caught_up(js: JetStreamContext, stream: str, name: str, upto: int = 0) -> bool:
    """The consumer was handed, and acknowledged, every message of ``stream`` it reads up to
    sequence ``upto`` (default: all published before this call).

    ``num_pending`` is no proof of that: the server counts a new message for its consumers
    after it has acknowledged the publish, so right after a publish it can still read 0. The
    stream's last sequence is exact; a filtered consumer's ack floor stops at its own last
    message, so what lies past it is looked up by subject."""
    last = upto or (await stream_info(js, stream)).last_seq
    info = await consumer_info(js, stream, name)
    if info.num_ack_pending:
        return False
    if info.ack_floor >= last:
        return True
    for flt in info.filter_subjects or (">",):
        try:
            nxt = await js.get_msg(stream, info.ack_floor + 1, subject=flt, next=True)
        except nats.js.errors.NotFoundError:
            continue
        if (nxt.seq or 0) <= last:
            return False
    return True


async def consumers(js: JetStreamContext, stream: str) -> list[ConsumerInfo]:
    return [_consumer(info) for info in await js.consumers_info(stream)]


def _stored(raw: api.RawStreamMsg) -> StoredMessage:
    return StoredMessage(
        subject=raw.subject or "",
        seq=raw.seq or 0,
        data=raw.data or b"",
        headers=dict(raw.headers or {}),
    )


async def last_message(js: JetStreamContext, stream: str, subject: str) -> StoredMessage:
    try:
        return _stored(await js.get_last_msg(stream, subject))
    except nats.js.errors.NotFoundError as exc:
        raise BusError(f"stream {stream} holds no message on {subject}", stream=stream) from exc


async def history(js: JetStreamContext, stream: str, subject: str) -> AsyncIterator[StoredMessage]:
    """Every message of ``stream`` on ``subject`` (a filter), oldest first, up to the last one
    it held when called: one request per message, no consumer to create or clean up."""
    info = await stream_info(js, stream)
    seq = info.first_seq
    while info.messages and seq <= info.last_seq:
        try:
            msg = _stored(await js.get_msg(stream, seq, subject=subject, next=True))
        except nats.js.errors.NotFoundError:
            return
        if msg.seq > info.last_seq:
            return
        yield msg
        seq = msg.seq + 1


async def last_values(
    js: JetStreamContext, stream: str, filter_subject: str, idle_s: float
) -> AsyncIterator[tuple[str, bytes]]:
    """The current last value of every subject of a last-value stream, read by an ordered
    consumer: server-named, pushed to this connection's own inbox, never acked. It needs no
    ``MSG.NEXT`` or ``ACK`` permission, which would also reach other identities' durables."""
    if not (await stream_info(js, stream)).messages:
        return
    sub = await js.subscribe(
        filter_subject,
        stream=stream,
        ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
        inactive_threshold=30,
    )
    try:
        while True:
            try:
                m = await sub.next_msg(timeout=idle_s)
            except nats.errors.TimeoutError:
                return
            yield m.subject, m.data
            if m.metadata.num_pending == 0:
                return
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
