"""Generic replies shared by every service."""

from __future__ import annotations

import msgspec

from sriov.common.schemas._base import Message


class ErrorReply(Message, kw_only=True, tag="error.v1"):
    """Body of a service error; the same code travels in ``Nats-Service-Error``."""

    code: str
    message: str
    details: dict[str, str | int | float | bool | None] = msgspec.field(default_factory=dict)
