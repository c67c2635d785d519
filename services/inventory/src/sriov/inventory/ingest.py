"""Consume hostd's events: a fetched batch becomes one transaction (load, apply, save).

The durable consumer is shared by every replica, so a host's events may be split across
replicas and batches; the per-object (generation, seq) rules in :mod:`model` make the
result independent of that. A batch that fails (a malformed event, a deadlock) is rolled
back and the bus retries its messages one by one, dead-lettering the culprit.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

from sriov.common import database, subjects
from sriov.common import schemas as m
from sriov.common.bus import ConsumerSpec, Delivery
from sriov.common.errors import InvalidRequest
from sriov.inventory.db import store
from sriov.inventory.db.conn import Pool
from sriov.inventory.model import HOST_WIDE

log = logging.getLogger(__name__)
DURABLE = "inventory-host-events"


def consumer_spec(batch: int = 100, ack_wait_s: float = 10) -> ConsumerSpec:
    return ConsumerSpec(
        subjects.STREAM_HOST_EVENTS,
        DURABLE,
        [subjects.HOST_EVENTS_ALL],
        batch=batch,
        max_ack_pending=max(1000, 4 * batch),
        ack_wait_s=ack_wait_s,
        # the next batch's decoding and model work overlaps this one's commit; safe as two
        # replicas are (hosts locked in order, per-object (generation, seq) rules)
        batches_in_flight=2,
    )


def type_name(ev: m.Message) -> str:
    """The message's ``type`` tag (read from the class: ``m.type_of`` is slow per call)."""
    return str(type(ev).__struct_config__.tag)


class HostEvents:
    """Applies hostd events to the fleet table; after commit, wakes the relay."""

    def __init__(
        self,
        pool: Pool,
        source: str,
        *,
        committed: Callable[[], None] = lambda: None,
        rescan: Callable[[Sequence[str]], None] = lambda _hosts: None,
        counted: Callable[[Counter[tuple[str, str]]], None] = lambda _c: None,
    ) -> None:
        self.pool = pool
        self.source = source
        self.committed = committed
        self.rescan = rescan
        self.counted = counted

    async def handle(self, ev: m.HostEventT, d: Delivery) -> None:
        await self.apply([(ev, d)])

    async def handle_batch(self, items: list[tuple[m.HostEventT, Delivery]]) -> None:
        await self.apply(items)

    async def apply(self, items: Sequence[tuple[m.HostEventT, Delivery]]) -> None:
        by_host: dict[str, list[m.HostEventT]] = defaultdict(list)
        for ev, d in items:
            check_origin(ev, d.subject)
            by_host[ev.host_id].append(ev)
        full = {h for h, evs in by_host.items() if any(not isinstance(e, HOST_WIDE) for e in evs)}
        outcomes: Counter[tuple[str, str]] = Counter()
        with database.outages("applying host events"):  # waited out, not dead-lettered
            async with self.pool.acquire() as conn, conn.transaction():
                loaded = await store.load(conn, by_host, full=full, create=True)
                for host_id, evs in by_host.items():
                    view = loaded.views[host_id]
                    for ev in sorted(evs, key=lambda e: (e.generation, e.seq)):
                        outcomes[(type_name(ev), view.apply(ev, loaded.now))] += 1
                saved = await store.save(conn, loaded.views.values(), loaded.now, self.source)
        rescan = [h for h, v in loaded.views.items() if v.rescan]
        if saved.outbox:
            self.committed()
        if rescan:
            self.rescan(rescan)
        self.counted(outcomes)
        stale = sum(n for (_t, o), n in outcomes.items() if o == "stale")
        if stale:
            log.debug("dropped %d stale host event(s)", stale)


def check_origin(ev: m.HostEventT, subject: str) -> None:
    """An event must name the host whose subject it came on (and a usable host id)."""
    subjects.token(ev.host_id, "host_id")
    parts = subject.split(".")
    origin = parts[3] if len(parts) > 3 else ""
    if origin != ev.host_id:
        raise InvalidRequest(
            f"{type_name(ev)} on {subject} claims host_id {ev.host_id!r}, "
            f"but the subject belongs to host {origin!r}",
            field="host_id",
        )
