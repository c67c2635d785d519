"""Check a request and turn it into the arguments of its SQL function.

Everything a person can get wrong is caught here, before the database, with an error naming
the field. The fingerprint lets the database tell a retry (same request id, same request)
from a reused request id (same id, different request).
"""

from __future__ import annotations

import hashlib
import random
from typing import Literal

import msgspec

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.errors import InvalidRequest
from sriov.scheduler import netdesc
from sriov.scheduler.netdesc import NetSpec

MAX_NETS = 32
MAX_ID_LEN = 200
MAX_TTL_S = 7 * 86400.0
LOWEST_KEY = -(2**31)
HIGHEST_KEY = 2**31 - 1


class Context(msgspec.Struct, frozen=True, kw_only=True):
    """Where the events of a request come from: the replica and the caller's trace."""

    source: str
    trace: dict[str, str] = msgspec.field(default_factory=dict)


class PlaceArgs(msgspec.Struct, kw_only=True):
    op: Literal["place", "attach"]
    request_id: str
    guest_id: str
    fingerprint: str
    nets: list[NetSpec]
    host_id: str | None
    numa_policy: str
    numa_node: int | None
    packing: str
    ttl_s: float
    start_key: int
    source: str
    trace: dict[str, str]


class ReleaseArgs(msgspec.Struct, kw_only=True):
    op: Literal["release"] = "release"
    request_id: str
    guest_id: str
    fingerprint: str
    device_id: str | None
    source: str
    trace: dict[str, str]


class ConfirmArgs(msgspec.Struct, kw_only=True):
    op: Literal["confirm"] = "confirm"
    request_id: str
    guest_id: str
    fingerprint: str
    source: str
    trace: dict[str, str]


def request_id(value: str) -> str:
    if not value or len(value) > MAX_ID_LEN or netdesc.has_control(value):
        raise InvalidRequest(
            f"request_id: must be 1-{MAX_ID_LEN} printable characters (an idempotency key, "
            f"e.g. a UUID), got {value!r}",
            field="request_id",
        )
    return value


def guest_id(value: str) -> str:
    return subjects.token(value, "guest_id")


def host_id(value: str | None) -> str | None:
    return None if value is None else subjects.token(value, "host_id")


def ttl(value: float | None, default: float) -> float:
    if value is None:
        return default
    if not 0 < value <= MAX_TTL_S:
        raise InvalidRequest(
            f"ttl_s: must be more than 0 and at most {MAX_TTL_S:.0f} seconds, got {value}",
            field="ttl_s",
        )
    return float(value)


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(msgspec.json.encode(parts)).hexdigest()[:32]


def nets(values: list[m.NetRequest], field: str = "nets") -> list[NetSpec]:
    if not values:
        raise InvalidRequest(f"{field}: at least one net is needed", field=field)
    if len(values) > MAX_NETS:
        raise InvalidRequest(f"{field}: at most {MAX_NETS} nets per request", field=field)
    return [netdesc.parse(n.desc, f"{field}[{i}].desc") for i, n in enumerate(values)]


def numa(policy: str, node: int | None) -> int | None:
    if node is not None and node < 0:
        raise InvalidRequest(f"numa_node: must be 0 or more, got {node}", field="numa_node")
    if policy in ("required", "preferred") and node is None:
        raise InvalidRequest(
            f"numa_node: numa_policy {policy!r} needs the guest's NUMA node", field="numa_node"
        )
    return node if policy != "none" else None


def place_args(
    req: m.PlaceRequest | m.AttachRequest, *, default_ttl: float, ctx: Context
) -> PlaceArgs:
    rid, gid = request_id(req.request_id), guest_id(req.guest_id)
    host = host_id(req.host_id)
    ttl_s = ttl(req.ttl_s, default_ttl)
    if isinstance(req, m.PlaceRequest):
        specs = nets(req.nets)
        policy, node, packing = req.numa_policy, numa(req.numa_policy, req.numa_node), req.packing
        op: Literal["place", "attach"] = "place"
    else:
        specs = [netdesc.parse(req.net.desc, "net.desc")]
        policy, node, packing, op = "none", None, "spread", "attach"
    start = LOWEST_KEY if packing == "pack" else random.randint(LOWEST_KEY, HIGHEST_KEY)
    return PlaceArgs(
        op=op,
        request_id=rid,
        guest_id=gid,
        fingerprint=fingerprint(op, gid, [s.desc for s in specs], host, policy, node, packing),
        nets=specs,
        host_id=host,
        numa_policy=policy,
        numa_node=node,
        packing=packing,
        ttl_s=ttl_s,
        start_key=start,
        source=ctx.source,
        trace=ctx.trace,
    )


def release_args(req: m.ReleaseRequest, *, ctx: Context) -> ReleaseArgs:
    rid, gid = request_id(req.request_id), guest_id(req.guest_id)
    dev = req.device_id
    if dev is not None and (not dev or len(dev) > MAX_ID_LEN):
        raise InvalidRequest(
            f"device_id: must be a VF id (1-{MAX_ID_LEN} characters) or absent to release "
            "every VF of the guest",
            field="device_id",
        )
    return ReleaseArgs(
        request_id=rid,
        guest_id=gid,
        fingerprint=fingerprint("release", gid, dev),
        device_id=dev,
        source=ctx.source,
        trace=ctx.trace,
    )


def confirm_args(req: m.ConfirmRequest, *, ctx: Context) -> ConfirmArgs:
    rid, gid = request_id(req.request_id), guest_id(req.guest_id)
    return ConfirmArgs(
        request_id=rid,
        guest_id=gid,
        fingerprint=fingerprint("confirm", gid),
        source=ctx.source,
        trace=ctx.trace,
    )
