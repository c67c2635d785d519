"""The process's one NATS connection: connect, publish, request, discover, subscribe.

Every published message carries CloudEvents headers (``ce-*``), W3C trace context and, on
JetStream, ``Nats-Msg-Id`` = the event id so the server drops duplicates.

Longer than most modules (~440 lines): it is the ``Bus``, one class whose methods are every
way the services talk over NATS; splitting it would split that one surface.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry.trace import SpanKind

from sriov.common import subjects as subj
from sriov.common import telemetry
from sriov.common.errors import BusError, BusTimeout
from sriov.common.redact import redact_url
from sriov.common.schemas import Codec, Message, codec, encode

from . import consumer, service, stored, streams
from .client import Client
from .consumer import ConsumerSpec, ConsumerStats, Delivery
from .headers import event_headers
from .publish import AckBatch, AckInbox
from .service import raise_service_error
from .stored import ConsumerInfo, StoredMessage, StreamInfo
from .streams import STREAMS, StreamSpec

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class Bus:
    """One NATS connection of a process, with JetStream; build it at start-up, pass it in."""

    def __init__(self, nc: Client, source: str) -> None:
        # Private: callers use the methods below, so nats stays inside this package.
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._acks = AckInbox(nc)
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
        nkey_seed: str | None = None,
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
        if user and password:
            opts["user"], opts["password"] = user, password
        if creds_file:
            opts["user_credentials"] = creds_file
        if nkey_seed:  # the server sends a nonce; nats-py signs it with this seed
            opts["nkeys_seed_str"] = nkey_seed
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
        where = ", ".join(redact_url(s) for s in servers)
        raise BusError(
            f"cannot connect to NATS at {where}: {_describe(last)}. "
            "Check that nats-server is running and the URL, credentials and TLS settings.",
            url=where,
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._nc.drain()
        with contextlib.suppress(Exception):
            await self._nc.close()

    @property
    def is_connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def flush(self, timeout: int = 5) -> None:
        """One round trip: the server has processed everything sent before (subscriptions,
        publishes), and reported any permissions violation among them."""
        await self._nc.flush(timeout=timeout)

    def new_inbox(self) -> str:
        """A fresh reply subject under this connection's inbox prefix."""
        return self._nc.new_inbox()

    async def jetstream_ready(self) -> bool:
        """JetStream answers for this account (a cluster has elected its meta leader)."""
        try:
            await self._js.account_info()
        except Exception:  # any failure means "not yet"; the caller retries
            return False
        return True

    # --- provisioning -----------------------------------------------------------------------
    async def ensure_streams(
        self, specs: Sequence[StreamSpec] = STREAMS, replicas: int = 1
    ) -> None:
        """Create or update every stream; safe to run from many replicas at once.

        An existing stream keeps its replica count (a service started with the default must
        not scale a 3-replica stream down). A refusal (the server answers nothing to a
        request its permissions deny) is reported as such.
        """
        await streams.ensure_streams(self._js, specs, replicas)

    async def verify_streams(
        self, specs: Sequence[StreamSpec] = STREAMS, replicas: int = 1
    ) -> None:
        """Read each stream's configuration and raise a :class:`BusError` naming the stream
        and field when it differs from the catalogue (sealed, subjects, limits, replicas
        lower). Needs only ``STREAM.INFO``: what a running service is allowed."""
        await streams.verify_streams(self._js, specs, replicas)

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
            await self._nc.publish(subject.subject, encode(msg), headers=hdrs)

    async def publish_raw(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Core publish of arbitrary bytes (tests of malformed input and permissions)."""
        await self._nc.publish(subject, data, headers=headers)

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
            ack = await self._js.publish(subject, payload, timeout=timeout, headers=headers)
        except nats.errors.TimeoutError as exc:
            raise BusTimeout(f"JetStream did not acknowledge {subject} in {timeout}s") from exc
        except _REFUSALS as exc:
            raise _refused(exc, subject, payload) from exc
        return not ack.duplicate

    async def js_publish_many(
        self, messages: Sequence[tuple[str, bytes, Mapping[str, str] | bytes]], timeout: float = 5
    ) -> None:
        """Publish ``(subject, payload, headers)`` in order on this connection, then await
        every acknowledgement together, within ``timeout`` for the whole batch (headers as a
        dict or already encoded, see :mod:`.publish`): a relay's
        batch costs about one round trip instead of one per message. Raises (once every ack
        arrived or the time is up) unless JetStream stored each one; the acks still due
        are given up, so a retry of the batch starts clean (``Nats-Msg-Id`` drops repeats).
        """
        batch = AckBatch(len(messages))
        try:
            async with asyncio.timeout(timeout):
                for i, (subject, payload, headers) in enumerate(messages):
                    await self._acks.publish(batch, i, subject, payload, headers)
                if messages:
                    await batch.done
        except TimeoutError as exc:
            raise BusTimeout(
                f"JetStream did not acknowledge {batch.due} of {len(messages)} "
                f"messages in {timeout}s"
            ) from exc
        finally:
            self._acks.forget(batch)  # an ack still due is ignored when it comes
        for i in sorted(batch.errors):
            error = batch.errors[i]
            subject, payload, _h = messages[i]
            if isinstance(error, _REFUSALS):
                raise _refused(error, subject, payload) from error
            raise error

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
            return await self._nc.request(subject, data, timeout=timeout, headers=headers)
        except nats.errors.NoRespondersError:
            await asyncio.sleep(0.1)
            return await self._nc.request(subject, data, timeout=timeout, headers=headers)

    async def request_raw(self, subject: str, data: bytes, timeout: float = 5) -> Msg:
        """Untyped request (service discovery, tests of malformed input)."""
        try:
            return await self._nc.request(subject, data, timeout=timeout)
        except nats.errors.NoRespondersError as exc:
            raise BusError(f"no service answers {subject}: is it running?") from exc
        except nats.errors.TimeoutError as exc:
            raise BusTimeout(f"{subject} did not answer within {timeout}s") from exc

    async def discover(self, verb: str = "INFO", wait: float = 0.5) -> list[dict[str, Any]]:
        """Every running micro service's answer to ``$SRV.<verb>`` (PING, INFO, STATS)."""
        return await service.discover(self._nc, verb, wait)

    # --- subscribing ------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def subscribe(self, subject: str, queue: str = "") -> AsyncIterator[Any]:
        """Core subscription as an async iterator of raw messages (live tails, tests)."""
        sub = await self._nc.subscribe(subject, queue=queue)
        try:
            yield sub.messages
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # --- what the streams hold (see ``stored``) ----------------------------------------------
    async def stream_info(self, stream: str) -> StreamInfo:
        return await stored.stream_info(self._js, stream)

    async def consumer_info(self, stream: str, durable: str) -> ConsumerInfo:
        return await stored.consumer_info(self._js, stream, durable)

    async def caught_up(self, stream: str, durable: str, upto: int = 0) -> bool:
        """``durable`` has acknowledged everything it reads up to sequence ``upto`` (default:
        all published before now)."""
        return await stored.caught_up(self._js, stream, durable, upto)

    async def consumers(self, stream: str) -> list[ConsumerInfo]:
        return await stored.consumers(self._js, stream)

    async def last_message(self, stream: str, subject: str) -> StoredMessage:
        """The newest message on ``subject`` in ``stream`` (what a consumer that reads the
        stream is sure to get, unlike a live subscription across a restart)."""
        return await stored.last_message(self._js, stream, subject)

    def history(self, stream: str, subject: str = ">") -> AsyncIterator[StoredMessage]:
        """Every message of ``stream`` on ``subject`` (a filter), oldest first."""
        return stored.history(self._js, stream, subject)

    def last_values(
        self, stream: str, filter_subject: str, idle_s: float = 0.5
    ) -> AsyncIterator[tuple[str, bytes]]:
        """Replay the current last value of every subject in a last-value stream."""
        return stored.last_values(self._js, stream, filter_subject, idle_s)

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
        """Run a durable pull consumer until ``stop`` is set (or the connection closes).

        Each message is decoded and handled under a semaphore of ``spec.concurrency``; it is
        acked only after ``handler`` returned, naked with back-off when it raised, and after
        ``spec.max_deliver`` attempts (at once for a malformed payload) copied with the reason
        to the dead-letter stream and terminated; a handler raising ``Unavailable`` (PostgreSQL
        or NATS away) has its message kept and handled again after back-off until it answers,
        without spending a delivery; unknown message types are logged and acked.
        ``batch_handler``, when given, receives every decodable message of a fetched batch at
        once (for bulk database writes); a failure then falls back to one-by-one handling so
        a poison message cannot hold the batch. ``spec.replay_last`` starts a fresh durable at
        the last message of each subject (current desired state), then follows.
        """
        await consumer.consume(
            self._js,
            spec,
            decoder,
            handler,
            stop=stop,
            stats=stats or ConsumerStats(),
            batch_handler=batch_handler,
        )


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


_REFUSALS = (
    nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError, nats.js.errors.APIError
)  # fmt: skip


def _refused(exc: BaseException, subject: str, payload: bytes) -> BusError:
    """JetStream's refusal of a publish, as an error naming the subject and the reason."""
    if not isinstance(exc, nats.js.errors.APIError):
        # nats-py reports "no responders" on a JetStream publish as NoStreamResponseError:
        # no stream captures the subject, or the stream has no leader (a failover).
        return BusError(
            f"no JetStream stream accepted {subject} (none captures it, or its leader is "
            "being elected): retry, or run ensure_streams"
        )
    return BusError(  # refused by the stream: size, limits, sealed
        f"JetStream refused {subject} ({len(payload)} bytes): {exc.description} "
        f"(err_code {exc.err_code})",
        subject=subject,
    )
