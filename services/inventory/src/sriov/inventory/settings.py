"""sriov-inventory's settings: each field declares its option, help and limits once
(``--heartbeat-timeout``, also ``SRIOV_HEARTBEAT_TIMEOUT``); see ``sriov.common.config``."""

from __future__ import annotations

from typing import Annotated

from sriov.common.config import option
from sriov.common.runtime import DatabaseSettings


class InventorySettings(DatabaseSettings, kw_only=True):
    """inventory (also from SRIOV_* environment variables)"""

    heartbeat_timeout: Annotated[
        float, option("seconds of silence before a host is offline", ge=0.05, le=86400)
    ] = 15.0
    """At least twice hostd's heartbeat interval."""
    batch: Annotated[int, option("events applied per transaction", ge=1, le=1000)] = 100
    relay_batch: Annotated[int, option("outbox rows published per round", ge=1, le=10000)] = 500
    db_pool_size: Annotated[int, option("PostgreSQL connections", ge=2, le=500)] = 10
    rescan_interval: Annotated[
        float, option("least seconds between two rescans of a host", ge=0, le=86400)
    ] = 30.0
    ack_wait: Annotated[
        float,
        option(
            "seconds before a batch lost with a NATS node or a killed replica is redelivered",
            ge=1,
            le=3600,
        ),
    ] = 10.0
    """A slower batch is kept in progress while it is applied, not redelivered."""
    gauges_interval: Annotated[
        float, option("seconds between fleet gauge refreshes", ge=0.1, le=3600)
    ] = 15.0
