"""The placement workload through JetStream: requests published to SRIOV_PLACEMENT_REQUESTS,
outcomes read from the guest's events in SRIOV_PLACEMENT, as another system would do it.

Same cycle, same client view and same checks as :class:`workload.Workload` (it is one, with
the transport swapped): place and attach wait for the request's ``Reserved`` (or ``Failed``,
raised as the error a synchronous caller would get), release for its ``Released``. A request
is published again with the same request id when no outcome came in time, and now and then
on purpose, so the scheduler's idempotency is exercised through the inbox too. Confirm has
no inbox subject and goes through the endpoint.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from dataclasses import dataclass, field

from workload import Workload, final, sched

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.errors import NotFound, SriovError, Unavailable, error_from_code

OPS = {"place": "place", "attach": "attach", "release": "release"}
OUTCOME_WAIT_S = 10.0
"""Publish again after this long without an outcome (the request id keeps it one request)."""


@dataclass
class InboxWorkload(Workload):
    duplicates: float = 0.1
    """Share of requests published twice at once."""
    rng: random.Random = field(default_factory=random.Random)

    async def _attempts(
        self, name: str, req: m.Message, retry_for: float, failed: collections.Counter[str]
    ) -> m.PlacementReply:
        if name not in OPS:
            return await super()._attempts(name, req, retry_for, failed)
        guest, rid = req.guest_id, req.request_id  # type: ignore[attr-defined]
        subject = subjects.placement_request(guest, OPS[name])
        deadline = time.monotonic() + retry_for
        while True:
            try:
                await self.bus.js_publish(subject, req)
                if self.rng.random() < self.duplicates:
                    await self.bus.js_publish(subject, req)  # another event id: the same request
                reply = await self._outcome(guest, rid, name)
            except SriovError as exc:
                self.errors[f"inbox-{name}:{exc.code}"] += 1
                if final(exc):
                    self.answered += 1
                    raise
                failed[exc.code] += 1
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
                continue
            if reply is not None:
                self.answered += 1
                return reply
            if name == "release" and not await self._holds(guest):
                self.answered += 1  # nothing was held: no event announces a no-op release
                return m.PlacementReply(
                    request_id=rid, guest_id=guest, host_id=None, assignments=[]
                )
            self.errors[f"inbox-{name}:no-outcome"] += 1
            failed["no-outcome"] += 1
            if time.monotonic() > deadline:
                raise SriovError(f"no outcome for {name} {rid} within {retry_for}s")

    async def _outcome(self, guest: str, rid: str, name: str) -> m.PlacementReply | None:
        """The request's outcome from the guest's events; None if none came in time."""
        want = m.Released if name == "release" else m.Reserved
        flt = subjects.PLACEMENT_EVENT.format(guest_id=subjects.token(guest, "guest_id"), verb="*")
        deadline = time.monotonic() + OUTCOME_WAIT_S
        while time.monotonic() < deadline:
            try:
                events = [
                    m.PLACEMENT_EVENTS.decode(stored.data)
                    async for stored in self.bus.history(subjects.STREAM_PLACEMENT, flt)
                ]
            except Exception as exc:  # the stream electing a leader: the caller retries
                raise Unavailable(f"reading {flt}: {type(exc).__name__}: {exc}") from exc
            for ev in events:
                if ev.request_id != rid:
                    continue
                if isinstance(ev, m.Failed):
                    raise error_from_code(ev.error.code, ev.error.message)
                if isinstance(ev, want):
                    return m.PlacementReply(
                        request_id=rid,
                        guest_id=guest,
                        host_id=getattr(ev, "host_id", None),
                        assignments=ev.assignments if isinstance(ev, m.Reserved) else [],
                        released=ev.device_ids if isinstance(ev, m.Released) else [],
                    )
            await asyncio.sleep(0.3)
        return None

    async def _holds(self, guest: str) -> bool:
        try:
            get = m.GetRequest(guest_id=guest)
            reply = await self.bus.request(sched("get"), get, m.PlacementReply)
        except NotFound:
            return False
        return bool(reply.assignments)
