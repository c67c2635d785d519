"""Generic replies shared by every service."""

from __future__ import annotations

import msgspec

from sriov.common.schemas._base import Message


class ErrorReply(Message, kw_only=True, tag="error.v1"):
    """Body of a service error: its ``code`` is also in the ``Sriov-Error-Code`` header, a person's
    message in ``Nats-Service-Error``, an HTTP-like number in ``Nats-Service-Error-Code``.

    ``details.field`` names the offending field of a refused request (``nets[0].desc``)."""

    code: str
    message: str
    details: dict[str, str | int | float | bool | None] = msgspec.field(default_factory=dict)
