"""Durable pull consumers: ack after the handler, bounded concurrency, retry, dead letter.

Two kinds of failure, two policies. A handler that raises :class:`Unavailable` says a
dependency (PostgreSQL, NATS, OVSDB) is away, not that the message is bad: the message is
kept (``in_progress``, so it is not redelivered elsewhere) and handled again after back-off
until the dependency answers, without spending its deliveries; an outage of any length
dead-letters nothing; a batch waits the same way, whole. Any other failure is the message's:
it is naked with back-off and dead-lettered after ``max_deliver`` deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry.trace import Link, SpanKind, get_current_span

from sriov.common import subjects as subj
from sriov.common import telemetry
from sriov.common.errors import BusError, InvalidRequest, Unavailable, UnknownMessageType
from sriov.common.schemas import Codec

from .client import delivery_counts
from .headers import (
    HDR_DL_CONSUMER,
    HDR_DL_DELIVERED,
    HDR_DL_REASON,
    HDR_DL_SUBJECT,
    HDR_MSG_ID,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
BatchHandler = Callable[[list[tuple[T, "Delivery"]]], Awaitable[None]]
UNAVAILABLE_RETRY_S = 60
"""How long a durable's creation waits out a JetStream that answers "unavailable" (503)."""


@dataclass
class Delivery:
    """What a handler sees besides the decoded message."""

    subject: str
    headers: Mapping[str, str]
    num_delivered: int
    stream_seq: int

    @property
    def event_id(self) -> str | None:
        return self.headers.get("ce-id") or self.headers.get(HDR_MSG_ID)


@dataclass
class ConsumerSpec:
    stream: str
    durable: str
    filter_subjects: list[str]
    max_deliver: int = 5
    ack_wait_s: float = 10
    """How soon a delivery lost with a NATS node, or held by a killed or frozen replica, comes
    back. Work slower than this is kept in progress (``_in_progress``), not redelivered."""
    max_ack_pending: int = 1000
    concurrency: int = 16
    batch: int = 100
    batches_in_flight: int = 1
    """Batches handled at once (with a ``batch_handler``). More than one lets the handler's
    own CPU overlap the database's work on the previous batch; only for handlers already
    safe against another replica handling a neighbouring batch at the same time."""
    deliver_all: bool = True
    backoff_s: Sequence[float] = (0.2, 1, 5)
    replay_last: bool = False
    """Start afresh from the last message of each subject (a last-value stream's current
    state), then follow: an existing durable of this name is deleted first, so a restarted
    process replays current state instead of resuming where it acknowledged."""


@dataclass
class ConsumerStats:
    handled: int = 0
    unknown: int = 0
    dead_lettered: int = 0
    malformed: int = 0
    """Of ``dead_lettered``: payloads that did not decode."""
    retried: int = 0
    waited: int = 0
    """Handlings that found a dependency unavailable (retried in place, not counted)."""
    last_error: str = ""
    extra: dict[str, int] = field(default_factory=dict)


async def consume(
    js: JetStreamContext,
    spec: ConsumerSpec,
    decoder: Codec[T],
    handler: Callable[[T, Delivery], Awaitable[None]],
    *,
    stop: asyncio.Event,
    stats: ConsumerStats,
    batch_handler: BatchHandler[T] | None,
) -> None:
    """The loop behind :meth:`Bus.consume` (documented there)."""
    cfg = ConsumerConfig(
        # ``name`` too: nats-py then creates through CONSUMER.CREATE.<stream>.<name>.<filter>,
        # the subject the generated permissions allow (the server checks name and filter).
        name=spec.durable,
        durable_name=spec.durable,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver + 1,  # our own dead-letter happens at max_deliver
        max_ack_pending=spec.max_ack_pending,
        deliver_policy=_deliver_policy(spec),
        filter_subjects=spec.filter_subjects if len(spec.filter_subjects) > 1 else None,
        filter_subject=spec.filter_subjects[0] if len(spec.filter_subjects) == 1 else None,
    )
    if spec.replay_last:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(spec.stream, spec.durable)
    psub = await _pull_subscribe(js, spec, cfg)
    sem = asyncio.Semaphore(spec.concurrency)
    batch_slots = asyncio.Semaphore(spec.batches_in_flight)
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Coroutine[Any, Any, None], slots: asyncio.Semaphore) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(lambda _t: slots.release())

    async def each(decoded: list[tuple[T, Msg]]) -> None:
        for i, item in enumerate(decoded):
            await _slot(sem, [m for _v, m in decoded[i:]], spec.ack_wait_s)
            spawn(_handle(js, item, spec, handler, stats, stop), sem)

    async def batch(decoded: list[tuple[T, Msg]], batch_handler: BatchHandler[T]) -> None:
        if not await _run_batch(batch_handler, decoded, stats, spec, stop):
            await each(decoded)

    try:
        while not stop.is_set():
            if batch_handler is not None:  # a free slot first: fetched messages never queue
                await batch_slots.acquire()
            msgs = await _fetch(psub, spec)
            if msgs is None:
                return
            decoded = [d for m in msgs if (d := await _decode(js, m, spec, decoder, stats))]
            if batch_handler is not None and decoded:
                spawn(batch(decoded, batch_handler), batch_slots)
                continue
            if batch_handler is not None:
                batch_slots.release()
            await each(decoded)
        while tasks:  # a batch's one-by-one fallback may add tasks while we wait
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:  # cancelled: handlers in flight stop too (unacked: redelivered)
            task.cancel()
        with contextlib.suppress(Exception):
            await psub.unsubscribe()


async def _fetch(psub: Any, spec: ConsumerSpec) -> list[Msg] | None:
    """The next batch (empty when none came in time); None once the connection is closed."""
    try:
        return list(await psub.fetch(spec.batch, timeout=0.5))
    except TimeoutError:  # nats' own and the builtin one (raised on some paths)
        return []
    except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
        return None
    except nats.errors.Error as exc:
        log.warning("fetch from %s failed: %s", spec.durable, exc)
        await asyncio.sleep(0.5)
        return []


async def _decode(
    js: JetStreamContext, m: Msg, spec: ConsumerSpec, decoder: Codec[T], stats: ConsumerStats
) -> tuple[T, Msg] | None:
    try:
        return decoder.decode(m.data), m
    except UnknownMessageType as exc:
        stats.unknown += 1
        log.warning("%s: ignoring %s on %s", spec.durable, exc, m.subject)
        await m.ack()
    except InvalidRequest as exc:
        stats.malformed += 1
        await _dead_letter(js, m, spec, f"malformed: {exc}", stats)
    return None


async def _run_batch(
    batch_handler: BatchHandler[T],
    decoded: list[tuple[T, Msg]],
    stats: ConsumerStats,
    spec: ConsumerSpec,
    stop: asyncio.Event,
) -> bool:
    """Handle a batch in one call; False: handle its messages one by one instead."""
    items = [(v, _delivery(m)) for v, m in decoded]
    msgs = [m for _v, m in decoded]
    # One span for the batch, linked to the producers' spans so traces stay connected; no
    # more links than a span keeps (7 µs each to extract: 500 a batch was 2.5 ms for nothing)
    links = [
        Link(ctx)
        for m in msgs[:MAX_LINKS]
        if (ctx := get_current_span(telemetry.extract(m.headers)).get_span_context()).is_valid
    ]
    waits = 0
    while True:
        try:
            with telemetry.tracer().start_as_current_span(
                "batch " + subj.template_of(msgs[0].subject), kind=SpanKind.CONSUMER, links=links
            ):
                async with _in_progress(msgs, spec.ack_wait_s):
                    await batch_handler(items)
            break
        except Unavailable as exc:  # the batch waits in place, whole, as a message does
            if not await _wait_out(msgs, spec, stats, stop, waits, exc, f"batch of {len(items)}"):
                return True
            waits += 1
        except TimeoutError as exc:
            # Slow (the database in a restart storm), not a poison message: one by one would
            # do the same work in hundreds of transactions, slower still. The whole batch
            # comes back after a back-off, until its last attempts, which go one by one (and
            # so reach the dead-letter path like any message).
            attempt = max(d.num_delivered for _v, d in items)
            if attempt >= spec.max_deliver - 1:
                log.warning("batch of %d timed out again; handling one by one", len(items))
                return False
            delay = spec.backoff_s[min(attempt - 1, len(spec.backoff_s) - 1)]
            log.warning("batch of %d timed out (%r); redelivered in %.1fs", len(items), exc, delay)
            stats.retried += len(items)
            stats.last_error = f"{type(exc).__name__}: {exc}"
            await _settle(msgs, functools.partial(Msg.nak, delay=delay))
            return True
        except Exception as exc:
            log.warning("batch of %d failed (%s); handling one by one", len(items), exc)
            return False
    await _settle(msgs, Msg.ack)
    stats.handled += len(items)
    return True


async def _settle(msgs: Sequence[Msg], op: Callable[[Msg], Awaitable[None]]) -> None:
    """``op`` (ack, nak, in progress) on each message in turn. Each only queues a line for the
    connection's flusher, so a task per message (``gather``) cost more than the acks: 8% of a
    scheduler's CPU in a restart storm. One that fails (the connection closing) is left to its
    redelivery, as an unacked message is."""
    for m in msgs:
        with contextlib.suppress(Exception):
            await op(m)


MAX_LINKS = 128
"""OpenTelemetry's default span link limit (``OTEL_SPAN_LINK_COUNT_LIMIT``)."""

IN_PROGRESS_MAX_S = 600.0
"""How long a batch or message may be kept in progress: beyond, a stuck replica lets another
take it. Time, not ack waits: the ack wait is short (it bounds how soon a delivery lost with
a NATS node or a killed replica comes back), the work may not be."""


@contextlib.asynccontextmanager
async def _in_progress(msgs: list[Msg], ack_wait_s: float) -> AsyncIterator[None]:
    """While the block runs, tell JetStream the messages are still being handled (``+WPI``)
    every third of the ack wait.

    A batch slower than the ack wait (a restart storm of large snapshots on a loaded machine)
    would otherwise be redelivered to another replica while this one still applies it, which
    then does the same work again, falls behind further and loops. A frozen or dead process
    sends nothing, so its messages are redelivered after one ack wait as before."""

    async def tell() -> None:
        for _ in range(max(1, int(IN_PROGRESS_MAX_S / (ack_wait_s / 3)))):
            await asyncio.sleep(ack_wait_s / 3)
            await _settle(msgs, Msg.in_progress)

    task = asyncio.create_task(tell())
    try:
        yield
    finally:
        task.cancel()


async def _wait_out(
    msgs: list[Msg],
    spec: ConsumerSpec,
    stats: ConsumerStats,
    stop: asyncio.Event,
    waits: int,
    exc: Unavailable,
    what: str,
) -> bool:
    """Keep messages whose handling found a dependency away (still ours: no delivery spent,
    no redelivery elsewhere) for the ``waits``-th back-off. False if the consumer stopped
    meanwhile: they are naked, for another replica or this one after its restart."""
    stats.waited += len(msgs)
    stats.last_error = f"{type(exc).__name__}: {exc}"
    pause = spec.backoff_s[min(waits, len(spec.backoff_s) - 1)]
    (log.warning if waits == 0 else log.debug)(
        "%s: %s waits for a dependency (retry %d in %ss): %s",
        spec.durable, what, waits + 1, pause, exc,
    )  # fmt: skip
    await _settle(msgs, Msg.in_progress)
    async with _in_progress(msgs, spec.ack_wait_s):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
    if stop.is_set():
        await _settle(msgs, Msg.nak)
        return False
    return True


async def _slot(sem: asyncio.Semaphore, queued: Sequence[Msg], ack_wait_s: float) -> None:
    """A handling slot. While every slot is busy (handlers waiting out an outage), the fetched
    messages still queued are kept ours, so their ack wait does not run out and spend a
    delivery on a redelivery elsewhere."""
    while True:
        if not sem.locked():
            await sem.acquire()
            return
        try:
            await asyncio.wait_for(sem.acquire(), ack_wait_s / 3)
            return
        except TimeoutError:
            await _settle(queued, Msg.in_progress)


async def _handle(
    js: JetStreamContext,
    item: tuple[T, Msg],
    spec: ConsumerSpec,
    handler: Callable[[T, Delivery], Awaitable[None]],
    stats: ConsumerStats,
    stop: asyncio.Event,
) -> None:
    value, m = item
    delivery = _delivery(m)
    template = subj.template_of(m.subject)
    with telemetry.messaging_span(template, m.subject, SpanKind.CONSUMER, m.headers) as span:
        waits = 0
        while True:
            try:
                async with _in_progress([m], spec.ack_wait_s):
                    await handler(value, delivery)
                break
            except InvalidRequest as exc:
                telemetry.record_error(span, exc)
                await _dead_letter(js, m, spec, f"rejected: {exc}", stats)
                return
            except Unavailable as exc:  # a dependency is away: not the message's fault
                if not await _wait_out([m], spec, stats, stop, waits, exc, m.subject):
                    return
                waits += 1
            except Exception as exc:
                telemetry.record_error(span, exc)
                stats.last_error = f"{type(exc).__name__}: {exc}"
                if delivery.num_delivered >= spec.max_deliver:
                    await _dead_letter(js, m, spec, f"failed {spec.max_deliver}x: {exc}", stats)
                    return
                stats.retried += 1
                idx = min(delivery.num_delivered - 1, len(spec.backoff_s) - 1)
                log.warning(
                    "%s: handling %s failed (attempt %d/%d), will retry: %s",
                    spec.durable, m.subject, delivery.num_delivered, spec.max_deliver, exc,
                )  # fmt: skip
                with contextlib.suppress(Exception):
                    await m.nak(delay=spec.backoff_s[idx])
                return
    await m.ack()
    stats.handled += 1


async def _dead_letter(
    js: JetStreamContext, m: Msg, spec: ConsumerSpec, reason: str, stats: ConsumerStats
) -> None:
    """Copy the message to the dead-letter stream with why, then stop redelivering it."""
    stats.dead_lettered += 1
    log.error("%s: dead-lettering %s: %s", spec.durable, m.subject, reason)
    headers = {
        HDR_DL_REASON: reason[:1000],
        HDR_DL_SUBJECT: m.subject,
        HDR_DL_CONSUMER: spec.durable,
        HDR_DL_DELIVERED: str(delivery_counts(m)[0]),
    }
    for k, v in (m.headers or {}).items():
        if k.startswith("ce-") or k == "traceparent":
            headers[k] = v
    dl = subj.dead_letter(spec.durable)
    try:
        await js.publish(dl.subject, m.data, headers=headers)
    except nats.errors.Error as exc:  # keep the message for redelivery instead
        log.error("dead-letter publish failed, leaving %s for redelivery: %s", m.subject, exc)
        with contextlib.suppress(Exception):
            await m.nak(delay=5)
        return
    await m.term()


def _deliver_policy(spec: ConsumerSpec) -> DeliverPolicy:
    if spec.replay_last:
        return DeliverPolicy.LAST_PER_SUBJECT
    return DeliverPolicy.ALL if spec.deliver_all else DeliverPolicy.NEW


def _delivery(m: Msg) -> Delivery:
    return Delivery(m.subject, m.headers or {}, *delivery_counts(m))


_CHECKED = ("filter_subject", "deliver_policy", "ack_policy", "max_deliver", "ack_wait",
            "max_ack_pending")  # fmt: skip


def _consumer_differences(cfg: ConsumerConfig, found: ConsumerConfig) -> list[str]:
    out = []
    if sorted(found.filter_subjects or []) != sorted(cfg.filter_subjects or []):
        got, want = found.filter_subjects, cfg.filter_subjects
        out.append(f"filter_subjects is {got!r}, expected {want!r}")
    for name in _CHECKED:
        got, want = getattr(found, name), getattr(cfg, name)
        if got != want:
            got, want = getattr(got, "value", got), getattr(want, "value", want)
            out.append(f"{name} is {got!r}, expected {want!r}")
    return out


async def _pull_subscribe(js: JetStreamContext, spec: ConsumerSpec, cfg: ConsumerConfig) -> Any:
    """Create-or-bind the durable; several replicas racing here all end up bound.

    A durable that exists with another configuration (someone redefined or pre-created it)
    is never bound silently: the start fails with a :class:`BusError` naming what differs.
    """
    where = f"durable consumer {spec.durable} on stream {spec.stream}"
    deadline = time.monotonic() + UNAVAILABLE_RETRY_S
    for _ in range(5 + UNAVAILABLE_RETRY_S):  # 5 binds, and a retry a second while unavailable
        try:
            await js.add_consumer(spec.stream, cfg)
        except nats.js.errors.NotFoundError as exc:
            raise BusError(f"cannot create {where}: no such stream", stream=spec.stream) from exc
        except (nats.js.errors.ServiceUnavailableError, TimeoutError) as exc:
            # 503 "JetStream system temporarily unavailable", or no answer: the cluster is
            # electing (a node restarted or cut off). Not a verdict on the durable: ask again.
            if time.monotonic() > deadline:
                if isinstance(exc, TimeoutError):
                    raise BusError(
                        f"JetStream did not answer creating {where} for "
                        f"{UNAVAILABLE_RETRY_S}s: may this identity create it?",
                        stream=spec.stream,
                    ) from exc
                raise BusError(
                    f"cannot create {where}: JetStream unavailable for {UNAVAILABLE_RETRY_S}s "
                    f"({getattr(exc, 'description', exc)})",
                    stream=spec.stream,
                ) from exc
            await asyncio.sleep(1.0)
            continue
        except nats.js.errors.APIError as exc:  # exists otherwise, or not allowed to change
            try:
                found = (await js.consumer_info(spec.stream, spec.durable)).config
            except nats.js.errors.NotFoundError:
                raise BusError(
                    f"cannot create {where}: {exc.description} (err_code {exc.err_code})",
                    stream=spec.stream,
                ) from exc
            if diffs := _consumer_differences(cfg, found):
                raise BusError(
                    f"{where} differs from what this service expects: {'; '.join(diffs)}. "
                    "Someone redefined it: delete it with the stream admin identity and restart",
                    stream=spec.stream,
                ) from exc
            # it exists as we define it (the create was refused for another reason): bind it
        try:
            return await js.pull_subscribe_bind(spec.durable, spec.stream)
        except nats.js.errors.NotFoundError:
            await asyncio.sleep(0.2)
    raise BusError(f"cannot bind {where}")
