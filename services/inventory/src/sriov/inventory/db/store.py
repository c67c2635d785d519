"""Load hosts under a row lock, save what changed, and write the outbox in the same transaction.

Every writer locks the host rows it touches with ``SELECT ... ORDER BY host_id FOR UPDATE``
before anything else, so concurrent replicas serialise per host and always lock in the same
order (no deadlock). Bulk writes use ``unnest`` over arrays: one statement per table per batch.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg
import msgspec

from sriov.common import schemas as m
from sriov.common.outbox import OutboxRow
from sriov.inventory import lifecycle
from sriov.inventory.db import outbox
from sriov.inventory.db.conn import Conn
from sriov.inventory.model import (
    HOST_COLUMNS,
    Changes,
    CountKey,
    DeviceRec,
    HostRow,
    HostView,
    PfRec,
)

DEVICE_FIELDS: tuple[str, ...] = tuple(f for f in m.Device.__struct_fields__)
ROW_FIELDS = ("vf_link_state", "removed", "guest_seq", "generation", "seq", "revision")
LIFE_FIELDS = ("hold_seq", "end_seq", "ready_seq", "outcome", "outcome_revision")
DEVICE_COLUMNS = DEVICE_FIELDS + ROW_FIELDS + LIFE_FIELDS
_PG_TYPES = {
    "vf_index": "int", "numa_node": "int", "iommu_group": "int", "present": "bool",
    "offload": "bool", "updated_at": "timestamptz", "removed": "bool", "guest_seq": "bigint",
    "generation": "bigint", "seq": "bigint", "revision": "bigint", "capabilities": "jsonb",
    "actual": "jsonb", "hold_seq": "bigint", "end_seq": "bigint", "ready_seq": "bigint",
    "outcome_revision": "bigint", "incarnation": "bigint",
}  # fmt: skip
_decode_pf = msgspec.json.Decoder(m.PF).decode
#: Device fields stored as jsonb (asyncpg hands jsonb over as text).
_JSON_FIELDS = {
    "capabilities": msgspec.json.Decoder(m.PfCapabilities).decode,
    "actual": msgspec.json.Decoder(m.VfConfig).decode,
}


def device_from_row(r: asyncpg.Record) -> m.Device:
    """A ``Device`` from a row holding (at least) its ``DEVICE_FIELDS``."""
    values = {f: r[f] for f in DEVICE_FIELDS}
    for f, decode in _JSON_FIELDS.items():
        if values[f] is not None:
            values[f] = decode(values[f])
    return m.Device(**values)


def _unnest(columns: Sequence[str]) -> str:
    return ", ".join(f"${i}::{_PG_TYPES.get(c, 'text')}[]" for i, c in enumerate(columns, 1))


_UPSERT_DEVICES = (
    f"INSERT INTO inventory.devices ({', '.join(DEVICE_COLUMNS)}) "
    f"SELECT * FROM unnest({_unnest(DEVICE_COLUMNS)}) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in DEVICE_COLUMNS if c != "id")
)
COPY_MIN_ROWS = 200
"""From this many device rows (a snapshot batch), they go in by COPY into a temporary table and
one upsert from it: measured at 3,200 rows, 105 ms against 750 ms for ``unnest`` over the 37
arrays (PostgreSQL's side) and a quarter of the client's CPU. Below it, creating the table
costs more than it saves."""
_DEVICES_IN = "devices_in"
_COLUMNS = ", ".join(DEVICE_COLUMNS)
_CREATE_DEVICES_IN = (
    f"CREATE TEMP TABLE {_DEVICES_IN} AS SELECT {_COLUMNS} FROM inventory.devices WITH NO DATA"
)
_UPSERT_DEVICES_IN = _UPSERT_DEVICES.replace(
    f"SELECT * FROM unnest({_unnest(DEVICE_COLUMNS)})", f"SELECT {_COLUMNS} FROM {_DEVICES_IN}"
)
_HOST_SET = [c for c in HOST_COLUMNS if c != "host_id"]
_UPDATE_HOST = (
    "UPDATE inventory.hosts SET "
    + ", ".join(
        f"{c} = ${i}" + ("::jsonb" if c == "diagnostics" else "")
        for i, c in enumerate(_HOST_SET, 2)
    )
    + ", updated_at = now() WHERE host_id = $1"
)


@dataclass
class Loaded:
    views: dict[str, HostView]
    now: dt.datetime


@dataclass
class Saved:
    devices_written: int = 0
    announced: int = 0
    outbox: list[OutboxRow] = field(default_factory=list)


# --- load ---------------------------------------------------------------------------------
async def load(
    conn: Conn,
    host_ids: Iterable[str],
    *,
    full: Iterable[str] = (),
    only: Sequence[str] | None = None,
    create: bool = False,
) -> Loaded:
    """Lock and load hosts; ``full`` ones with their PFs and devices (with ``only``, just
    those devices: partial views); ``create`` missing ones."""
    ids = sorted(set(host_ids))
    if create and ids:
        await conn.execute(
            "INSERT INTO inventory.hosts (host_id) SELECT x FROM unnest($1::text[]) AS x "
            "ORDER BY x ON CONFLICT (host_id) DO NOTHING",
            ids,
        )
    rows = await conn.fetch(
        "SELECT *, now() AS db_now FROM inventory.hosts WHERE host_id = ANY($1::text[]) "
        "ORDER BY host_id FOR UPDATE",
        ids,
    )
    now = rows[0]["db_now"] if rows else await _db_now(conn)
    hosts = {r["host_id"]: _host(r) for r in rows}
    full_ids = sorted(set(full) & set(hosts))
    pfs: dict[str, dict[str, PfRec]] = {h: {} for h in full_ids}
    devices: dict[str, dict[str, DeviceRec]] = {h: {} for h in full_ids}
    if full_ids:
        for r in await conn.fetch(
            "SELECT host_id, pci_address, generation, seq, data::text AS data "
            "FROM inventory.pfs WHERE host_id = ANY($1::text[])",
            full_ids,
        ):
            pfs[r["host_id"]][r["pci_address"]] = PfRec(
                _decode_pf(r["data"]), (r["generation"], r["seq"])
            )
        # by host through the (host_id, pci_address) key, the only index of every device by
        # host (the listing indexes leave removed ones out): without it a restart storm's
        # loads doubled inventory's database CPU (63 s against 29-36 s at 640,000 VFs)
        for r in await conn.fetch(
            f"SELECT {', '.join(DEVICE_COLUMNS)} FROM inventory.devices "
            + ("WHERE host_id = ANY($1::text[])" if only is None else "WHERE id = ANY($1::text[])"),
            full_ids if only is None else list(only),
        ):
            rec = _device(r)
            if rec.device.host_id in devices:
                devices[rec.device.host_id][rec.device.pci_address] = rec
    partial = only is not None
    views = {
        h: HostView(row, pfs[h], devices[h], partial=partial) if h in pfs else HostView(row)
        for h, row in hosts.items()
    }
    return Loaded(views, now)


async def _db_now(conn: Conn) -> dt.datetime:
    value = await conn.fetchval("SELECT now()")
    assert isinstance(value, dt.datetime)
    return value


def _host(r: asyncpg.Record) -> HostRow:
    return HostRow(**{c: r[c] for c in HOST_COLUMNS}, updated_at=r["updated_at"])


def _device(r: asyncpg.Record) -> DeviceRec:
    return DeviceRec(
        device_from_row(r),
        (r["generation"], r["seq"]),
        revision=r["revision"],
        removed=r["removed"],
        guest_seq=r["guest_seq"],
        vf_link_state=r["vf_link_state"],
        life=lifecycle.Stamps(*(r[f] for f in LIFE_FIELDS)),
    )


# --- save ---------------------------------------------------------------------------------
async def save(conn: Conn, views: Iterable[HostView], now: dt.datetime, source: str) -> Saved:
    """Write every change of ``views`` and its announcement (outbox), in the caller's txn."""
    views = list(views)
    changes = [(v, v.finalize(now)) for v in views]
    announce_devices = [rec for _v, ch in changes for rec in ch.announce]
    announce_hosts = [v for v, ch in changes if ch.announce_host]
    revisions = await next_revisions(conn, len(announce_devices) + len(announce_hosts))
    split = len(announce_devices)
    for rec, rev in zip(announce_devices, revisions[:split], strict=True):
        rec.revision = rev
    for view, rev in zip(announce_hosts, revisions[split:], strict=True):
        view.host.revision = rev
    written = [rec for _v, ch in changes for rec in ch.devices]
    if written:
        await _write_devices(conn, written)
    purge = [i for _v, ch in changes for i in ch.purge]
    if purge:
        await conn.execute("DELETE FROM inventory.devices WHERE id = ANY($1::text[])", purge)
    await _save_pfs(conn, changes)
    await _save_counts(conn, [v for v, ch in changes if ch.devices or ch.purge])
    host_rows = [v.host for v, ch in changes if ch.host_row or ch.announce_host]
    if host_rows:
        await conn.executemany(_UPDATE_HOST, [_host_args(h) for h in host_rows])
    announced = outbox.rows(announce_devices, announce_hosts, source)
    await outbox.write(conn, announced)
    return Saved(len(written), len(announced), announced)


async def next_revisions(conn: Conn, n: int) -> list[int]:
    if n == 0:
        return []
    rows = await conn.fetch(
        "SELECT nextval('inventory.revision') AS r FROM generate_series(1, $1::int)", n
    )
    return sorted(r["r"] for r in rows)


async def _save_pfs(conn: Conn, changes: list[tuple[HostView, Changes]]) -> None:
    upserts: list[tuple[str, str, int, int, str]] = []
    drops: list[tuple[str, str]] = []
    for view, ch in changes:
        for pci, rec in ch.pfs:
            upserts.append((view.host.host_id, pci, *rec.stamp, m.encode(rec.pf).decode()))
        drops.extend((view.host.host_id, pci) for pci in ch.drop_pfs)
    if upserts:
        await conn.executemany(
            "INSERT INTO inventory.pfs (host_id, pci_address, generation, seq, data) "
            "VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (host_id, pci_address) DO UPDATE "
            "SET generation = EXCLUDED.generation, seq = EXCLUDED.seq, data = EXCLUDED.data",
            upserts,
        )
    if drops:
        await conn.execute(
            "DELETE FROM inventory.pfs p USING unnest($1::text[], $2::text[]) AS d(h, a) "
            "WHERE p.host_id = d.h AND p.pci_address = d.a",
            [h for h, _ in drops],
            [a for _, a in drops],
        )


_COUNTS_IN = (
    "unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::int[]) "
    "AS d(host_id, model, dev_type, vendor_device_id, attached, n)"
)
#: Moves the counts of partial views by a change: a row that reaches 0 goes (n > 0 is a
#: constraint), the others are added to, a new key is inserted. A count that would go below
#: 0 breaks the constraint: the rows and their counts disagreed, and the transaction says so.
_MOVE_COUNTS = f"""
WITH d AS (SELECT * FROM {_COUNTS_IN}),
gone AS (
    DELETE FROM inventory.device_counts c USING d
    WHERE (c.host_id, c.model, c.dev_type, c.vendor_device_id, c.attached)
        = (d.host_id, d.model, d.dev_type, d.vendor_device_id, d.attached)
      AND c.n + d.n = 0
    RETURNING c.host_id, c.model, c.dev_type, c.vendor_device_id, c.attached),
moved AS (
    UPDATE inventory.device_counts c SET n = c.n + d.n FROM d
    WHERE (c.host_id, c.model, c.dev_type, c.vendor_device_id, c.attached)
        = (d.host_id, d.model, d.dev_type, d.vendor_device_id, d.attached)
      AND c.n + d.n <> 0
    RETURNING c.host_id, c.model, c.dev_type, c.vendor_device_id, c.attached)
INSERT INTO inventory.device_counts
SELECT * FROM d
WHERE (host_id, model, dev_type, vendor_device_id, attached)
    NOT IN (SELECT * FROM gone UNION ALL SELECT * FROM moved)"""


async def _save_counts(conn: Conn, views: Sequence[HostView]) -> None:
    """Per-host device counts by the listing filters (what ``devices.list`` totals sum):
    recounted for whole hosts, moved by the change for partial views."""
    whole = [v for v in views if not v.partial]
    if whole:
        await conn.execute(
            "DELETE FROM inventory.device_counts WHERE host_id = ANY($1::text[])",
            [v.host.host_id for v in whole],
        )
        counts: Counter[CountKey] = Counter()
        for v in whole:
            counts.update(v.counts())
        await _put_counts(
            conn, f"INSERT INTO inventory.device_counts SELECT * FROM {_COUNTS_IN}", counts
        )
    moved = {k: n for v in views if v.partial for k, n in v.counts_change().items()}
    await _put_counts(conn, _MOVE_COUNTS, moved)


async def _put_counts(conn: Conn, sql: str, counts: Mapping[CountKey, int]) -> None:
    if counts:
        keys = list(counts)
        await conn.execute(
            sql, *([k[i] for k in keys] for i in range(5)), [counts[k] for k in keys]
        )


async def _write_devices(conn: Conn, recs: Sequence[DeviceRec]) -> None:
    columns = _device_arrays(recs)
    if len(recs) < COPY_MIN_ROWS:
        await conn.execute(_UPSERT_DEVICES, *columns)
        return
    # the temporary table lives only inside this transaction (a failure rolls it back too)
    await conn.execute(_CREATE_DEVICES_IN)
    await conn.copy_records_to_table(_DEVICES_IN, records=zip(*columns, strict=True))
    await conn.execute(_UPSERT_DEVICES_IN)
    await conn.execute(f"DROP TABLE {_DEVICES_IN}")


def _device_arrays(recs: Sequence[DeviceRec]) -> list[list[object]]:
    cols: list[list[object]] = [[] for _ in DEVICE_COLUMNS]
    nd = len(DEVICE_FIELDS)
    json_at = [DEVICE_FIELDS.index(f) for f in _JSON_FIELDS]
    for rec in recs:
        values = list(msgspec.structs.astuple(rec.device))
        for i in json_at:
            if values[i] is not None:
                values[i] = m.encode(values[i]).decode()
        for i in range(nd):
            cols[i].append(values[i])
        extra = (
            rec.vf_link_state, rec.removed, rec.guest_seq, *rec.stamp, rec.revision,
            *rec.life.as_tuple(),
        )  # fmt: skip
        for j, v in enumerate(extra, nd):
            cols[j].append(v)
    return cols


def _host_args(h: HostRow) -> tuple[object, ...]:
    return (h.host_id, *(getattr(h, c) for c in _HOST_SET))


# --- liveness -----------------------------------------------------------------------------
_OVERDUE = (
    "FROM inventory.hosts WHERE status <> 'offline' "
    "AND (last_seen IS NULL OR last_seen < now() - make_interval("
    "secs => greatest($1::float8, 2 * heartbeat_interval_s)))"
)


async def any_overdue(conn: Conn, timeout_s: float) -> bool:
    return bool(await conn.fetchval(f"SELECT EXISTS (SELECT 1 {_OVERDUE})", timeout_s))


async def overdue_hosts(conn: Conn, timeout_s: float, limit: int = 200) -> list[str]:
    """Hosts not heard from in time (at least twice their heartbeat interval), locked."""
    rows = await conn.fetch(
        f"SELECT host_id {_OVERDUE} ORDER BY host_id LIMIT $2 FOR UPDATE SKIP LOCKED",
        timeout_s,
        limit,
    )
    return [r["host_id"] for r in rows]


async def hosts_of_devices(conn: Conn, device_ids: Sequence[str]) -> list[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT host_id FROM inventory.devices WHERE id = ANY($1::text[])",
        list(device_ids),
    )
    return [r["host_id"] for r in rows]
