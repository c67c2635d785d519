"""sriov-scheduler's settings: options, or ``SRIOV_<NAME>`` environment variables."""

from __future__ import annotations

import argparse
import os
import socket

import msgspec

from sriov.common.errors import ConfigError
from sriov.common.runtime import BusSettings


def default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class SchedulerSettings(BusSettings, kw_only=True, forbid_unknown_fields=True):
    # BusSettings declares this default with dataclasses.field, which msgspec does not
    # understand (the default would be a Field object); redeclared here the msgspec way.
    instance_id: str = msgspec.field(default_factory=default_instance_id)
    database_url: str = ""
    """PostgreSQL DSN; every replica uses the same database (schema ``scheduler``)."""
    reservation_ttl_s: float = 300.0
    """Unconfirmed reservations expire after this many seconds (unless a request says)."""
    expiry_interval_s: float = 1.0
    request_retention_s: float = 86400.0
    """How long a request id is remembered (a retry within it gets the same answer)."""
    request_lanes: int = 4
    """Requests this replica answers at once (micro service instances sharing its queue)."""
    db_pool_size: int = 10
    relay_batch: int = 500
    requests_concurrency: int = 16
    """Asynchronous requests handled at once by this replica."""

    def check(self) -> SchedulerSettings:
        if not self.database_url:
            raise ConfigError(
                "no database: give --database-url or set SRIOV_DATABASE_URL "
                "(e.g. postgresql://user@127.0.0.1:5432/sriov)",
                key="database_url",
            )
        for name in ("reservation_ttl_s", "expiry_interval_s", "request_retention_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"setting {name} must be more than 0", key=name)
        for name in ("request_lanes", "db_pool_size", "relay_batch", "requests_concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"setting {name} must be at least 1", key=name)
        return self


def add_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("scheduler (also from SRIOV_* environment variables)")
    g.add_argument("--database-url", help="PostgreSQL DSN (SRIOV_DATABASE_URL)")
    g.add_argument(
        "--reservation-ttl", dest="reservation_ttl_s", type=float,
        help="seconds before an unconfirmed reservation expires (default 300)",
    )  # fmt: skip
    g.add_argument(
        "--expiry-interval", dest="expiry_interval_s", type=float,
        help="seconds between expiry sweeps (default 1)",
    )  # fmt: skip
    g.add_argument(
        "--request-retention", dest="request_retention_s", type=float,
        help="seconds a request id is remembered for retries (default 86400)",
    )  # fmt: skip
    g.add_argument(
        "--request-lanes", type=int, help="requests answered at once by this replica (default 4)"
    )
    g.add_argument("--db-pool-size", type=int, help="database connections (default 10)")
    g.add_argument("--relay-batch", type=int, help="events per outbox batch (default 500)")
    g.add_argument(
        "--requests-concurrency", type=int,
        help="asynchronous requests handled at once (default 16)",
    )  # fmt: skip
