"""Check a request and turn it into the arguments of its SQL function.

Everything a person can get wrong is caught here, before the database, with an error naming
the field. Lengths, ranges and patterns are the request types' own (``schemas._limits``,
enforced by :func:`schemas.check` and stated in the published JSON Schemas); what is left here
is what a schema cannot say (the netdesc grammar, a NUMA policy that needs a node). The
fingerprint lets the database tell a retry (same request id, same request) from a reused
request id (same id, different request).
"""

from __future__ import annotations

import hashlib
import random
from typing import Literal

import msgspec

from sriov.common import schemas as m
from sriov.common.errors import InvalidRequest
from sriov.scheduler import netdesc
from sriov.scheduler.netdesc import NetSpec

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


def ttl(value: float | None, default: float) -> float:
    return default if value is None else float(value)


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(msgspec.json.encode(parts)).hexdigest()[:32]


def nets(values: list[m.NetRequest], field: str = "nets") -> list[NetSpec]:
    return [netdesc.parse(n.desc, f"{field}[{i}].desc") for i, n in enumerate(values)]


def numa(policy: str, node: int | None) -> int | None:
    if policy in ("required", "preferred") and node is None:
        raise InvalidRequest(
            f"numa_node: numa_policy {policy!r} needs the guest's NUMA node", field="numa_node"
        )
    return node if policy != "none" else None


def place_args(
    req: m.PlaceRequest | m.AttachRequest, *, default_ttl: float, ctx: Context
) -> PlaceArgs:
    req = m.check(req)
    rid, gid, host = req.request_id, req.guest_id, req.host_id
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
    req = m.check(req)
    rid, gid, dev = req.request_id, req.guest_id, req.device_id
    return ReleaseArgs(
        request_id=rid,
        guest_id=gid,
        fingerprint=fingerprint("release", gid, dev),
        device_id=dev,
        source=ctx.source,
        trace=ctx.trace,
    )


def confirm_args(req: m.ConfirmRequest, *, ctx: Context) -> ConfirmArgs:
    req = m.check(req)
    rid, gid = req.request_id, req.guest_id
    return ConfirmArgs(
        request_id=rid,
        guest_id=gid,
        fingerprint=fingerprint("confirm", gid),
        source=ctx.source,
        trace=ctx.trace,
    )
