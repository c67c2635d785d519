"""Type names for asyncpg handles (a pooled connection or a plain one)."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
import asyncpg.pool

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
Conn: TypeAlias = (
    "asyncpg.pool.PoolConnectionProxy[asyncpg.Record] | asyncpg.Connection[asyncpg.Record]"
)
