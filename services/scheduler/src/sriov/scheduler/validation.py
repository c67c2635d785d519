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
from sriov.common import subjects
from sriov.common.errors import InvalidRequest
from sriov.common.schemas._vfconfig import VFIO_PCI
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
    specs = [net(n, f"{field}[{i}]") for i, n in enumerate(values)]
    unique_macs(specs, [f"{field}[{i}]" for i in range(len(specs))])
    return specs


_BASELINE = m.VfConfig()
_NOTHING = m.PfCapabilities()


def net(value: m.NetRequest, field: str) -> NetSpec:
    """One net: its netdesc, and its VF settings (after ``;`` in the desc, or typed in
    ``config``, never the same one in both) with the defaults filled in, what the VF's PF must
    be able to apply (``needs``) and a netdev driver the VF must have."""
    spec = netdesc.parse(value.desc, f"{field}.desc")
    typed = value.config
    values: dict[str, object] = msgspec.to_builtins(typed) if typed is not None else {}
    for name in spec.given:
        key = netdesc.FIELD_KEYS[name]
        if typed is not None and getattr(typed, name) != getattr(_BASELINE, name):
            raise InvalidRequest(
                f"{field}: {key} is set both after ';' in desc and as config.{name}: set it "
                "once", field=f"{field}.config.{name}", key=key,
            )  # fmt: skip
        assert spec.config is not None
        values[name] = getattr(spec.config, name)
    cfg = netdesc.config_of(values, f"{field}.config")
    needs = _NOTHING.missing(cfg) + (["lifecycle"] if cfg != _BASELINE else [])
    driver = cfg.driver if cfg.driver not in (None, VFIO_PCI) else None
    return msgspec.structs.replace(spec, config=cfg, needs=tuple(needs), driver=driver)


def unique_macs(specs: list[NetSpec], fields: list[str]) -> None:
    """Two nets of one request cannot ask for the same MAC."""
    seen: dict[str, str] = {}
    for spec, field in zip(specs, fields, strict=True):
        mac = spec.config.mac if spec.config else None
        if mac is None:
            continue
        if mac in seen:
            raise InvalidRequest(
                f"{field}: mac {mac} is also asked by {seen[mac]}: a MAC is unique across the "
                "fleet", field=f"{field}.mac", key="mac",
            )  # fmt: skip
        seen[mac] = field


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
        specs = [net(req.net, "net")]
        policy, node, packing, op = "none", None, "spread", "attach"
    start = LOWEST_KEY if packing == "pack" else random.randint(LOWEST_KEY, HIGHEST_KEY)
    nets_asked = req.nets if isinstance(req, m.PlaceRequest) else [req.net]
    typed = [n.config for n in nets_asked if n.config is not None]
    # the typed settings are part of the request (not listed when none, so a request without
    # them keeps the fingerprint it always had)
    parts: tuple[object, ...] = (op, gid, [s.desc for s in specs], host, policy, node, packing)
    if typed:
        parts = (*parts, [n.config for n in nets_asked])
    return PlaceArgs(
        op=op,
        request_id=rid,
        guest_id=gid,
        fingerprint=fingerprint(*parts),
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


# --- the VF lifecycle -------------------------------------------------------------------------
class DesiredArgs(msgspec.Struct, kw_only=True):
    """What the SQL needs to write a VfDesired (``p_desired``): its type tag and the clean
    baseline, both from the schemas."""

    type: str
    clean: m.VfConfig


class EventTypes(msgspec.Struct, kw_only=True):
    """The type tags of the placement events hostd's outcomes cause (``p_types``)."""

    ready: str
    failed: str


class AppliedArgs(msgspec.Struct, kw_only=True):
    """One VfApplied as ``scheduler.vf_applied`` reads it (``e``)."""

    device_id: str
    host_id: str
    pci_address: str
    revision: int
    outcome: str
    actual: m.VfConfig | None
    error: str | None
    iommu_group: int | None


class CordonArgs(msgspec.Struct, kw_only=True):
    host_id: str
    cordoned: bool
    reason: str


class ResetArgs(msgspec.Struct, kw_only=True):
    op: Literal["vf-reset"] = "vf-reset"
    request_id: str
    guest_id: str
    """Not a guest: the key that serialises operations on the VF (``vf-reset/<device id>``)."""
    fingerprint: str
    host_id: str
    pci_address: str
    device_id: str
    source: str
    trace: dict[str, str]


def applied_args(ev: m.VfApplied) -> AppliedArgs:
    return AppliedArgs(
        device_id=m.device_id(ev.host_id, ev.pci_address), host_id=ev.host_id,
        pci_address=ev.pci_address, revision=ev.revision, outcome=ev.outcome, actual=ev.actual,
        error=ev.error, iommu_group=ev.iommu_group,
    )  # fmt: skip


def cordon_args(req: m.CordonRequest) -> CordonArgs:
    req = m.check(req)  # host_id a token, reason at most 500 printable characters
    return CordonArgs(host_id=req.host_id, cordoned=req.cordoned, reason=req.reason)


def reset_args(req: m.VfResetRequest, *, ctx: Context) -> ResetArgs:
    req = m.check(req)
    rid, host = req.request_id, req.host_id
    pci = subjects.pci_from_token(subjects.pci_token(req.pci_address))  # lower-case
    dev = m.device_id(host, pci)
    return ResetArgs(
        request_id=rid, guest_id=f"vf-reset/{dev}", fingerprint=fingerprint("vf-reset", dev),
        host_id=host, pci_address=pci, device_id=dev, source=ctx.source, trace=ctx.trace,
    )  # fmt: skip
