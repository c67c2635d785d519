"""Read queries behind the micro endpoints and the fleet gauges."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from sriov.common import schemas as m
from sriov.inventory.db.conn import Conn
from sriov.inventory.db.store import DEVICE_FIELDS, device_from_row

_DEVICE_SELECT = f"SELECT {', '.join(DEVICE_FIELDS)} FROM inventory.devices"
#: The guide's order: model, then address descending (host and id break ties).
_HOST_COLUMNS = (
    "host_id, hostname, status, last_seen, greatest(generation, 0) AS generation, "
    "pf_count, vf_count, vf_free, errors, problems"
)


@dataclass(frozen=True)
class DeviceFilter:
    host_id: str | None = None
    model: str | None = None
    dev_type: str | None = None
    vendor_device_id: str | None = None
    guest_id: str | None = None
    state: str = "any"
    lifecycle: str | None = None

    @property
    def direct(self) -> bool:
        """Count and page on the devices' own indexes: the per-host counts know neither a
        device's guest nor its lifecycle state."""
        return self.guest_id is not None or self.lifecycle is not None

    def where(self, counts: bool = False) -> tuple[str, list[object]]:
        """SQL conditions on ``devices`` (or, ``counts``, on ``device_counts``)."""
        clauses = [] if counts else ["NOT removed"]
        args: list[object] = []
        for column in ("host_id", "model", "dev_type", "vendor_device_id", "guest_id", "lifecycle"):
            value = getattr(self, column)
            if value is not None:
                args.append(value)
                clauses.append(f"{column} = ${len(args)}")
        if self.state != "any":
            attached = self.state == "attached"
            if counts:
                clauses.append("attached" if attached else "NOT attached")
            else:
                clauses.append("guest_id IS NOT NULL" if attached else "guest_id IS NULL")
        return " AND ".join(clauses) or "true", args


def device(r: asyncpg.Record) -> m.Device:
    return device_from_row(r)


#: The listing order: model, host, then address descending (the guide's order for a host).
ORDER = "model, host_id, pci_address DESC, id"
_D_ORDER = "d.model, d.host_id, d.pci_address DESC, d.id"
_COLUMNS = ", ".join("d." + f for f in DEVICE_FIELDS)


async def list_devices(
    conn: Conn, flt: DeviceFilter, limit: int, offset: int
) -> tuple[list[m.Device], int]:
    """One page in listing order, and the total, from one consistent snapshot.

    The per-host counts say which (model, host) groups the page covers, so the page scan
    reads those groups only and skips at most one host's devices, however deep the page.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        total = await count_devices(conn, flt)
        if flt.direct:
            return await _page(conn, flt, limit, offset, None), total
        where, args = flt.where(counts=True)
        await conn.execute(STREAMING)
        groups = await conn.fetch(groups_sql(flt, where, len(args)), *args, offset, limit)
        await conn.execute(PLANNER_DEFAULTS)  # the page below plans as it always did
        window = [g for g in groups if g["before"] < offset + limit]
        if not window:
            return [], total
        skip = offset - int(window[0]["before"])
        pairs = ([g["model"] for g in window], [g["host_id"] for g in window])
        return await _page(conn, flt, limit, skip, pairs), total


STREAMING = "SET LOCAL enable_hashagg = off; SET LOCAL enable_sort = off"
"""For the groups query: summed as the counts' index streams them, the walk stopping at the
page. Left to itself the planner hashed and sorted every group of the fleet first: 24 ms
against 8 (p50, 10,000 hosts, 2-core machine). Not for the page query: without hashing its
groups filter, a page took 200 ms."""
PLANNER_DEFAULTS = "SET LOCAL enable_hashagg TO DEFAULT; SET LOCAL enable_sort TO DEFAULT"


def groups_sql(flt: DeviceFilter, where: str, n: int) -> str:
    """The (model, host) groups of the listing from the one holding row ``$n+1`` (the
    offset) on, at most ``$n+2`` (the limit: a page spans no more groups than it has rows),
    each with the rows ``before`` it. Ordered by what the filter leaves free, so that a fixed
    model or host is not sorted on (the planner does not see that it is constant there)."""
    order = ", ".join(c for c in ("model", "host_id") if getattr(flt, c) is None) or "model"
    return (
        "SELECT model, host_id, n, upto - n AS before FROM ("
        f"SELECT model, host_id, n, sum(n) OVER (ORDER BY {order} ROWS UNBOUNDED PRECEDING) "
        "AS upto FROM ("
        # int per group: the running sum is then bigint, not numeric (a third faster)
        "SELECT model, host_id, sum(n)::int AS n FROM inventory.device_counts "
        f"WHERE {where} GROUP BY model, host_id) g) c "
        f"WHERE upto > ${n + 1}::bigint ORDER BY {order} LIMIT ${n + 2}"
    )


async def _page(
    conn: Conn,
    flt: DeviceFilter,
    limit: int,
    offset: int,
    groups: tuple[list[str], list[str]] | None,
) -> list[m.Device]:
    where, args = flt.where()
    if groups is not None:
        args += list(groups)
        where += (
            f" AND (model, host_id) IN (SELECT * FROM unnest(${len(args) - 1}::text[], "
            f"${len(args)}::text[]))"
        )
    n = len(args)
    rows = await conn.fetch(page_sql(where, n), *args, limit, offset)
    return [device(r) for r in rows]


def page_sql(where: str, n: int) -> str:
    """A page of the listing: ``where`` on ``$1..$n``, then ``LIMIT $n+1 OFFSET $n+2``.

    The page's ids are picked once (an init plan) and its rows read by key: as a join with
    the picking query, the page was planned as a nested loop re-running it per device once
    the statistics said the table was empty (over 60 s at 640,000 VFs; sriov.devtools.plans).
    """
    return (
        f"SELECT {_COLUMNS} FROM inventory.devices d WHERE d.id = ANY (ARRAY("
        f"SELECT id FROM inventory.devices WHERE {where} "
        f"ORDER BY {ORDER} LIMIT ${n + 1} OFFSET ${n + 2})) ORDER BY {_D_ORDER}"
    )


async def count_devices(conn: Conn, flt: DeviceFilter) -> int:
    if flt.direct:
        where, args = flt.where()
        sql = f"SELECT count(*) FROM inventory.devices WHERE {where}"
    else:
        where, args = flt.where(counts=True)
        sql = f"SELECT coalesce(sum(n), 0) FROM inventory.device_counts WHERE {where}"
    return int(await conn.fetchval(sql, *args))


async def get_device(
    conn: Conn, device_id: str | None, host_id: str | None, pci: str | None
) -> m.Device | None:
    if device_id is not None:
        r = await conn.fetchrow(f"{_DEVICE_SELECT} WHERE id = $1 AND NOT removed", device_id)
    else:
        r = await conn.fetchrow(
            f"{_DEVICE_SELECT} WHERE host_id = $1 AND pci_address = $2 AND NOT removed",
            host_id,
            pci,
        )
    return device(r) if r is not None else None


def host_info(r: asyncpg.Record) -> m.HostInfo:
    return m.HostInfo(**dict(r.items()))


async def list_hosts(
    conn: Conn, status: str | None, limit: int, offset: int
) -> tuple[list[m.HostInfo], int]:
    where, args = ("WHERE status = $1", [status]) if status else ("", [])
    n = len(args)
    rows = await conn.fetch(
        f"SELECT {_HOST_COLUMNS} FROM inventory.hosts {where} ORDER BY host_id "
        f"LIMIT ${n + 1} OFFSET ${n + 2}",
        *args,
        limit,
        offset,
    )
    total = int(await conn.fetchval(f"SELECT count(*) FROM inventory.hosts {where}", *args))
    return [host_info(r) for r in rows], total


async def get_host(conn: Conn, host_id: str) -> m.HostInfo | None:
    r = await conn.fetchrow(
        f"SELECT {_HOST_COLUMNS} FROM inventory.hosts WHERE host_id = $1", host_id
    )
    return host_info(r) if r is not None else None


UNAVAILABLE = (
    "NOT removed AND guest_id IS NULL AND NOT (present AND coalesce(lifecycle, 'free') = 'free')"
)
"""Unattached VFs that are not free (the predicate of the index ``devices_unavailable``)."""


async def fleet_counts(
    conn: Conn,
) -> tuple[list[tuple[str, str, int, int, int]], dict[str, int]]:
    """VFs by (host, model) with free/reserved counts, and hosts by status (for gauges):
    from the listing counts, less the few VFs neither attached nor free."""
    totals = await conn.fetch(
        "SELECT host_id, model, sum(n)::int AS total, "
        "coalesce(sum(n) FILTER (WHERE attached), 0)::int AS reserved "
        "FROM inventory.device_counts GROUP BY host_id, model ORDER BY host_id, model"
    )
    unavailable = {
        (r["host_id"], r["model"]): r["n"]
        for r in await conn.fetch(
            "SELECT host_id, model, count(*)::int AS n FROM inventory.devices "
            f"WHERE {UNAVAILABLE} GROUP BY host_id, model"
        )
    }
    hosts = await conn.fetch("SELECT status, count(*) AS n FROM inventory.hosts GROUP BY status")
    vfs = []
    for r in totals:
        host, model, total, reserved = r["host_id"], r["model"], r["total"], r["reserved"]
        free = total - reserved - unavailable.get((host, model), 0)
        vfs.append((host, model, total, free, reserved))
    return vfs, {r["status"]: r["n"] for r in hosts}


async def host_statuses(conn: Conn) -> dict[str, str]:
    """Every host's liveness status (for the per-host gauge)."""
    rows = await conn.fetch("SELECT host_id, status FROM inventory.hosts")
    return {r["host_id"]: r["status"] for r in rows}
