"""Inventory's outbox, last value per subject: device and host states, written with the change
that made them and claimed by :class:`sriov.common.outbox.Relay`.

One row per subject: a newer state of a device replaces a pending older one. The event id,
also the ``Nats-Msg-Id``, names the object and its revision, so relaying the same row twice
after a crash is dropped by JetStream's duplicate window and a consumer can tell versions
apart. Headers are built once per transaction (CloudEvents attributes, the W3C trace context
of the span that made the change) and specialised per row.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

import msgspec
from opentelemetry.instrumentation.utils import suppress_instrumentation

from sriov.common import outbox, subjects
from sriov.common import schemas as m
from sriov.common.bus import HEADER_LINE, encode_headers
from sriov.common.outbox import OutboxRow
from sriov.inventory.db.conn import Conn, Pool
from sriov.inventory.model import DeviceRec, HostView

_DEVICE_TYPE = m.type_of(m.DeviceState)
_HOST_TYPE = m.type_of(m.HostState)
_decode_headers = msgspec.json.Decoder(dict[str, str]).decode


def _stored(headers: Mapping[str, str] | bytes) -> bytes:
    """The outbox's ``headers`` column: the encoded block the relay sends as is."""
    return headers if isinstance(headers, bytes) else encode_headers(headers)


def _sent(stored: bytes) -> bytes:
    # a row queued by a release that stored the headers as JSON, before an upgrade
    return stored if stored.startswith(HEADER_LINE) else encode_headers(_decode_headers(stored))


_UPSERT = (
    "INSERT INTO inventory.outbox (subject, payload, headers) "
    "SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[]) "
    "ON CONFLICT (subject) DO UPDATE SET seq = nextval('inventory.outbox_seq'), "
    "payload = EXCLUDED.payload, headers = EXCLUDED.headers, created_at = now()"
)
_CLAIM = (
    "DELETE FROM inventory.outbox WHERE subject = ANY (ARRAY("
    " SELECT subject FROM inventory.outbox ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"
    ")) RETURNING subject, payload, headers, seq"
)
"""The oldest rows are picked once (an init plan) and deleted by key, whatever the statistics
say. A join with the picking subquery, as this was, was planned as a nested loop over the whole
outbox that re-ran the subquery per row whenever a VACUUM or ANALYZE had found the outbox
momentarily empty (0 rows over its allocated pages): in a 10,000-host restart one claim ran
60 s over 147,000 queued rows while nothing was relayed."""


def device_event_id(device_id: str, revision: int) -> str:
    return f"device/{device_id}/{revision}"


def host_event_id(host_id: str, revision: int) -> str:
    return f"host/{host_id}/{revision}"


def rows(devices: Iterable[DeviceRec], hosts: Iterable[HostView], source: str) -> list[OutboxRow]:
    """One row per announced device and host (their revisions already assigned)."""
    block = outbox.header_block(outbox.base_headers(source))
    out: dict[str, OutboxRow] = {}
    for rec in devices:
        d = rec.device
        subject = subjects.device_state(d.host_id, d.pci_address).subject
        headers = outbox.stored_block(block, device_event_id(d.id, rec.revision), _DEVICE_TYPE)
        msg = m.DeviceState(device=d, revision=rec.revision, removed=rec.removed)
        out[subject] = OutboxRow(subject, m.encode(msg), headers)
    for view in hosts:
        h = view.host
        subject = subjects.host_state(h.host_id).subject
        headers = outbox.stored_block(block, host_event_id(h.host_id, h.revision), _HOST_TYPE)
        msg_h = m.HostState(host=view.info(), revision=h.revision)
        out[subject] = OutboxRow(subject, m.encode(msg_h), headers)
    return list(out.values())


async def write(conn: Conn, rows: Sequence[OutboxRow]) -> None:
    """Queue ``rows`` in the caller's transaction, replacing a pending row of the subject."""
    if rows:
        await conn.execute(
            _UPSERT,
            [r.subject for r in rows],
            [r.payload for r in rows],
            [_stored(r.headers) for r in rows],
        )


class StateOutbox:
    """The :class:`sriov.common.outbox.OutboxStore` of inventory's outbox table."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    @contextlib.asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[list[OutboxRow]]:
        """Delete up to ``limit`` rows, oldest first; the deletion commits when the block
        succeeds and rolls back (the rows are back) when it raises.

        Any number of replicas may claim at once: ``SKIP LOCKED`` hands each row to one of
        them. A row a writer is replacing stays locked by it, and a writer replacing a row
        a relay holds waits for the relay, so a newer state never is overtaken by an older.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            records = sorted(await conn.fetch(_CLAIM, limit), key=lambda r: r["seq"])
            yield [OutboxRow(r["subject"], r["payload"], _sent(r["headers"])) for r in records]

    async def has_pending(self) -> bool:
        with suppress_instrumentation():  # idle polls are not worth a trace each
            async with self.pool.acquire() as conn:
                return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM inventory.outbox)"))

    async def vacuum(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute("VACUUM inventory.outbox")


async def pending(conn: Conn) -> int:
    value = await conn.fetchval("SELECT count(*) FROM inventory.outbox")
    return int(value or 0)
