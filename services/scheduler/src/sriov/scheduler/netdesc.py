"""The guide's netdesc form of a net: ``sriov-nic-model=<model>`` or ``sriov-nic-id=<vf id>``.

Either may be followed by ``:<network id or wire>`` (``server-attach-network``'s
``model:network-id`` form), which restricts the VF to that wire or network. VF model names
never contain a colon (none in pci.ids does), so the first colon after the value starts it.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from sriov.common.errors import InvalidRequest
from sriov.common.schemas import limits

MODEL_KEY = "sriov-nic-model"
ID_KEY = "sriov-nic-id"
MAX_LEN = limits.NETDESC_MAX
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
FORMS = f"'{MODEL_KEY}=<model>[:<network or wire>]' or '{ID_KEY}=<vf id>[:<network or wire>]'"


class NetSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One parsed net, as the SQL functions take it (``scheduler.matches``)."""

    desc: str
    kind: Literal["model", "id"]
    value: str
    selector: str | None = None
    """Wire or network the VF must be on."""


def has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def parse(desc: str, field: str = "net.desc") -> NetSpec:
    """Parse one netdesc; errors name ``field`` and show the accepted forms."""
    text = desc.strip() if isinstance(desc, str) else ""
    if not text:
        raise InvalidRequest(f"{field}: empty net: use {FORMS}", field=field)
    if len(text) > MAX_LEN:
        raise InvalidRequest(f"{field}: longer than {MAX_LEN} characters", field=field)
    key, sep, rest = text.partition("=")
    key = key.strip()
    if not sep or key not in (MODEL_KEY, ID_KEY):
        raise InvalidRequest(f"{field}: {desc!r} is not a netdesc: use {FORMS}", field=field)
    value, colon, selector = rest.partition(":")
    value, selector = value.strip(), selector.strip()
    if not value:
        raise InvalidRequest(f"{field}: {desc!r} names no {key.removeprefix('sriov-nic-')} "
                             f"after '{key}=': use {FORMS}", field=field)  # fmt: skip
    if colon and not selector:
        raise InvalidRequest(
            f"{field}: {desc!r} ends with ':' but names no network or wire after it", field=field
        )
    if _CONTROL.search(text):
        raise InvalidRequest(f"{field}: {desc!r} contains control characters", field=field)
    return NetSpec(
        desc=text,
        kind="model" if key == MODEL_KEY else "id",
        value=value,
        selector=selector or None,
    )
