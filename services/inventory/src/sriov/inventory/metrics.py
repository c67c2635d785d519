"""Inventory's OpenTelemetry instruments: events by outcome, fleet gauges, relay progress.

Gauge callbacks run synchronously inside the metrics reader, so they read a snapshot that
:func:`refresh` (an async loop) computes from the database every few seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from sriov.common import telemetry
from sriov.common.bus import ConsumerStats


@dataclass
class FleetSnapshot:
    vfs: list[tuple[str, str, int, int, int]] = field(default_factory=list)
    """(host_id, model, total, free, reserved)."""
    hosts: dict[str, int] = field(default_factory=dict)
    """Hosts by status."""
    host_status: dict[str, str] = field(default_factory=dict)
    """Each host's status."""
    outbox: int = 0


class Metrics:
    def __init__(self, consumers: dict[str, ConsumerStats], meter: Meter | None = None) -> None:
        meter = meter or telemetry.meter()
        self.fleet = FleetSnapshot()
        self.consumers = consumers
        self.events = meter.create_counter(
            "sriov.inventory.events",
            unit="{event}",
            description="Events consumed, by stream, message type and outcome (applied, stale)",
        )
        self.published = meter.create_counter(
            "sriov.inventory.state.published",
            unit="{message}",
            description="Device and host state messages relayed from the outbox to SRIOV_STATE",
        )
        meter.create_observable_counter(
            "sriov.inventory.events.rejected",
            [self._rejected],
            unit="{event}",
            description="Events dead-lettered (malformed or failing) or ignored (unknown type)",
        )
        meter.create_observable_gauge(
            "sriov.inventory.vfs",
            [self._vfs],
            unit="{vf}",
            description="VFs by host, model and state (total, free, reserved)",
        )
        meter.create_observable_gauge(
            "sriov.inventory.hosts",
            [self._hosts],
            unit="{host}",
            description="Hosts by liveness status (online, offline, unknown)",
        )
        meter.create_observable_gauge(
            "sriov.inventory.host.online",
            [self._host_online],
            unit="1",
            description="Host liveness: 1 while the host's heartbeats arrive, else 0",
        )
        meter.create_observable_gauge(
            "sriov.inventory.outbox.pending",
            [lambda _o: [Observation(self.fleet.outbox)]],
            unit="{message}",
            description="State messages written but not yet relayed to NATS",
        )

    def count(self, stream: str, outcomes: dict[tuple[str, str], int]) -> None:
        for (kind, outcome), n in outcomes.items():
            self.events.add(n, {"stream": stream, "type": kind, "outcome": outcome})

    def _rejected(self, _o: CallbackOptions) -> Iterable[Observation]:
        for name, st in self.consumers.items():
            yield Observation(st.dead_lettered, {"consumer": name, "reason": "dead_lettered"})
            yield Observation(st.unknown, {"consumer": name, "reason": "unknown_type"})

    def _vfs(self, _o: CallbackOptions) -> Iterable[Observation]:
        for host, model, total, free, reserved in self.fleet.vfs:
            for state, n in (("total", total), ("free", free), ("reserved", reserved)):
                yield Observation(n, {"host_id": host, "model": model, "state": state})

    def _hosts(self, _o: CallbackOptions) -> Iterable[Observation]:
        for status in ("online", "offline", "unknown"):
            yield Observation(self.fleet.hosts.get(status, 0), {"status": status})

    def _host_online(self, _o: CallbackOptions) -> Iterable[Observation]:
        for host, status in self.fleet.host_status.items():
            yield Observation(int(status == "online"), {"host_id": host})
