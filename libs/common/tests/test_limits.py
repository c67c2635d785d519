"""The published JSON Schemas refuse exactly what the services refuse.

A client generated from ``docs/schemas`` validates with those schemas; the services decode
with the same types (``schemas._limits``). For values just inside and just outside every
limit, both must agree, so a request that passes the client's validation is never refused for
a length, range or pattern the documents did not state.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import msgspec
import pytest

from sriov.common import apidoc
from sriov.common import schemas as m
from sriov.common.errors import InvalidRequest
from sriov.common.schemas import limits
from sriov.common.schemas._examples import example

NET = {"desc": "sriov-nic-model=ConnectX-5 Virtual Function"}


def _base(cls: type[m.Message]) -> dict[str, Any]:
    return msgspec.to_builtins(example(cls))  # type: ignore[no-any-return]


# (message type, field path, a value at the limit, a value past it)
CASES: list[tuple[type[m.Message], str, object, object]] = [
    (m.PlaceRequest, "nets.0.desc", "x" * limits.NETDESC_MAX, "x" * (limits.NETDESC_MAX + 1)),
    (m.PlaceRequest, "nets", [NET] * limits.NETS_MAX, [NET] * (limits.NETS_MAX + 1)),
    (m.PlaceRequest, "nets", [NET], []),
    (m.PlaceRequest, "guest_id", "g" * limits.TOKEN_MAX, "g" * (limits.TOKEN_MAX + 1)),
    (m.PlaceRequest, "guest_id", "guest-1_A", "guest.1"),
    (m.PlaceRequest, "host_id", "h1", "h 1"),
    (m.PlaceRequest, "request_id", "r" * limits.ID_MAX, "r" * (limits.ID_MAX + 1)),
    (m.PlaceRequest, "request_id", "a uuid, or any text", "line\nbreak"),
    (m.PlaceRequest, "request_id", "r", ""),
    (m.PlaceRequest, "ttl_s", limits.TTL_MAX_S, limits.TTL_MAX_S + 1),
    (m.PlaceRequest, "ttl_s", 0.001, 0),
    (m.PlaceRequest, "numa_node", 0, -1),
    (m.AttachRequest, "net.desc", "x", ""),
    (m.ReleaseRequest, "device_id", "d" * limits.ID_MAX, ""),
    (m.ConfirmRequest, "guest_id", "g", ""),
    (m.GetRequest, "guest_id", "g", "g/1"),
    (m.DeviceListRequest, "limit", limits.PAGE_MAX, limits.PAGE_MAX + 1),
    (m.DeviceListRequest, "limit", 1, 0),
    (m.DeviceListRequest, "offset", 0, -1),
    (m.HostListRequest, "limit", 1, 0),
    (m.HostGetRequest, "host_id", "h1", "h1\n"),
    (m.PlaceRequest, "request_id", "r", "r\n"),
    (m.DeviceGetRequest, "pci_address", "0000:3b:00.1", "0000:3b:00.1\n"),
    (m.DeviceGetRequest, "pci_address", "0000:3B:00.1", "0000:3b:00.8"),
    (m.SetNumVfsRequest, "num_vfs", 0, -1),
    # the VF lifecycle's messages
    (m.VfDesired, "revision", 0, -1),
    (m.VfDesired, "pci_address", "0000:0a:00.2", "0a:00.2"),
    (m.VfDesired, "config.vlan", 4094, 4095),
    (m.VfDesired, "config.qos", 7, 8),
    (m.VfDesired, "config.mac", "52:54:00:12:34:56", "01:00:5e:00:00:01"),
    (m.PlaceRequest, "nets.0.config", {"max_tx_rate": 4_294_967_295}, {"max_tx_rate": -1}),
    (m.CordonRequest, "host_id", "h1", ""),
    (m.CordonRequest, "reason", "r" * limits.REASON_MAX, "r" * (limits.REASON_MAX + 1)),
    (m.CordonRequest, "reason", "maintenance", "tab\there"),
    (m.VfResetRequest, "request_id", "r", ""),
    (m.VfResetRequest, "pci_address", "0000:0a:00.2", "eth1"),
    (m.VfApplied, "revision", 1, -1),
]


def _with(body: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    out = json.loads(json.dumps(body))
    *head, last = path.split(".")
    node: Any = out
    for key in head:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = value
    return out


def _schema_accepts(cls: type[m.Message], body: dict[str, Any]) -> bool:
    schema = json.loads((apidoc.DOCS / "schemas" / f"{m.type_of(cls)}.json").read_text())
    return jsonschema.Draft202012Validator(schema).is_valid(body)


def _service_accepts(cls: type[m.Message], body: dict[str, Any]) -> bool:
    try:
        m.codec(cls).decode(msgspec.json.encode(body))
    except InvalidRequest:
        return False
    return True


@pytest.mark.parametrize(
    ("cls", "path", "ok", "bad"), CASES, ids=[f"{c.__name__}.{p}" for c, p, *_ in CASES]
)
def test_schema_and_service_agree_at_each_limit(
    cls: type[m.Message], path: str, ok: object, bad: object
) -> None:
    base = _base(cls)
    if path.startswith("nets.0.config"):
        base["nets"][0]["config"] = {}
    good, wrong = _with(base, path, ok), _with(base, path, bad)
    assert _schema_accepts(cls, good) and _service_accepts(cls, good), (path, ok)
    assert not _schema_accepts(cls, wrong), f"the schema does not state {path}'s limit"
    assert not _service_accepts(cls, wrong), f"the service does not enforce {path}'s limit"


def test_a_refusal_names_the_field_by_its_path() -> None:
    body = _with(_base(m.PlaceRequest), "nets.0.desc", "x" * (limits.NETDESC_MAX + 1))
    with pytest.raises(InvalidRequest) as err:
        m.codec(m.PlaceRequest).decode(msgspec.json.encode(body))
    assert err.value.details["field"] == "nets[0].desc"
    body = _base(m.PlaceRequest)
    del body["guest_id"]
    with pytest.raises(InvalidRequest, match="missing required field `guest_id`") as missing:
        m.codec(m.PlaceRequest).decode(msgspec.json.encode(body))
    assert missing.value.details["field"] == "guest_id"


def test_an_empty_body_is_called_empty() -> None:
    for body in (b"", b" \n"):
        with pytest.raises(InvalidRequest, match="empty body") as err:
            m.codec(m.GetRequest).decode(body)
        assert err.value.details["field"] == "$"


def test_check_enforces_the_same_limits_on_a_struct_built_in_python() -> None:
    req = m.PlaceRequest(request_id="r", guest_id="g", nets=[m.NetRequest(desc="d")] * 33)
    with pytest.raises(InvalidRequest, match="length <= 32") as err:
        m.check(req)
    assert err.value.details["field"] == "nets"
    ok = m.PlaceRequest(request_id="r", guest_id="g", nets=[m.NetRequest(desc="d")])
    assert m.check(ok) == ok


def test_timestamps_are_date_times_in_utc_with_z() -> None:
    schema = json.loads((apidoc.DOCS / "schemas" / "placement.reserved.v1.json").read_text())
    ts = schema["$defs"]["Reserved"]["properties"]["ts"]
    assert ts["format"] == "date-time"
    assert b'"ts":"2026-01-02T03:04:05Z"' in m.encode(example(m.Reserved))
