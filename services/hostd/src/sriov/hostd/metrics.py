"""hostd's OpenTelemetry instruments (scraped by Prometheus when configured)."""

from __future__ import annotations

from sriov.common import telemetry


class Metrics:
    """VF lifecycle outcomes, and drifts repaired by setting (never silent)."""

    def __init__(self) -> None:
        meter = telemetry.meter()
        self.applied = meter.create_counter(
            "sriov.hostd.vf.applied",
            description="Desired VF states handled, by outcome (ready, clean, failed, quarantined)",
        )
        self.drift = meter.create_counter(
            "sriov.hostd.vf.drift.repaired",
            description="VF settings changed behind hostd's back and put back, by setting",
        )
