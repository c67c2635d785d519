"""The limits the services enforce on what they are sent, declared once.

Each is a ``typing.Annotated`` type with a ``msgspec.Meta``: decoding a message enforces it,
:func:`sriov.common.schemas.check` enforces it on a Struct built in Python, and the generated
JSON Schemas state it (``maxLength``, ``pattern``, ``minimum``...), so a client generated from
``docs/`` never sends a request that passes its own validation and is refused.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec

#: Every timestamp on the wire: RFC 3339 in UTC with ``Z`` (how msgspec encodes an aware
#: UTC datetime; the CloudEvents ``ce-time`` header uses the same form).
Timestamp = Annotated[
    dt.datetime,
    msgspec.Meta(extra_json_schema={"format": "date-time"}, examples=["2026-01-02T03:04:05Z"]),
]

# Patterns end in ``(?!\n)$``: Python's ``$`` (msgspec's, ``re.search``) also matches before a
# final newline, ECMA-262's (JSON Schema's) does not; with the lookahead both refuse "h1\n".

#: A subject token (``host_id``, ``guest_id``...): :mod:`sriov.common.subjects` checks with it.
TOKEN_PATTERN = r"^[A-Za-z0-9_-]{1,128}(?!\n)$"
TOKEN_MAX = 128
Token = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=TOKEN_MAX,
        pattern=TOKEN_PATTERN,
        description="A subject-safe id: 1-128 characters from A-Z a-z 0-9 - _.",
    ),
]
#: A full PCI address, lower or upper case hex (``0000:3b:00.1``).
PCI_PATTERN = r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7](?!\n)$"
PciAddress = Annotated[
    str, msgspec.Meta(pattern=PCI_PATTERN, description="PCI address DDDD:BB:DD.F.")
]

ID_MAX = 200
#: Printable: no C0 control character and no DEL (they would reach logs and SQL).
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]*(?!\n)$"
RequestId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=ID_MAX,
        pattern=PRINTABLE_PATTERN,
        description="Idempotency key (e.g. a UUID): 1-200 printable characters.",
    ),
]
DeviceId = Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX)]

NETDESC_MAX = 512
NetDesc = Annotated[str, msgspec.Meta(min_length=1, max_length=NETDESC_MAX)]
NETS_MAX = 32

TTL_MAX_S = 7 * 86400.0
TtlS = Annotated[float, msgspec.Meta(gt=0, le=TTL_MAX_S, description="Seconds, up to 7 days.")]
NumaNode = Annotated[int, msgspec.Meta(ge=0)]

PAGE_MAX = 1000
PageLimit = Annotated[int, msgspec.Meta(ge=1, le=PAGE_MAX, description="Rows per page.")]
Offset = Annotated[int, msgspec.Meta(ge=0)]

#: What a PF's ``sriov_totalvfs`` can hold (a u16 in the SR-IOV capability).
NumVfs = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Revision = Annotated[int, msgspec.Meta(ge=0)]
REASON_MAX = 500
Reason = Annotated[
    str, msgspec.Meta(max_length=REASON_MAX, pattern=PRINTABLE_PATTERN, description="Printable.")
]
