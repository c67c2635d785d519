"""sriov-scheduler's settings: each field declares its option, help and limits once
(``--reservation-ttl``, also ``SRIOV_RESERVATION_TTL_S``); see ``sriov.common.config``."""

from __future__ import annotations

from typing import Annotated

from sriov.common.config import option
from sriov.common.runtime import DatabaseSettings


class SchedulerSettings(DatabaseSettings, kw_only=True):
    """scheduler (also from SRIOV_* environment variables)"""

    reservation_ttl_s: Annotated[
        float,
        option("seconds before an unconfirmed reservation expires", gt=0, flag="--reservation-ttl"),
    ] = 300.0
    """Unless a request gives its own TTL."""
    expiry_interval_s: Annotated[
        float, option("seconds between expiry sweeps", gt=0, flag="--expiry-interval")
    ] = 1.0
    request_retention_s: Annotated[
        float,
        option("seconds a request id is remembered for retries", gt=0, flag="--request-retention"),
    ] = 86400.0
    """A retry within it gets the first answer."""
    db_pool_size: Annotated[int, option("database connections", ge=1)] = 10
    relay_batch: Annotated[int, option("events per outbox batch", ge=1)] = 500
