"""The scheduler's OpenTelemetry instruments (scraped by Prometheus when configured)."""

from __future__ import annotations

from sriov.common import telemetry

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Request latency and outcomes, events relayed, reservations expired or lost, hostd's VF
    outcomes."""

    def __init__(self) -> None:
        meter = telemetry.meter()
        self.duration = meter.create_histogram(
            "sriov.scheduler.request.duration",
            unit="s",
            description="Time to answer a placement request (place/attach/release/confirm/get)",
            # in seconds: the SDK's default buckets (0, 5, 10, 25... 10000) suit milliseconds
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self.requests = meter.create_counter(
            "sriov.scheduler.requests",
            description="Placement requests by operation and outcome (ok or the error code)",
        )
        self.events = meter.create_counter(
            "sriov.scheduler.events.published", description="Outbox events relayed to JetStream"
        )
        self.expired = meter.create_counter(
            "sriov.scheduler.reservations.expired", description="Reservations past their TTL"
        )
        self.lost = meter.create_counter(
            "sriov.scheduler.reservations.lost",
            description="Reservations whose VF disappeared",
        )
        self.applied = meter.create_counter(
            "sriov.scheduler.vf.applied",
            description="hostd's VF outcomes by outcome (ready, clean, failed, quarantined, "
            "repaired: a drift put back) and effect (stale: for an older revision)",
        )
        self.state = meter.create_counter(
            "sriov.scheduler.state.applied", description="Device/host state messages applied"
        )

    def observe(self, op: str, outcome: str, seconds: float, via: str) -> None:
        attrs = {"op": op, "outcome": outcome, "via": via}
        self.duration.record(seconds, attrs)
        self.requests.add(1, attrs)
