"""The only module that imports ``nats``: connect, publish, consume, request, serve.

What it guarantees callers:

* every published message carries CloudEvents headers (``ce-*``), W3C trace context and,
  on JetStream, ``Nats-Msg-Id`` = the event id so the server drops duplicates;
* :meth:`Bus.consume` acks only after the handler returned (the effect is committed),
  bounds concurrency, naks failures with back-off, and after ``max_deliver`` attempts (or at
  once for a malformed message) copies the message to the dead-letter stream an operator
  can read, then terminates it; unknown message types are logged and acked;
* :class:`ServiceHost` wraps ``nats.micro``: domain errors become service errors with a
  stable code and a readable message, never a Python repr.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
import nats.micro
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.micro.request import Request, ServiceError
from nats.micro.service import EndpointConfig, Service, ServiceConfig
from opentelemetry.trace import Link, SpanKind, get_current_span

from sriov.common import subjects as subj
from sriov.common import telemetry
from sriov.common.errors import (
    BusError,
    BusTimeout,
    InvalidRequest,
    SriovError,
    UnknownMessageType,
    error_from_code,
)
from sriov.common.schemas import Codec, ErrorReply, Message, codec, encode, type_of

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

HDR_MSG_ID = "Nats-Msg-Id"
HDR_ERROR = "Nats-Service-Error"
HDR_ERROR_CODE = "Nats-Service-Error-Code"
HDR_SRIOV_CODE = "Sriov-Error-Code"


# --------------------------------------------------------------------------------------------
# Streams
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: list[str]
    description: str
    last_value: bool = False
    """Keep only the last message per subject (current state, not history)."""
    max_age_s: float = 0
    duplicate_window_s: float = 120


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(
        subj.STREAM_HOST_EVENTS,
        [subj.HOST_EVENTS_ALL],
        "hostd events: snapshots, VF/PF diffs, links, heartbeats, diagnostics",
        max_age_s=7 * 86400,
    ),
    StreamSpec(
        subj.STREAM_STATE,
        [subj.DEVICE_STATE_ALL, subj.HOST_STATE_ALL],
        "inventory's current device and host state, last value per subject",
        last_value=True,
    ),
    StreamSpec(
        subj.STREAM_PLACEMENT,
        [subj.PLACEMENT_EVENTS_ALL],
        "placement events: reserved, confirmed, released, expired, lost, failed",
        max_age_s=30 * 86400,
    ),
    StreamSpec(
        subj.STREAM_PLACEMENT_REQUESTS,
        [subj.PLACEMENT_REQUESTS_ALL],
        "asynchronous placement requests from other systems",
        max_age_s=7 * 86400,
    ),
    StreamSpec(
        subj.STREAM_OFFLOAD,
        [subj.OFFLOAD_EVENTS_ALL],
        "offload agent events: config changes, NIC checks, flow audits",
        max_age_s=7 * 86400,
    ),
    StreamSpec(
        subj.STREAM_DEAD_LETTER,
        [subj.DEAD_LETTER_ALL],
        "messages a consumer gave up on, with the reason in headers",
        max_age_s=30 * 86400,
    ),
)


def _stream_config(spec: StreamSpec, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=spec.subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_msgs_per_subject=1 if spec.last_value else -1,
        max_age=spec.max_age_s or None,
        discard=DiscardPolicy.OLD,
        duplicate_window=spec.duplicate_window_s,
        num_replicas=replicas,
        allow_direct=True,
    )


# --------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------
def event_headers(
    msg: Message, source: str, event_id: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """CloudEvents NATS binding + trace context for one message."""
    eid = event_id or str(uuid.uuid4())
    headers = {
        "ce-specversion": "1.0",
        "ce-id": eid,
        "ce-source": source,
        "ce-type": type_of(type(msg)),
        "ce-time": dt.datetime.now(dt.UTC).isoformat(),
        "content-type": "application/json",
        HDR_MSG_ID: eid,
    }
    if extra:
        headers.update(extra)
    return telemetry.inject(headers)


# --------------------------------------------------------------------------------------------
# Consumer
# --------------------------------------------------------------------------------------------
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
    ack_wait_s: float = 30
    max_ack_pending: int = 1000
    concurrency: int = 16
    batch: int = 100
    deliver_all: bool = True
    backoff_s: Sequence[float] = (0.2, 1, 5)


@dataclass
class ConsumerStats:
    handled: int = 0
    unknown: int = 0
    dead_lettered: int = 0
    malformed: int = 0
    """Of ``dead_lettered``: payloads that did not decode."""
    retried: int = 0
    last_error: str = ""
    extra: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# The bus
# --------------------------------------------------------------------------------------------
class Bus:
    """One NATS connection of a process, with JetStream; build it at start-up, pass it in."""

    def __init__(self, nc: Client, source: str) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.source = source

    @classmethod
    async def connect(
        cls,
        url: str | Sequence[str],
        *,
        name: str,
        source: str | None = None,
        user: str | None = None,
        password: str | None = None,
        creds_file: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        inbox_prefix: str | None = None,
        connect_timeout: float = 5,
        first_connect_attempts: int = 3,
    ) -> Bus:
        """Connect with reconnects forever after the first success; clear errors before."""
        servers = [url] if isinstance(url, str) else list(url)
        opts: dict[str, Any] = {
            "servers": servers,
            "name": name,
            "connect_timeout": connect_timeout,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "allow_reconnect": True,
            "error_cb": _log_error,
            "disconnected_cb": _log_event("disconnected from NATS"),
            "reconnected_cb": _log_event("reconnected to NATS"),
        }
        if user:
            opts["user"], opts["password"] = user, password
        if creds_file:
            opts["user_credentials"] = creds_file
        if inbox_prefix:
            opts["inbox_prefix"] = inbox_prefix
        if tls_ca or tls_cert:
            import ssl

            ctx = ssl.create_default_context(cafile=tls_ca)
            if tls_cert:
                ctx.load_cert_chain(tls_cert, tls_key)
            opts["tls"] = ctx
        last: BaseException | None = None
        # nats-py applies max_reconnect_attempts=-1 to the first connect too (it would retry
        # forever), so each first attempt is bounded here; reconnects later are unbounded.
        budget = connect_timeout * len(servers) + 1
        refused = asyncio.Event()
        refusals: list[BaseException] = []

        async def first_error(exc: Exception) -> None:
            # Bad credentials or TLS will not get better by retrying: fail at once.
            text = str(exc).lower()
            if "authorization" in text or "authentication" in text or "ssl" in text:
                refusals.append(exc)
                refused.set()
            await _log_error(exc)

        opts["error_cb"] = first_error
        for attempt in range(first_connect_attempts):
            nc = Client()
            try:
                await _race(nc.connect(**opts), refused, budget)
                if refusals:
                    raise refusals[0]
                nc._error_cb = _log_error  # after the first connect, only log
                return cls(nc, source or name)
            except Exception as exc:  # any first-connect failure becomes one clear BusError
                last = exc
                with contextlib.suppress(Exception):
                    await nc.close()
                if refusals:
                    last = refusals[0]
                    break
                await asyncio.sleep(min(2**attempt * 0.2, 2))
        where = ", ".join(_redact(s) for s in servers)
        raise BusError(
            f"cannot connect to NATS at {where}: {_describe(last)}. "
            "Check that nats-server is running and the URL, credentials and TLS settings.",
            url=where,
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.drain()
        with contextlib.suppress(Exception):
            await self.nc.close()

    # --- provisioning -----------------------------------------------------------------------
    async def ensure_streams(
        self, specs: Sequence[StreamSpec] = STREAMS, replicas: int = 1
    ) -> None:
        """Create or update every stream; safe to run from many replicas at once.

        An existing stream keeps its replica count (a service started with the default must
        not scale a 3-replica stream down). A refusal (the server answers nothing to a
        request its permissions deny) is reported as such.
        """
        for spec in specs:
            cfg = _stream_config(spec, replicas)
            try:
                try:
                    await self.js.add_stream(cfg)
                except nats.js.errors.BadRequestError:
                    info = await self.js.stream_info(spec.name)
                    cfg.num_replicas = info.config.num_replicas
                    await self.js.update_stream(cfg)
            except TimeoutError as exc:
                raise BusError(
                    f"JetStream did not answer creating stream {spec.name}: is JetStream "
                    "enabled (nats-server -js), and may this identity create streams "
                    "($JS.API.STREAM.CREATE/UPDATE)?",
                    stream=spec.name,
                ) from exc

    # --- publishing -------------------------------------------------------------------------
    async def publish(
        self,
        subject: subj.Subject,
        msg: Message,
        *,
        event_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Core NATS publish (fire-and-forget; for live notifications)."""
        with telemetry.messaging_span(subject.template, subject.subject, SpanKind.PRODUCER):
            hdrs = event_headers(msg, self.source, event_id, headers)
            await self.nc.publish(subject.subject, encode(msg), headers=hdrs)

    async def js_publish(
        self,
        subject: subj.Subject,
        msg: Message,
        *,
        event_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 5,
    ) -> bool:
        """JetStream publish, acknowledged by the server. Returns False for a duplicate."""
        with telemetry.messaging_span(subject.template, subject.subject, SpanKind.PRODUCER):
            hdrs = event_headers(msg, self.source, event_id, headers)
            return await self.js_publish_raw(subject.subject, encode(msg), hdrs, timeout)

    async def js_publish_raw(
        self, subject: str, payload: bytes, headers: dict[str, str], timeout: float = 5
    ) -> bool:
        """Publish pre-encoded bytes with pre-built headers (an outbox relay replays these)."""
        try:
            ack = await self.js.publish(subject, payload, timeout=timeout, headers=headers)
        except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError) as exc:
            # nats-py reports "no responders" on a JetStream publish as NoStreamResponseError:
            # no stream captures the subject, or the stream has no leader (a failover).
            raise BusError(
                f"no JetStream stream accepted {subject} (none captures it, or its leader is "
                "being elected): retry, or run ensure_streams"
            ) from exc
        except nats.errors.TimeoutError as exc:
            raise BusTimeout(f"JetStream did not acknowledge {subject} in {timeout}s") from exc
        return not ack.duplicate

    # --- request/reply ----------------------------------------------------------------------
    async def request(
        self,
        subject: subj.Subject,
        msg: Message,
        reply: Codec[R] | type[R],
        *,
        timeout: float = 5,
    ) -> R:
        """Send a request to a service endpoint; raise the service's error as our error type."""
        rcodec: Codec[R] = reply if isinstance(reply, Codec) else codec(reply)  # type: ignore[arg-type]
        with telemetry.messaging_span(subject.template, subject.subject, SpanKind.CLIENT):
            hdrs = telemetry.inject({"content-type": "application/json"})
            try:
                resp = await self._request_once_more(subject.subject, encode(msg), timeout, hdrs)
            except nats.errors.NoRespondersError as exc:
                raise BusError(
                    f"no service answers {subject.subject}: is it running?",
                    subject=subject.subject,
                ) from exc
            except nats.errors.TimeoutError as exc:
                raise BusTimeout(
                    f"{subject.subject} did not answer within {timeout}s",
                    subject=subject.subject,
                ) from exc
            raise_service_error(resp.headers, resp.data)
            return rcodec.decode(resp.data)

    async def _request_once_more(
        self, subject: str, data: bytes, timeout: float, headers: dict[str, str]
    ) -> Msg:
        """A "no responders" answer right after a service subscribed can be a routing race
        (the subscription has not reached every server yet): ask once more before failing."""
        try:
            return await self.nc.request(subject, data, timeout=timeout, headers=headers)
        except nats.errors.NoRespondersError:
            await asyncio.sleep(0.1)
            return await self.nc.request(subject, data, timeout=timeout, headers=headers)

    async def request_raw(self, subject: str, data: bytes, timeout: float = 5) -> Msg:
        """Untyped request (service discovery, tests of malformed input)."""
        try:
            return await self.nc.request(subject, data, timeout=timeout)
        except nats.errors.NoRespondersError as exc:
            raise BusError(f"no service answers {subject}: is it running?") from exc
        except nats.errors.TimeoutError as exc:
            raise BusTimeout(f"{subject} did not answer within {timeout}s") from exc

    async def discover(self, verb: str = "INFO", wait: float = 0.5) -> list[dict[str, Any]]:
        """Every running micro service's answer to ``$SRV.<verb>`` (PING, INFO, STATS)."""
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        answers: list[dict[str, Any]] = []
        try:
            await self.nc.publish(f"$SRV.{verb}", b"", reply=inbox)
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                try:
                    m = await sub.next_msg(timeout=left)
                except nats.errors.TimeoutError:
                    break
                if not m.data:  # "no responders" status: nothing is running
                    continue
                with contextlib.suppress(msgspec.DecodeError):
                    answers.append(msgspec.json.decode(m.data))
        finally:
            await sub.unsubscribe()
        return answers

    # --- subscribing ------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def subscribe(self, subject: str, queue: str = "") -> AsyncIterator[Any]:
        """Core subscription as an async iterator of raw messages (live tails, tests)."""
        sub = await self.nc.subscribe(subject, queue=queue)
        try:
            yield sub.messages
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def last_message(self, stream: str, subject: str) -> bytes:
        """The payload of the newest message on ``subject`` in ``stream`` (what a consumer
        that reads the stream is sure to get, unlike a live subscription across a restart)."""
        try:
            return (await self.js.get_last_msg(stream, subject)).data or b""
        except nats.js.errors.NotFoundError as exc:
            raise BusError(f"stream {stream} holds no message on {subject}") from exc

    async def last_values(
        self, stream: str, filter_subject: str, idle_s: float = 0.5
    ) -> AsyncIterator[tuple[str, bytes]]:
        """Replay the current last value of every subject in a last-value stream."""
        info = await self.js.stream_info(stream)
        if not info.state.messages:
            return
        sub = await self.js.pull_subscribe(
            filter_subject,
            stream=stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=30,
            ),
        )
        try:
            while True:
                try:
                    batch = await sub.fetch(500, timeout=idle_s)
                except nats.errors.TimeoutError:
                    return
                for m in batch:
                    yield m.subject, m.data
                if batch and batch[-1].metadata.num_pending == 0:
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def consume(
        self,
        spec: ConsumerSpec,
        decoder: Codec[T],
        handler: Callable[[T, Delivery], Awaitable[None]],
        *,
        stop: asyncio.Event,
        stats: ConsumerStats | None = None,
        batch_handler: Callable[[list[tuple[T, Delivery]]], Awaitable[None]] | None = None,
    ) -> None:
        """Run a durable pull consumer until ``stop`` is set.

        Each message is decoded and handled under a semaphore of ``spec.concurrency``; it is
        acked only after ``handler`` returned. ``batch_handler``, when given, receives every
        decodable message of a fetched batch at once (for bulk database writes); a failure
        then falls back to one-by-one handling so a poison message cannot hold the batch.
        """
        stats = stats or ConsumerStats()
        cfg = ConsumerConfig(
            durable_name=spec.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=spec.ack_wait_s,
            max_deliver=spec.max_deliver + 1,  # our own dead-letter happens at max_deliver
            max_ack_pending=spec.max_ack_pending,
            deliver_policy=DeliverPolicy.ALL if spec.deliver_all else DeliverPolicy.NEW,
            filter_subjects=spec.filter_subjects if len(spec.filter_subjects) > 1 else None,
            filter_subject=spec.filter_subjects[0] if len(spec.filter_subjects) == 1 else None,
        )
        psub = await _pull_subscribe(self.js, spec, cfg)
        sem = asyncio.Semaphore(spec.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                try:
                    msgs = await psub.fetch(spec.batch, timeout=0.5)
                except TimeoutError:  # nats' own and the builtin one (raised on some paths)
                    continue
                except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                    return
                except nats.errors.Error as exc:
                    log.warning("fetch from %s failed: %s", spec.durable, exc)
                    await asyncio.sleep(0.5)
                    continue
                decoded = [d for m in msgs if (d := await self._decode(m, spec, decoder, stats))]
                if batch_handler is not None and decoded:
                    if await self._run_batch(batch_handler, decoded, stats):
                        continue
                for item in decoded:
                    await sem.acquire()
                    task = asyncio.create_task(self._handle(item, spec, handler, stats))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    task.add_done_callback(lambda _t: sem.release())
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _decode(
        self, m: Msg, spec: ConsumerSpec, decoder: Codec[T], stats: ConsumerStats
    ) -> tuple[T, Msg] | None:
        try:
            return decoder.decode(m.data), m
        except UnknownMessageType as exc:
            stats.unknown += 1
            log.warning("%s: ignoring %s on %s", spec.durable, exc, m.subject)
            await m.ack()
        except InvalidRequest as exc:
            stats.malformed += 1
            await self._dead_letter(m, spec, f"malformed: {exc}", stats)
        return None

    async def _run_batch(
        self,
        batch_handler: Callable[[list[tuple[T, Delivery]]], Awaitable[None]],
        decoded: list[tuple[T, Msg]],
        stats: ConsumerStats,
    ) -> bool:
        items = [(v, _delivery(m)) for v, m in decoded]
        # One span for the batch, linked to every producer's span so traces stay connected.
        links = [
            Link(ctx)
            for _v, m in decoded
            if (ctx := get_current_span(telemetry.extract(m.headers)).get_span_context()).is_valid
        ]
        try:
            with telemetry.tracer().start_as_current_span(
                "batch " + subj.template_of(decoded[0][1].subject),
                kind=SpanKind.CONSUMER,
                links=links,
            ):
                await batch_handler(items)
        except Exception as exc:
            log.warning("batch of %d failed (%s); handling one by one", len(items), exc)
            return False
        await asyncio.gather(*(m.ack() for _v, m in decoded), return_exceptions=True)
        stats.handled += len(items)
        return True

    async def _handle(
        self,
        item: tuple[T, Msg],
        spec: ConsumerSpec,
        handler: Callable[[T, Delivery], Awaitable[None]],
        stats: ConsumerStats,
    ) -> None:
        value, m = item
        delivery = _delivery(m)
        template = subj.template_of(m.subject)
        with telemetry.messaging_span(template, m.subject, SpanKind.CONSUMER, m.headers) as span:
            try:
                await handler(value, delivery)
            except InvalidRequest as exc:
                telemetry.record_error(span, exc)
                await self._dead_letter(m, spec, f"rejected: {exc}", stats)
                return
            except Exception as exc:
                telemetry.record_error(span, exc)
                stats.last_error = f"{type(exc).__name__}: {exc}"
                if delivery.num_delivered >= spec.max_deliver:
                    await self._dead_letter(m, spec, f"failed {spec.max_deliver}x: {exc}", stats)
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
        self, m: Msg, spec: ConsumerSpec, reason: str, stats: ConsumerStats
    ) -> None:
        """Copy the message to the dead-letter stream with why, then stop redelivering it."""
        stats.dead_lettered += 1
        log.error("%s: dead-lettering %s: %s", spec.durable, m.subject, reason)
        headers = {
            "Sriov-Dead-Letter-Reason": reason[:1000],
            "Sriov-Original-Subject": m.subject,
            "Sriov-Consumer": spec.durable,
            "Sriov-Delivered": str(m.metadata.num_delivered),
        }
        for k, v in (m.headers or {}).items():
            if k.startswith("ce-") or k == "traceparent":
                headers[k] = v
        dl = subj.dead_letter(spec.durable)
        try:
            await self.js.publish(dl.subject, m.data, headers=headers)
        except nats.errors.Error as exc:  # keep the message for redelivery instead
            log.error("dead-letter publish failed, leaving %s for redelivery: %s", m.subject, exc)
            with contextlib.suppress(Exception):
                await m.nak(delay=5)
            return
        await m.term()


def _delivery(m: Msg) -> Delivery:
    md = m.metadata
    return Delivery(m.subject, m.headers or {}, md.num_delivered, md.sequence.stream)


async def _pull_subscribe(js: JetStreamContext, spec: ConsumerSpec, cfg: ConsumerConfig) -> Any:
    """Create-or-bind the durable; several replicas racing here all end up bound."""
    for _ in range(5):
        try:
            await js.add_consumer(spec.stream, cfg)
        except nats.js.errors.BadRequestError:
            pass  # exists with another config: bind to it as it is
        try:
            return await js.pull_subscribe_bind(spec.durable, spec.stream)
        except nats.js.errors.NotFoundError:
            await asyncio.sleep(0.2)
    raise BusError(f"cannot bind durable consumer {spec.durable} on stream {spec.stream}")


def raise_service_error(headers: Mapping[str, str] | None, data: bytes) -> None:
    """Turn a micro service error reply into our error type (no-op for a normal reply)."""
    if not headers or HDR_ERROR_CODE not in headers:
        return
    message = headers.get(HDR_ERROR, "service error")
    code = headers.get(HDR_SRIOV_CODE, "")
    details: dict[str, Any] = {}
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        body = msgspec.json.decode(data, type=ErrorReply)
        code, message, details = body.code, body.message, dict(body.details)
    raise error_from_code(code or "internal", message, **details)


# --------------------------------------------------------------------------------------------
# nats.micro services
# --------------------------------------------------------------------------------------------
Handler = Callable[[Any, Mapping[str, str]], Awaitable[Message]]


class ServiceHost:
    """A ``nats.micro`` service whose endpoints take and return msgspec messages."""

    def __init__(self, bus: Bus, service: Service) -> None:
        self.bus = bus
        self.service = service

    @classmethod
    async def start(
        cls, bus: Bus, name: str, version: str, description: str, metadata: dict[str, str]
    ) -> ServiceHost:
        svc = await nats.micro.add_service(
            bus.nc,
            config=ServiceConfig(
                name=name, version=version, description=description, metadata=metadata
            ),
        )
        return cls(bus, svc)

    async def add_endpoint(
        self,
        group: str,
        name: str,
        request: type[Message] | Codec[Any],
        handler: Handler,
        *,
        queue_group: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Serve ``<group>.<name>``: decode, call ``handler``, encode the reply or error."""
        req_codec = request if isinstance(request, Codec) else codec(request)
        sub = subj.endpoint(group, name)

        async def serve(req: Request) -> None:
            with telemetry.messaging_span(
                sub.template, req.subject, SpanKind.SERVER, req.headers
            ) as span:
                try:
                    msg = req_codec.decode(req.data)
                    reply = await handler(msg, req.headers or {})
                except SriovError as exc:
                    telemetry.record_error(span, exc)
                    await respond_error(req, exc)
                    return
                except Exception as exc:
                    telemetry.record_error(span, exc)
                    log.exception("endpoint %s failed", sub.subject)
                    await respond_error(
                        req, SriovError(f"internal error in {sub.subject}: {type(exc).__name__}")
                    )
                    return
                await req.respond(encode(reply), headers={"content-type": "application/json"})

        await self.service.add_endpoint(
            EndpointConfig(
                name=name.replace("-", "_"),
                subject=sub.subject,
                handler=serve,
                queue_group=queue_group,
                metadata=metadata or {"request": req_codec.name},
            )
        )

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.service.stop()


async def respond_error(req: Request, exc: SriovError) -> None:
    body = ErrorReply(
        code=exc.code,
        message=exc.message if len(exc.message) <= 2000 else exc.message[:2000] + "…",
        details={k: v for k, v in exc.details.items() if isinstance(v, str | int | float | bool)},
    )
    await req.respond(
        encode(body),
        headers={
            HDR_ERROR: exc.message[:1000].replace("\r", " ").replace("\n", " "),
            HDR_ERROR_CODE: str(exc.status),
            HDR_SRIOV_CODE: exc.code,
            "content-type": "application/json",
        },
    )


__all__ = [
    "STREAMS",
    "Bus",
    "ConsumerSpec",
    "ConsumerStats",
    "Delivery",
    "ServiceError",
    "ServiceHost",
    "StreamSpec",
    "event_headers",
    "raise_service_error",
]


async def _race(connect: Awaitable[None], refused: asyncio.Event, budget: float) -> None:
    """Run the first connect until it succeeds, is refused, or the budget runs out."""
    task = asyncio.ensure_future(connect)
    waiter = asyncio.ensure_future(refused.wait())
    try:
        done, _ = await asyncio.wait({task, waiter}, timeout=budget, return_when="FIRST_COMPLETED")
        if task in done:
            task.result()
        elif waiter not in done:
            raise TimeoutError(f"no connection within {budget:.0f}s")
    finally:
        for t in (task, waiter):
            if not t.done():
                t.cancel()
        await asyncio.gather(task, waiter, return_exceptions=True)


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, nats.errors.NoServersError | TimeoutError):
        return "no server answered"
    return text


async def _log_error(exc: Exception) -> None:
    log.warning("NATS: %s", _describe(exc))


def _log_event(text: str) -> Callable[[], Awaitable[None]]:
    async def cb() -> None:
        log.info(text)

    return cb
