"""hostd's outcomes for the desired states the scheduler published (``VfApplied``).

One durable consumer on ``sriov.v1.host.*.vf.applied`` (stream ``SRIOV_HOST_EVENTS``) shared
by the replicas, ``scheduler-vf-applied``: one fixed name, the only durable the scheduler's
NATS identity may create on that stream (a per-epoch name cannot be granted without granting
inventory's durable too; an outcome the name's ack floor skips after a database is recreated
is for a revision that database never published). Each outcome
is one transaction (``scheduler.vf_applied``) acknowledged after it committed: ``ready`` on
every VF of the guest's request emits ``Ready``; ``failed`` while preparing ends the
reservation (``Failed``, op ``prepare``) and cleans the VF, while a VF already ready keeps
its guest (``degraded``: a re-apply failed, recorded on the VF); ``clean`` offers the VF
again; ``quarantined`` withholds it until an operator's ``vf-reset``; ``repaired`` is
counted. An outcome for a revision other
than the VF's current one is ignored, so redeliveries and replays are harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec

from sriov.common import schemas as m
from sriov.common import subjects, telemetry
from sriov.common.bus import Bus, ConsumerSpec, ConsumerStats, Delivery
from sriov.scheduler.consumer import consume
from sriov.scheduler.metrics import Metrics
from sriov.scheduler.store import Store
from sriov.scheduler.validation import applied_args

log = logging.getLogger(__name__)


DURABLE = "scheduler-vf-applied"


class Lifecycle:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        *,
        source: str,
        metrics: Metrics | None = None,
        on_commit: Callable[[], None] = lambda: None,
        concurrency: int = 8,
    ) -> None:
        self.store = store
        self.bus = bus
        self.source = source
        self.metrics = metrics or Metrics()
        self.on_commit = on_commit
        self.stats = ConsumerStats()
        self.spec = ConsumerSpec(
            stream=subjects.STREAM_HOST_EVENTS,
            durable=DURABLE,
            filter_subjects=[subjects.HOST_VF_APPLIED_ALL],
            concurrency=concurrency,
            batch=concurrency * 4,
            max_deliver=10,
            # one outcome is one short transaction, and a redelivery is idempotent (same
            # revision: "duplicate"); a killed replica's batch must not hold VFs for 30 s
            ack_wait_s=10,
        )

    async def run(self, stop: asyncio.Event) -> None:
        await consume(self.bus, self.spec, m.HOST_EVENTS, self.handle, stop=stop,
                      stats=self.stats)  # fmt: skip

    async def handle(self, msg: m.HostEventT, delivery: Delivery) -> None:
        if not isinstance(msg, m.VfApplied):
            return
        await self.apply(msg)

    async def apply(self, ev: m.VfApplied) -> str:
        """Take one outcome; returns what it did (see ``scheduler.vf_applied``)."""
        ctx = msgspec.json.encode({"source": self.source, "trace": telemetry.inject({})})
        did = await self.store.vf_applied(msgspec.json.encode(applied_args(ev)), ctx)
        self.metrics.applied.add(1, {"outcome": ev.outcome, "effect": did})
        if ev.outcome == "repaired":
            log.warning("host %s repaired a drift on VF %s: %s", ev.host_id, ev.pci_address,
                        ", ".join(ev.drift) or "unspecified")  # fmt: skip
        elif did in ("failed", "quarantined", "degraded"):
            log.warning("host %s: VF %s %s (revision %d): %s", ev.host_id, ev.pci_address,
                        did, ev.revision, ev.error or "no reason given")  # fmt: skip
        if did in ("ready", "failed"):
            self.on_commit()
        return did
