"""The transactional outbox's relay: an event committed with its change reaches JetStream.

A service writes its events into an outbox table in the transaction that makes the change.
The relay claims a batch, sends every row in claim order without waiting, awaits all the
acknowledgements together and lets the claim forget the rows only once JetStream
acknowledged each one; any failure leaves the rows for the next attempt.
The event id is the ``Nats-Msg-Id``, so a batch published again after a crash (published,
not yet forgotten) is stored once. Every replica runs a relay, so relaying survives any of
them; a commit wakes the local relay, and a poll catches what other replicas committed.

How rows are claimed is the parameter that makes the two kinds of outbox, and it is the
service's: the SQL stays in the store, its one module that talks SQL, because the two tables
differ in shape (the scheduler's rows are written by its PL/pgSQL functions, inventory's are
upserted per subject with their headers). The store implements :class:`OutboxStore`:

* an **ordered log** (scheduler, placement events): every event, in commit order, one relay
  at a time (an advisory lock); each event carries its row id as ``seq``, so a consumer
  restores commit order when a republished batch lands out of order in the stream;
* **last value per subject** (inventory, device and host states): one row per subject, a
  newer state replacing a pending older one; relays claim in parallel (``SKIP LOCKED``) and a
  writer replacing a row a relay holds waits for it, so no older state overtakes a newer.

Either table is a queue: every relayed row is deleted, and a claim walks its index from the
oldest end over the entries of every row deleted since the table was last vacuumed. The relay
vacuums it every 10,000 rows or 10 s while rows go through: after a 10,000-host restart had
relayed 650,000 states, inventory's claims took 6.4 ms and its idle polls 4.5 ms, 0.2 and
0.02 ms once vacuumed; vacuumed every 10 s only, the claims after the storm still took 5.6 ms
(the 120,000 rows relayed in its last 10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.trace import SpanKind

from sriov.common import runtime, telemetry
from sriov.common import schemas as m
from sriov.common.bus import (
    HDR_MSG_ID,
    Bus,
    encode_headers,
    event_headers,
    extend_headers,
    rfc3339,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One event to publish; ``headers`` are complete (:func:`stored_headers`).

    ``trace`` (with the subject's ``template`` as the span name) asks for a producer span,
    child of that stored context; without it the headers go out as stored, their trace
    context included (inventory relays many states: a span per row doubled its CPU).
    """

    subject: str
    payload: bytes
    headers: Mapping[str, str] | bytes
    """Complete, as a dict or as the encoded block (:func:`stored_block`)."""
    template: str = ""
    trace: Mapping[str, str] | None = None


class OutboxStore(Protocol):
    """The service's side of its outbox (see the module's docstring for the two kinds)."""

    def claim(self, limit: int) -> AbstractAsyncContextManager[Sequence[OutboxRow]]:
        """Up to ``limit`` rows, oldest first, held until the block ends: forgotten when it
        exits normally, back in the outbox for the next attempt when it raises."""
        ...

    async def has_pending(self) -> bool:
        """Whether a row waits: the idle poll, so cheap and untraced."""
        ...

    async def vacuum(self) -> None:
        """VACUUM the outbox table. Not ``SKIP_LOCKED``: after a restart storm autovacuum
        works through the table for minutes, throttled, while every claim walks what it has
        not reached; waiting makes it yield (a blocked session cancels autovacuum)."""
        ...


def base_headers(source: str) -> dict[str, str]:
    """What the events of one transaction or batch share: :func:`~sriov.common.bus.event_headers`
    (CloudEvents attributes, the current trace context), built once; each event's own are
    added by :func:`stored_headers`."""
    return event_headers(_ANY, source, "-")


def stored_headers(
    base: Mapping[str, str], event_id: str, ce_type: str, time: dt.datetime | None = None
) -> dict[str, str]:
    """``base`` for one event: its id (also the ``Nats-Msg-Id``), its type and, for an event
    stored earlier, the time it was committed."""
    headers = dict(base)
    headers["ce-id"] = headers[HDR_MSG_ID] = event_id
    headers["ce-type"] = ce_type
    if time is not None:
        headers["ce-time"] = rfc3339(time)
    return headers


_PER_EVENT = ("ce-id", HDR_MSG_ID, "ce-type")


def header_block(base: Mapping[str, str]) -> bytes:
    """``base`` (:func:`base_headers`) encoded once for many events: see :func:`stored_block`."""
    return encode_headers({k: v for k, v in base.items() if k not in _PER_EVENT})


def stored_block(block: bytes, event_id: str, ce_type: str) -> bytes:
    """What :func:`stored_headers` gives, as the encoded header block the relay sends as is
    (a fleet-wide snapshot relays 650,000 states: the dict's per-row encoding and its JSON
    round trip through the outbox were a tenth of inventory's CPU)."""
    return extend_headers(block, {"ce-id": event_id, HDR_MSG_ID: event_id, "ce-type": ce_type})


_ANY = m.Message()  # event_headers derives ce-type from a message; stored_headers sets it


class Relay:
    """Publish what ``store`` claims until stopped; ``name`` names its spans and logs."""

    def __init__(
        self,
        store: OutboxStore,
        bus: Bus,
        *,
        name: str,
        batch: int = 500,
        poll_s: float = 0.25,
        linger_s: float = 0.0,
        ack_timeout_s: float = 5.0,
        rounds_in_flight: int = 1,
        vacuum_every_s: float = 10.0,
        vacuum_every_rows: int = 10_000,
        published: Callable[[int], None] = lambda _n: None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.name = name
        self.batch = batch
        self.poll_s = poll_s
        self.linger_s = linger_s
        """While commits arrive faster than rounds end, wait this long between rounds so one
        relay transaction carries many; a commit after a quiet spell goes out at once."""
        self.ack_timeout_s = ack_timeout_s
        """For the whole batch's acknowledgements (NATS away: the rows wait for a retry)."""
        self.rounds_in_flight = rounds_in_flight
        """Rounds relaying at once: while one waits for its acknowledgements or its commit,
        another claims and sends. Only for a last-value store (claims never share a row,
        and a row's next version waits for the claim that holds it); an ordered log relays
        one round at a time whatever this says (its claim takes a lock)."""
        self.vacuum_every_s = vacuum_every_s
        self.vacuum_every_rows = vacuum_every_rows
        """The outbox is vacuumed once this many rows were relayed since the last time, or
        ``vacuum_every_s`` passed and any were (see the module's docstring)."""
        self.published = published
        self._wake = asyncio.Event()
        self._relayed = 0  # rows relayed since the last vacuum began
        self._vacuum_now = asyncio.Event()
        self.vacuums = 0
        """Vacuums done so far."""

    def wake(self) -> None:
        """Something was committed: relay now rather than at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        # The vacuum has a task of its own: waiting for a running autovacuum to yield (a
        # second) must not hold back the events of a relay that runs one round at a time.
        vacuums = asyncio.create_task(self._vacuums())
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(self.rounds_in_flight):
                    tg.create_task(self._rounds(stop))
        finally:
            vacuums.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await vacuums

    async def _rounds(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            self._wake.clear()  # before relaying: a commit during this round is not missed
            try:
                n = await self.relay_once()
                failures = 0
            except Exception as exc:  # NATS or PostgreSQL away: the rows wait, never die
                failures += 1
                delay = min(0.2 * 2**failures, 5.0)
                log.warning(
                    "%s outbox relay failed (%s: %s); events stay queued, retrying in %.1fs",
                    self.name, type(exc).__name__, exc, delay,
                )  # fmt: skip
                await runtime.pause(stop, delay)
                continue
            if n < self.batch:
                if self.linger_s and self._wake.is_set():
                    # commits came while this round relayed: let more gather, so one relay
                    # transaction carries them all
                    await runtime.pause(stop, self.linger_s)
                else:  # quiet: the next commit goes out as soon as it wakes the relay
                    await runtime.pause(self._wake, self.poll_s)

    async def relay_once(self) -> int:
        """Publish one batch and let the store forget it; returns how many rows left."""
        if not await self.store.has_pending():
            return 0
        with telemetry.tracer().start_as_current_span(f"{self.name}.outbox.relay") as span:
            async with self.store.claim(self.batch) as rows:
                if rows:
                    await self.publish(rows)
            span.set_attribute("messaging.batch.message_count", len(rows))
        if rows:
            self._relayed += len(rows)
            if self._relayed >= self.vacuum_every_rows:
                self._vacuum_now.set()
            self.published(len(rows))
        return len(rows)

    async def _vacuums(self) -> None:
        """Vacuum the outbox once ``vacuum_every_rows`` rows went through, or every
        ``vacuum_every_s`` while any did."""
        while True:
            await runtime.pause(self._vacuum_now, self.vacuum_every_s)
            self._vacuum_now.clear()
            relayed, self._relayed = self._relayed, 0
            if not relayed:
                continue
            try:
                await self.store.vacuum()
            except Exception as exc:  # the database is away: the relay's retries will tell
                self._relayed += relayed
                log.warning("%s outbox vacuum failed (%s: %s)", self.name, type(exc).__name__, exc)
                continue
            self.vacuums += 1
            if self._relayed >= self.vacuum_every_rows:  # as many again went through meanwhile
                self._vacuum_now.set()

    async def publish(self, rows: Sequence[OutboxRow]) -> None:
        """Send the batch in claim order on the one connection, then await every ack
        together; raise unless all were acked (the claim rolls back, the rows wait)."""
        await self.bus.js_publish_many(
            [(r.subject, r.payload, _headers(r)) for r in rows], self.ack_timeout_s
        )


def _headers(row: OutboxRow) -> Mapping[str, str] | bytes:
    if row.trace is None:
        return row.headers
    assert not isinstance(row.headers, bytes), "a traced row's headers get the span's context"
    # The stored context is the request's: the producer span is its child, and the consumer
    # of the event continues the request's trace from there. The span marks the send; the
    # ack is awaited with the batch's.
    with telemetry.messaging_span(row.template, row.subject, SpanKind.PRODUCER, row.trace or None):
        return telemetry.inject({**row.headers, **row.trace})  # the producer span's
