"""Type names for asyncpg handles, as every service names them (:mod:`sriov.common.database`)."""

from __future__ import annotations

from sriov.common.database import Conn, Pool

__all__ = ["Conn", "Pool"]
