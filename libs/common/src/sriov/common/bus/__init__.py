"""The only package that imports ``nats``: connect, publish, consume, request, serve.

What it guarantees callers:

* every published message carries CloudEvents headers (``ce-*``), W3C trace context and,
  on JetStream, ``Nats-Msg-Id`` = the event id so the server drops duplicates;
* :meth:`Bus.consume` acks only after the handler returned (the effect is committed),
  bounds concurrency, naks failures with back-off, and after ``max_deliver`` attempts (or at
  once for a malformed message) copies the message to the dead-letter stream an operator
  can read, then terminates it; a handler that raises ``Unavailable`` (a dependency is
  away) has its message kept and handled again until it answers, spending no delivery;
  unknown message types are logged and acked;
* :class:`ServiceHost` wraps ``nats.micro``: each endpoint serves a bounded number of
  requests at once, drained at stop; domain errors become service errors with a stable code
  and a readable message, never a Python repr, and count as errors in ``$SRV.STATS``.

Where things are: ``streams`` (the stream catalogue and provisioning), ``headers`` (header
names, CloudEvents), ``connection`` (:class:`Bus`), ``consumer`` (durable consumers, dead
letter), ``stored`` (what the streams hold, read without a durable consumer), ``service``
(micro services, their errors and discovery).
"""

__all__ = [
    "DEFAULT_CONCURRENCY",
    "HDR_ERROR",
    "HDR_ERROR_CODE",
    "HDR_MSG_ID",
    "HDR_SRIOV_CODE",
    "HEADER_LINE",
    "STREAMS",
    "Bus",
    "ConsumerInfo",
    "ConsumerSpec",
    "ConsumerStats",
    "Delivery",
    "ServiceError",
    "ServiceHost",
    "StoredMessage",
    "StreamInfo",
    "StreamSpec",
    "encode_headers",
    "event_headers",
    "extend_headers",
    "raise_service_error",
    "rfc3339",
]

from nats.micro.request import ServiceError

from .connection import Bus
from .consumer import ConsumerSpec, ConsumerStats, Delivery
from .headers import HDR_ERROR, HDR_ERROR_CODE, HDR_MSG_ID, HDR_SRIOV_CODE, event_headers, rfc3339
from .publish import HEADER_LINE, encode_headers, extend_headers
from .service import DEFAULT_CONCURRENCY, ServiceHost, raise_service_error
from .stored import ConsumerInfo, StoredMessage, StreamInfo
from .streams import STREAMS, StreamSpec
