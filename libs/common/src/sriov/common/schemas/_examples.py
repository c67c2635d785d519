"""An example instance of any message type, built from its field types.

Used for golden compatibility files and for the AsyncAPI document's examples, so both cover
every field of every message without hand-written samples going stale.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from msgspec import inspect as mi

EXAMPLE_TIME = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
_STRINGS = {
    "host_id": "c48b1b8b-28a3-453a-863f-ddf7c62bcfe2",
    "pci_address": "0000:0a:00.2",
    "pf_pci_address": "0000:0a:00.0",
    "addr": "0a:00.2",
    "model": "ConnectX-5 Virtual Function",
    "vendor_device_id": "15b3:1018",
    "vendor_id": "15b3",
    "device_id": "17841618-c3e7-43f6-805a-23d2adbcd70c",
    "id": "17841618-c3e7-43f6-805a-23d2adbcd70c",
    "guest_id": "8056e77e-dc14-44b5-8ef9-e43aff344c0d",
    "request_id": "req-0001",
    "desc": "sriov-nic-model=I350 Ethernet Controller Virtual Function",
    "ifname": "eth1",
    "pf": "eth1",
    "driver": "mlx5_core",
    "mac": "52:54:00:12:34:56",
    "code": "no_capacity",
}


def _value(t: mi.Type, name: str) -> Any:
    if isinstance(t, mi.Metadata):  # Annotated with only docs (a Timestamp's format)
        return _value(t.type, name)
    if isinstance(t, mi.UnionType):
        choices = [x for x in t.types if not isinstance(x, mi.NoneType)]
        return _value(choices[0], name) if choices else None
    if isinstance(t, mi.StrType):
        return _STRINGS.get(name, name.replace("_", "-"))
    if isinstance(t, mi.BoolType):
        return True
    if isinstance(t, mi.IntType):
        return 1
    if isinstance(t, mi.FloatType):
        return 0.5
    if isinstance(t, mi.DateTimeType):
        return EXAMPLE_TIME
    if isinstance(t, mi.LiteralType):
        return t.values[0]
    if isinstance(t, mi.ListType):
        return [_value(t.item_type, name)]
    if isinstance(t, mi.DictType):
        return {"key": _value(t.value_type, name)}
    if isinstance(t, mi.StructType):
        return _build(t)
    return None


def _build(info: mi.StructType) -> Any:
    kwargs = {f.name: _value(f.type, f.name) for f in info.fields}
    return info.cls(**kwargs)


def example(cls: type[msgspec.Struct]) -> Any:
    """An instance of ``cls`` with every field (required or not) set to a plausible value."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return _build(info)
