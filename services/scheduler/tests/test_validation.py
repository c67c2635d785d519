"""Request checks before the database: every error names its field."""

from __future__ import annotations

import pytest

from sriov.common import schemas as m
from sriov.common.errors import InvalidRequest
from sriov.scheduler import validation as v

CTX = v.Context(source="sriov/test")
NET = [m.NetRequest(desc="sriov-nic-model=ConnectX-5 Virtual Function")]


def place(**kw: object) -> m.PlaceRequest:
    base: dict[str, object] = {"request_id": "r1", "guest_id": "g1", "nets": NET}
    return m.PlaceRequest(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("req", "field"),
    [
        (place(request_id=""), "request_id"),
        (place(request_id="x" * 201), "request_id"),
        (place(guest_id="a.b"), "guest_id"),
        (place(guest_id=""), "guest_id"),
        (place(nets=[]), "nets"),
        (place(nets=[m.NetRequest(desc="nope")]), "nets[0].desc"),
        (place(nets=NET * 33), "nets"),
        (place(host_id="h 1"), "host_id"),
        (place(numa_policy="required"), "numa_node"),
        (place(numa_policy="preferred", numa_node=-1), "numa_node"),
        (place(ttl_s=0), "ttl_s"),
        (place(ttl_s=10 * 86400), "ttl_s"),
    ],
)
def test_invalid_place_requests(req: m.PlaceRequest, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        v.place_args(req, default_ttl=300, ctx=CTX)
    assert err.value.details["field"] == field


def test_fingerprint_tells_a_retry_from_a_different_request() -> None:
    a = v.place_args(place(), default_ttl=300, ctx=CTX)
    b = v.place_args(place(ttl_s=60), default_ttl=300, ctx=CTX)  # the TTL is not identity
    c = v.place_args(place(packing="pack"), default_ttl=300, ctx=CTX)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.ttl_s == 300 and b.ttl_s == 60
    assert c.start_key == v.LOWEST_KEY  # pack walks hosts from the lowest key


def test_numa_node_is_ignored_without_a_policy() -> None:
    args = v.place_args(place(numa_node=1), default_ttl=300, ctx=CTX)
    assert args.numa_node is None and args.numa_policy == "none"


def test_release_and_attach_checks() -> None:
    with pytest.raises(InvalidRequest) as err:
        v.release_args(m.ReleaseRequest(request_id="r", guest_id="g", device_id=""), ctx=CTX)
    assert err.value.details["field"] == "device_id"
    attach = m.AttachRequest(request_id="r", guest_id="g", net=m.NetRequest(desc="bad"))
    with pytest.raises(InvalidRequest) as err2:
        v.place_args(attach, default_ttl=300, ctx=CTX)
    assert err2.value.details["field"] == "net.desc"
