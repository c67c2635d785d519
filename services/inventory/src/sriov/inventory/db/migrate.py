"""Versioned migrations of the ``inventory`` schema (``migrations/``), applied at start by
:mod:`sriov.common.migrations` under an advisory lock, so replicas may start at once."""

from __future__ import annotations

from sriov.common import migrations as mig
from sriov.inventory.db.conn import Conn

SCHEMA = "inventory"
#: Arbitrary constant naming "inventory migrations" among advisory locks.
LOCK_KEY = 0x5121_0001


def migrations() -> list[mig.Migration]:
    """Every migration shipped with this package, in version order."""
    return mig.load("sriov.inventory.db")


async def migrate(conn: Conn) -> list[int]:
    """Apply missing migrations; return the versions applied by this call."""
    return await mig.migrate(conn, SCHEMA, migrations(), LOCK_KEY)
