"""Asynchronous placement requests: another system publishes to JetStream, we answer in events.

``sriov.v1.placement.<guest>.<op>.requested`` carries the same PlaceRequest, AttachRequest,
ReleaseRequest (or ConfirmRequest) as the endpoints take, with the same idempotency (the
request id). Success is announced by the operation's own events (Reserved, Released, ...),
written in its transaction; a refusal becomes a Failed event carrying the same code and
message a synchronous caller would get, through the outbox, and is final for that message (a
redelivery is acknowledged, not tried again; a new message is a retry). A malformed request
also gets a Failed event (when its guest is known from the subject) and is dead-lettered.
While PostgreSQL is away a request waits (the bus holds it): an outage refuses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import msgspec

from sriov.common import schemas as m
from sriov.common import subjects, telemetry
from sriov.common.bus import Bus, ConsumerSpec, ConsumerStats, Delivery
from sriov.common.errors import InvalidRequest, SriovError, Unavailable, UnknownMessageType
from sriov.scheduler.consumer import consume
from sriov.scheduler.operations import Scheduler, op_of
from sriov.scheduler.store import Store

log = logging.getLogger(__name__)

DURABLE = "scheduler-requests"
FAILED_NAMESPACE = uuid.UUID("0b5e7c43-5f0e-4c1d-9a7e-2c0f8a4d9e61")
OPS = ("place", "attach", "release", "confirm")


class RawCodec(m.Codec[bytes]):
    """Pass the payload through: the handler decodes it, so a malformed request can still be
    answered with a Failed event on the guest named by the subject."""

    def __init__(self) -> None:
        self.type = bytes
        self.name = "placement request"

    def decode(self, data: bytes | str) -> bytes:
        return data.encode() if isinstance(data, str) else bytes(data)


def subject_parts(subject: str) -> tuple[str, str]:
    """``sriov.v1.placement.<guest>.<op>.requested`` -> (guest, op); empty when malformed."""
    parts = subject.split(".")
    if len(parts) == 6 and parts[-1] == "requested":
        return parts[3], parts[4]
    return "", ""


def request_id_of(raw: bytes) -> str:
    """The request id of a payload we could not decode, if it has one."""
    # msgspec raises UnicodeDecodeError (a ValueError) for invalid UTF-8 inside a string and
    # RecursionError for very deep nesting, not DecodeError
    with contextlib.suppress(msgspec.DecodeError, AttributeError, ValueError, RecursionError):
        value = msgspec.json.decode(raw).get("request_id")
        if isinstance(value, str):
            return value
    return ""


def error_info(exc: SriovError) -> m.ErrorInfo:
    return m.ErrorInfo(
        code=exc.code,
        message=exc.message,
        details={k: v for k, v in exc.details.items() if isinstance(v, str | int | float | bool)},
    )


class Inbox:
    def __init__(
        self, app: Scheduler, store: Store, bus: Bus, *, source: str, concurrency: int = 16
    ) -> None:
        self.app = app
        self.store = store
        self.bus = bus
        self.source = source
        self.stats = ConsumerStats()
        self.spec = ConsumerSpec(
            stream=subjects.STREAM_PLACEMENT_REQUESTS,
            durable=DURABLE,
            filter_subjects=[subjects.PLACEMENT_REQUESTS_ALL],
            concurrency=concurrency,
            batch=concurrency * 4,
            max_deliver=5,
            backoff_s=(0.5, 2, 5),
        )

    async def run(self, stop: asyncio.Event) -> None:
        await consume(self.bus, self.spec, RawCodec(), self.handle, stop=stop, stats=self.stats)

    async def handle(self, raw: bytes, delivery: Delivery) -> None:
        guest, op = subject_parts(delivery.subject)
        if delivery.num_delivered > 1 and await self.store.refused(failed_event_id(delivery)):
            # its refusal committed and its Failed event is out, only the ack was lost: a
            # second attempt could succeed now and contradict that answer
            log.info("redelivered request on %s was already refused", delivery.subject)
            return
        try:
            req: Any = m.PLACEMENT_REQUESTS.decode(raw)
        except UnknownMessageType as exc:
            # A request type this build does not know: tell the requester, ack (not poison).
            await self._failed(guest, op, request_id_of(raw), exc, delivery)
            return
        except InvalidRequest as exc:
            await self._failed(guest, op, request_id_of(raw), exc, delivery)
            raise  # dead-lettered, so an operator sees it too
        if req.guest_id != guest:
            mismatch = InvalidRequest(
                f"guest_id {req.guest_id!r} differs from the subject's guest {guest!r}: "
                f"publish to {subjects.PLACEMENT_REQUEST}",
                field="guest_id",
            )
            await self._failed(guest, op_of(req), req.request_id, mismatch, delivery)
            raise mismatch
        try:
            await self.app.handle(req)
        except Unavailable:
            # PostgreSQL is away: the bus keeps the request and handles it again once the
            # database answers (an outage fails no request and dead-letters none); the
            # requester, waiting for an event, may retry with the same request id meanwhile
            raise
        except SriovError as exc:
            await self._failed(guest, op_of(req), req.request_id, exc, delivery)

    async def _failed(
        self,
        guest: str,
        op: str,
        request_id: str,
        exc: SriovError,
        delivery: Delivery,
    ) -> None:
        """Announce a refusal as a Failed event, remembered by its id (the message's stream
        position): a redelivered request is then acknowledged without a second attempt."""
        try:
            subjects.token(guest, "guest_id")
        except InvalidRequest:
            log.error("cannot answer malformed request on %s: %s", delivery.subject, exc)
            return
        if op not in OPS:
            log.error("cannot answer request on %s (operation %r): %s", delivery.subject, op, exc)
            return
        event = m.Failed(request_id=request_id, guest_id=guest, op=op, error=error_info(exc))  # type: ignore[arg-type]
        log.info("request %s for guest %s failed: [%s] %s", request_id, guest, exc.code, exc)
        ctx = msgspec.json.encode({"source": self.source, "trace": telemetry.inject({})})
        await self.store.refuse(
            event_id=failed_event_id(delivery), guest_id=guest, msg=event, ctx=ctx
        )
        self.app.on_commit()


def failed_event_id(delivery: Delivery) -> str:
    """The id of the Failed event answering a request message: its stream position, so a
    redelivery's duplicate is dropped by JetStream and its refusal found by the store."""
    return str(uuid.uuid5(FAILED_NAMESPACE, f"{delivery.stream_seq}"))
