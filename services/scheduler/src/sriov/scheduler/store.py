"""The scheduler's only module that talks SQL: schema, pool, one call per operation.

Each operation is one SQL function (``sql/*.sql``) called with one JSON argument (a struct
of :mod:`sriov.scheduler.validation`; ``tests/test_sql_boundary.py`` checks the keys the SQL
reads against its fields) and the type tag of the event it emits, over a prepared
statement, so a placement is one database round trip, shared with the placements that arrive
meanwhile (group commit: :mod:`sriov.scheduler.combine`). The functions raise SQLSTATE
``SRV01`` with ``{code, message, details}`` for a refusal, which becomes the matching
:class:`SriovError`. A unique-index violation (the last guard against double booking),
a deadlock or a serialization failure is retried; a lost connection becomes ``unavailable``
with advice to retry with the same request id (which is safe: requests are idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.resources
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
from opentelemetry.instrumentation.utils import suppress_instrumentation

from sriov.common import database, migrations, outbox, subjects
from sriov.common import schemas as m
from sriov.common.errors import SriovError, Unavailable, error_from_code
from sriov.common.outbox import OutboxRow
from sriov.scheduler.combine import Combiner
from sriov.scheduler.validation import DesiredArgs, EventTypes

log = logging.getLogger(__name__)

ERROR_STATE = "SRV01"
RETRY_STATES = frozenset({"23505", "40001", "40P01"})
"""unique violation (the reservation guard), serialization failure, deadlock."""
ATTEMPTS = 5
TABLES = tuple(
    f"scheduler.{t}" for t in ("vfs", "hosts", "reservations", "requests", "outbox", "desired")
)
MIGRATE_LOCK = 0x5C4ED01
RELAY_LOCK = 0x5C4ED02
ANALYZE_LOCK = 0x5C4ED03
"""With the table's name: one replica analyzes a table at a time, the others skip it (at
640,000 VFs, each ANALYZE of ``vfs`` took a second of the database)."""


class Outcome(msgspec.Struct, kw_only=True):
    """What place/attach/release/confirm/get return (the reply minus the request's ids)."""

    host_id: str | None = None
    assignments: list[m.Assignment] = msgspec.field(default_factory=list)
    released: list[str] = msgspec.field(default_factory=list)


class StateResult(msgspec.Struct, kw_only=True):
    devices: int
    lost: int
    hosts_down: list[str]


_outcome = msgspec.json.Decoder(Outcome)


class _Placed(msgspec.Struct, kw_only=True):
    """One request's result in ``scheduler.place_many``'s answer."""

    ok: Outcome | None = None
    refused: dict[str, Any] | None = None
    failed: dict[str, str] | None = None


_placed = msgspec.json.Decoder(list[_Placed])
_cordon = msgspec.json.Decoder(m.CordonReply)
_reset = msgspec.json.Decoder(m.VfResetReply)
#: ``p_desired`` and ``p_types`` of the SQL functions: the schemas' type tags and baseline.
DESIRED = msgspec.json.encode(
    DesiredArgs(type=m.type_of(m.VfDesired), clean=m.clean_config())
).decode()
EVENT_TYPES = msgspec.json.encode(
    EventTypes(ready=m.type_of(m.Ready), failed=m.type_of(m.Failed))
).decode()
_state_result = msgspec.json.Decoder(StateResult)
_trace = msgspec.json.Decoder(dict[str, str])


def schema_migrations() -> list[migrations.Migration]:
    """The tables: versioned migrations (``sql/migrations/``), each applied once."""
    return migrations.load("sriov.scheduler", "sql/migrations")


def functions_script() -> str:
    """The functions (``sql/*.sql`` in name order): ``CREATE OR REPLACE``d at every start, so
    a new build's functions replace the old ones."""
    files = sorted(
        (f for f in importlib.resources.files("sriov.scheduler").joinpath("sql").iterdir()
         if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )  # fmt: skip
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


def _outbox_row(r: asyncpg.Record, bases: dict[str, dict[str, str]]) -> OutboxRow:
    _id, event_id, guest_id, verb, ce_type, payload, trace, source, created_at, vf_host, vf_pci = r
    base = bases.get(source) or bases.setdefault(source, outbox.base_headers(source))
    subject = (
        subjects.desired_vf(vf_host, vf_pci) if vf_pci is not None
        else subjects.placement_event(guest_id, verb)
    )  # fmt: skip
    return OutboxRow(
        subject.subject, payload.encode(),
        outbox.stored_headers(base, event_id, ce_type, created_at),
        template=subject.template, trace=_trace.decode(trace),
    )  # fmt: skip


def latest_desired(records: list[asyncpg.Record]) -> list[asyncpg.Record]:
    """The batch without desired states another row of the batch replaces.

    The relay publishes a batch concurrently, so two desired states of one VF in a batch
    could land in either order, and the stream keeps the last one landed. Only the newest of
    each VF is published (all are deleted with the batch); batches follow each other only once
    JetStream acknowledged every row, and a VF's revisions are allocated under its row lock,
    so one VF's desired states reach the stream in revision order.
    """
    newest: dict[tuple[str, str], int] = {}
    for r in records:
        if r[10] is not None:
            newest[(r[9], r[10])] = r[0]
    return [r for r in records if r[10] is None or newest[(r[9], r[10])] == r[0]]


def _tagged(raw: str, typ: type[m.Message]) -> bytes:
    """A reply the SQL built without its ``type`` tag, tagged."""
    return msgspec.json.encode({**msgspec.json.decode(raw), "type": m.type_of(typ)})


def _refusal(exc: asyncpg.PostgresError) -> SriovError:
    return _refused(msgspec.json.decode(getattr(exc, "message", None) or str(exc)))


def _refused(body: dict[str, Any]) -> SriovError:
    """The :class:`SriovError` of ``scheduler.fail``'s ``{code, message, details}``."""
    return error_from_code(body["code"], body["message"], **(body.get("details") or {}))


PURGE = (
    "WITH d AS (DELETE FROM scheduler.requests WHERE request_id = ANY (ARRAY("
    "SELECT request_id FROM scheduler.requests "
    "WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)) RETURNING 1), "
    "e AS (DELETE FROM scheduler.reservations WHERE id = ANY (ARRAY("
    "SELECT id FROM scheduler.reservations "
    "WHERE ended_at < now() - make_interval(secs => $1) LIMIT $2)) RETURNING 1), "
    "f AS (DELETE FROM scheduler.refusals WHERE event_id = ANY (ARRAY("
    "SELECT event_id FROM scheduler.refusals "
    "WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)) RETURNING 1) "
    "SELECT (SELECT count(*) FROM d) + (SELECT count(*) FROM e) + (SELECT count(*) FROM f)"
)
"""Rows are picked once (an init plan each) and deleted by key, whatever the statistics say:
as a join (or ``IN``) with the picking subquery, the delete was planned as a nested loop that
re-ran the subquery for every row of the table once the statistics said it was empty."""


class Store:
    """A connection pool on the scheduler's schema."""

    def __init__(self, pool: asyncpg.Pool, epoch: str, dsn: str, timeout: float) -> None:
        self.pool = pool
        self.epoch = epoch
        self.dsn = dsn
        self.timeout = timeout
        self.placements: Combiner[bytes, Outcome | None] = Combiner(self._place_batch)

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        application_name: str = "sriov-scheduler",
        timeout: float = 10,
        wait_s: float = 60,
    ) -> Store:
        """Connect, create or upgrade the schema (once, whatever the number of replicas)."""
        pool = await database.open_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            wait_s=wait_s,
            timeout=timeout,
            server_settings={
                "application_name": application_name,
                "TimeZone": "UTC",
                # The functions' queries are single-table index walks that plan the same
                # whatever the values: plan each once per connection, not at every call.
                "plan_cache_mode": "force_generic_plan",
                # ... and index lookups whatever the statistics say: a plan made while a table
                # was small (autovacuum analyzed requests and reservations a few hundred rows
                # in) stayed a sequential scan per lookup as they grew, 0.6 ms per placement
                # for the request's key alone at 5,000 requests (fleet_scale --pg-detail).
                "enable_seqscan": "off",
            },
            reset=database.keep_session,  # no LISTEN, cursor or SET outlives a transaction
            prepare=lambda conn: migrations.migrate(
                conn, "scheduler", schema_migrations(), MIGRATE_LOCK, functions_script()
            ),
        )
        try:
            epoch = await pool.fetchval("SELECT value FROM scheduler.meta WHERE key='epoch'")
            store = cls(pool, str(epoch), dsn, timeout)
            await store.maintain("vfs", "hosts", "reservations", "requests")
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pool.close(), self.timeout)

    # --- one round trip per operation -------------------------------------------------------
    async def _call(self, what: str, sql: str, *args: Any) -> Any:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await self.pool.fetchval(sql, *args, timeout=self.timeout)
            except asyncpg.PostgresError as exc:
                state = getattr(exc, "sqlstate", "")
                if state == ERROR_STATE:
                    raise _refusal(exc) from None
                if state in RETRY_STATES and attempt < ATTEMPTS:
                    log.info("%s: %s (%s), retrying (%d)", what, type(exc).__name__, state, attempt)
                    await asyncio.sleep(0.005 * attempt)
                    continue
                if state not in RETRY_STATES and not database.outage(exc):
                    # the statement itself failed: waiting would not help (a durable consumer
                    # dead-letters it after its deliveries instead of waiting it out)
                    raise SriovError(
                        f"database error during {what}: {exc} (SQLSTATE {state})"
                    ) from exc
                raise Unavailable(
                    f"database error during {what}: {exc} (SQLSTATE {state}); nothing was "
                    "changed or the change committed: retry with the same request_id"
                ) from exc
            # the connection failed under the call: it either never committed or did, and a
            # retry with the same request_id is safe either way ("unavailable", not "internal")
            except database.UNREACHABLE as exc:
                raise Unavailable(
                    f"database unreachable during {what} ({type(exc).__name__}: {exc}): retry "
                    "with the same request_id; it is safe, requests are idempotent"
                ) from exc
        raise AssertionError("unreachable")

    async def _operation(self, op: str, args: bytes, event: type[m.Message]) -> Outcome:
        raw = await self._call(
            op, f"SELECT scheduler.{op}($1::jsonb, $2, $3::jsonb)::text",
            args.decode(), m.type_of(event), DESIRED,
        )  # fmt: skip
        return _outcome.decode(raw)

    async def place(self, args: bytes) -> Outcome:
        """Place or attach (``args`` is :class:`~sriov.scheduler.validation.PlaceArgs`), in
        one transaction with the placements that arrive meanwhile (group commit)."""
        out = await self.placements.submit(args)
        if out is None:  # a deadlock, a unique violation...: alone, retried as it always was
            return await self._operation("place", args, m.Reserved)
        return out

    async def _place_batch(self, items: list[bytes]) -> list[Outcome | BaseException | None]:
        raw = await self._call(
            "place", "SELECT scheduler.place_many($1::jsonb, $2, $3::jsonb)::text",
            (b"[%b]" % b",".join(items)).decode(), m.type_of(m.Reserved), DESIRED,
        )  # fmt: skip
        return [
            r.ok if r.ok is not None else _refused(r.refused) if r.refused is not None else None
            for r in _placed.decode(raw)
        ]

    async def release(self, args: bytes) -> Outcome:
        return await self._operation("release", args, m.Released)

    async def confirm(self, args: bytes) -> Outcome:
        raw = await self._call(
            "confirm", "SELECT scheduler.confirm($1::jsonb, $2)::text", args.decode(),
            m.type_of(m.Confirmed),
        )  # fmt: skip
        return _outcome.decode(raw)

    async def guest(self, guest_id: str) -> Outcome:
        raw = await self._call("get", "SELECT scheduler.guest_assignments($1)::text", guest_id)
        return _outcome.decode(raw)

    async def apply_state(
        self, devices: bytes, ids: list[str], hosts: bytes, ctx: bytes
    ) -> StateResult:
        """Apply a batch: ``devices`` a JSON array of DeviceRow, ``ids`` their ids in order."""
        raw = await self._call(
            "apply state",
            "SELECT scheduler.apply_state($1::json, $2::text[], $3::jsonb, $4::jsonb, $5, "
            "$6::jsonb)::text",
            devices.decode(), ids, hosts.decode(), ctx.decode(), m.type_of(m.Lost), DESIRED,
        )  # fmt: skip
        return _state_result.decode(raw)

    async def expire(self, limit: int, now: dt.datetime | None, ctx: bytes) -> int:
        """End unconfirmed reservations whose TTL passed (at ``now``, default the database's)."""
        n = await self._call(
            "expire",
            "SELECT scheduler.expire($1, coalesce($2, now()), $3::jsonb, $4, $5::jsonb)",
            limit, now, ctx.decode(), m.type_of(m.Expired), DESIRED,
        )  # fmt: skip
        return int(n)

    # --- the VF lifecycle ---------------------------------------------------------------------
    async def vf_applied(self, applied: bytes, ctx: bytes) -> str:
        """Take one of hostd's outcomes (``AppliedArgs``); returns what it did (stale,
        duplicate, ready, failed, degraded, clean, quarantined, repaired)."""
        return str(await self._call(
            "vf applied", "SELECT scheduler.vf_applied($1::jsonb, $2::jsonb, $3::jsonb, $4::jsonb)",
            applied.decode(), ctx.decode(), EVENT_TYPES, DESIRED,
        ))  # fmt: skip

    async def cordon(self, args: bytes) -> m.CordonReply:
        raw = await self._call("cordon", "SELECT scheduler.cordon($1::jsonb)::text", args.decode())
        return _cordon.decode(_tagged(raw, m.CordonReply))

    async def vf_reset(self, args: bytes) -> m.VfResetReply:
        raw = await self._call(
            "vf-reset", "SELECT scheduler.vf_reset($1::jsonb, $2::jsonb)::text",
            args.decode(), DESIRED,
        )  # fmt: skip
        return _reset.decode(_tagged(raw, m.VfResetReply))

    async def purge(self, older_than_s: float, limit: int = 5000) -> int:
        """Forget idempotency keys, ended reservations and recorded refusals older than the
        retention (what happened to them is in the placement events)."""
        return int(await self._call("purge", PURGE, older_than_s, limit))

    async def maintain(self, *tables: str, changed: float = 0.0) -> None:
        """ANALYZE some of our tables, skipping empty ones and, with ``changed``, those whose
        rows changed by less than that fraction since their last ANALYZE (PostgreSQL's count,
        whoever analyzed).

        The placement queries run as generic plans (planned once per connection), and fresh
        statistics invalidate them, so they are rebuilt for the table as it is now. An empty
        table is not analyzed: PostgreSQL then assumes a table of a few pages, which ranks
        the indexes right, whereas statistics saying "empty" cost every path at nothing and
        could leave a plan walking the wrong index once the table has grown. A table another
        replica is analyzing is skipped.
        """
        names = [n for n in (t.split(".")[1] for t in TABLES) if n in tables]
        async with self.pool.acquire() as conn:
            if changed:
                due = {
                    r[0]
                    for r in await conn.fetch(
                        "SELECT relname FROM pg_stat_user_tables WHERE schemaname = 'scheduler' "
                        "AND relname = ANY($1::text[]) "
                        "AND n_mod_since_analyze >= greatest($2 * n_live_tup, 50)",
                        names,
                        changed,
                    )
                }
                names = [n for n in names if n in due]
            for table in (f"scheduler.{n}" for n in names):
                async with conn.transaction():
                    if await conn.fetchval(
                        "SELECT pg_try_advisory_xact_lock($1, hashtext($2)) "
                        f"AND EXISTS (SELECT 1 FROM {table})",
                        ANALYZE_LOCK,
                        table,
                    ):
                        await conn.execute(f"ANALYZE {table}")

    async def refuse(self, *, event_id: str, guest_id: str, msg: m.Failed, ctx: bytes) -> None:
        """Queue the Failed event of a refused asynchronous request (computed in Python) and
        remember it by its id, so a redelivery of the request is known as answered."""
        await self._call(
            "record refusal",
            "WITH c AS (SELECT $5::jsonb AS a), r AS (INSERT INTO scheduler.refusals (event_id) "
            "VALUES ($1::uuid) ON CONFLICT DO NOTHING) "
            "INSERT INTO scheduler.outbox (event_id, guest_id, verb, type, payload, trace, source) "
            "SELECT $1::uuid, $2, 'failed', $3, $4, coalesce(c.a->'trace', '{}'), "
            "coalesce(c.a->>'source', 'sriov/scheduler') FROM c RETURNING id",
            event_id, guest_id, m.type_of(m.Failed), m.encode(msg).decode(), ctx.decode(),
        )  # fmt: skip

    async def refused(self, event_id: str) -> bool:
        """Whether the refusal with this event id was recorded (see :meth:`refuse`)."""
        return bool(await self._call(
            "look up refusal",
            "SELECT EXISTS (SELECT 1 FROM scheduler.refusals WHERE event_id = $1::uuid)",
            event_id,
        ))  # fmt: skip

    # --- the outbox: an ordered log (sriov.common.outbox) ------------------------------------
    @contextlib.asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[list[OutboxRow]]:
        """The oldest outbox rows, deleted when the block succeeds (kept when it raises).

        One relay at a time (a transaction-scoped advisory lock), so events leave in the
        order they were committed; other replicas get an empty batch and try again later.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", RELAY_LOCK):
                yield []
                return
            records = await conn.fetch(
                # the row id is the event's seq: allocated inside the transaction that made
                # the change, so it follows the id of every event that change depended on
                "SELECT id, event_id::text, guest_id, verb, type, CASE WHEN vf_pci IS NULL "
                "THEN (payload::jsonb || jsonb_build_object('seq', id))::text ELSE payload END, "
                "trace::text, source, created_at, vf_host, vf_pci "
                "FROM scheduler.outbox ORDER BY id LIMIT $1",
                limit,
            )
            bases: dict[str, dict[str, str]] = {}
            yield [_outbox_row(r, bases) for r in latest_desired(records)]
            if records:
                await conn.execute(
                    "DELETE FROM scheduler.outbox WHERE id = ANY($1::bigint[])",
                    [r[0] for r in records],
                )

    async def has_pending(self) -> bool:
        with suppress_instrumentation():  # the idle poll is not worth a trace each
            return bool(await self.pool.fetchval("SELECT EXISTS (SELECT 1 FROM scheduler.outbox)"))

    async def vacuum(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute("VACUUM scheduler.outbox")

    async def outbox_size(self) -> int:
        return int(await self._call("outbox size", "SELECT count(*) FROM scheduler.outbox"))
