"""Header names the bus sets and reads, and the CloudEvents headers of one message."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping

from sriov.common import telemetry
from sriov.common.schemas import Message, type_of

HDR_MSG_ID = "Nats-Msg-Id"
"""JetStream's de-duplication key; the bus sets it to the event id."""
HDR_ERROR = "Nats-Service-Error"
HDR_ERROR_CODE = "Nats-Service-Error-Code"
HDR_SRIOV_CODE = "Sriov-Error-Code"
"""Our stable error code beside micro's numeric status (``errors.py`` maps it back)."""
HDR_DL_REASON = "Sriov-Dead-Letter-Reason"
HDR_DL_SUBJECT = "Sriov-Original-Subject"
HDR_DL_CONSUMER = "Sriov-Consumer"
HDR_DL_DELIVERED = "Sriov-Delivered"


def rfc3339(ts: dt.datetime) -> str:
    """A timestamp as every payload carries it (msgspec's form): UTC with ``Z``."""
    return ts.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def event_headers(
    msg: Message, source: str, event_id: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """CloudEvents NATS binding + trace context for one message."""
    eid = event_id or str(uuid.uuid4())
    headers = {
        "ce-specversion": "1.0",
        "ce-id": eid,
        "ce-source": source,
        "ce-type": type_of(type(msg)),
        "ce-time": rfc3339(dt.datetime.now(dt.UTC)),
        "content-type": "application/json",
        HDR_MSG_ID: eid,
    }
    if extra:
        headers.update(extra)
    return telemetry.inject(headers)
