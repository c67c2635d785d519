"""The catalogue of every channel and endpoint: who publishes, who subscribes, what payload.

It is the source of ``docs/asyncapi.yaml`` (see :mod:`sriov.common.apidoc`); a service that
adds a subject or an endpoint adds it here too, and the docs test fails until the docs are
regenerated (``python -m sriov.common.apidoc --write``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sriov.common import schemas as m
from sriov.common import subjects as s

HOSTD, INVENTORY, SCHEDULER, OFFLOAD, CLI, EXTERNAL = (
    "hostd",
    "inventory",
    "scheduler",
    "offload",
    "sriovctl",
    "other systems",
)


@dataclass(frozen=True)
class Channel:
    """A published subject (template) with the messages that travel on it."""

    template: str
    messages: tuple[type[m.Message], ...]
    publishers: tuple[str, ...]
    subscribers: tuple[str, ...]
    description: str
    stream: str | None = None


@dataclass(frozen=True)
class Endpoint:
    """A ``nats.micro`` request/reply endpoint."""

    service: str
    template: str
    request: type[m.Message]
    reply: type[m.Message]
    description: str
    callers: tuple[str, ...] = (CLI, EXTERNAL)


CHANNELS: tuple[Channel, ...] = (
    Channel(s.HOST_SNAPSHOT, (m.HostSnapshot,), (HOSTD,), (INVENTORY,),
            "Full state of a host at start, on resync and on rescan.", s.STREAM_HOST_EVENTS),
    Channel(s.HOST_VF_DISCOVERED, (m.VfDiscovered,), (HOSTD,), (INVENTORY,),
            "A VF appeared between snapshots.", s.STREAM_HOST_EVENTS),
    Channel(s.HOST_VF_CHANGED, (m.VfChanged,), (HOSTD,), (INVENTORY,),
            "A VF's driver, netdev, MAC or link changed.", s.STREAM_HOST_EVENTS),
    Channel(s.HOST_VF_REMOVED, (m.VfRemoved,), (HOSTD,), (INVENTORY,),
            "A VF disappeared (numvfs lowered, driver unbound).", s.STREAM_HOST_EVENTS),
    Channel(s.HOST_PF_CHANGED, (m.PfChanged,), (HOSTD,), (INVENTORY,),
            "A PF's link, numvfs or configuration changed.", s.STREAM_HOST_EVENTS),
    Channel(s.HOST_LINK, (m.LinkChanged,), (HOSTD,), (INVENTORY, CLI),
            "Carrier/operstate of a PF or VF netdev went up or down.", s.STREAM_HOST_EVENTS),
    Channel(s.HOST_HEARTBEAT, (m.Heartbeat,), (HOSTD,), (INVENTORY,),
            "Liveness; missed heartbeats mark the host offline.", s.STREAM_HOST_EVENTS),
    Channel(s.HOST_DIAGNOSTICS, (m.Diagnostics,), (HOSTD,), (INVENTORY, CLI),
            "Doctor findings: what is misconfigured and how to fix it.", s.STREAM_HOST_EVENTS),
    Channel(s.HOST_VF_APPLIED, (m.VfApplied,), (HOSTD,), (SCHEDULER, INVENTORY, CLI),
            "hostd's outcome for a revision of a VF's desired state, or a drift it repaired.",
            s.STREAM_HOST_EVENTS),
    Channel(s.DESIRED_VF, (m.VfDesired,), (SCHEDULER,), (HOSTD,),
            "Desired state of one VF (prepared for a guest, or clean); last value per VF.",
            s.STREAM_DESIRED),
    Channel(s.DEVICE_STATE, (m.DeviceState,), (INVENTORY,), (SCHEDULER, CLI, EXTERNAL),
            "Current state of one VF; last value per subject.", s.STREAM_STATE),
    Channel(s.HOST_STATE, (m.HostState,), (INVENTORY,), (SCHEDULER, CLI, EXTERNAL),
            "Current state of one host (online/offline); last value per subject.",
            s.STREAM_STATE),
    Channel(s.PLACEMENT_EVENT, (m.Reserved, m.Ready, m.Confirmed, m.Released, m.Expired,
                                m.Lost, m.Failed),
            (SCHEDULER,), (INVENTORY, CLI, EXTERNAL),
            "Reservation lifecycle of a guest's VFs.", s.STREAM_PLACEMENT),
    Channel(s.PLACEMENT_REQUEST, (m.PlaceRequest, m.AttachRequest, m.ReleaseRequest,
                                  m.ConfirmRequest),
            (EXTERNAL,), (SCHEDULER,),
            "Asynchronous placement requests; outcomes arrive as placement events.",
            s.STREAM_PLACEMENT_REQUESTS),
    Channel(s.OFFLOAD_CONFIG, (m.OffloadConfigChanged,), (OFFLOAD,), (CLI, EXTERNAL),
            "hw-offload settings changed on a host.", s.STREAM_OFFLOAD),
    Channel(s.OFFLOAD_CHECKS, (m.OffloadChecks,), (OFFLOAD,), (CLI, EXTERNAL),
            "eswitch/representor/feature checks of offload NICs.", s.STREAM_OFFLOAD),
    Channel(s.OFFLOAD_AUDIT, (m.Audit,), (OFFLOAD,), (INVENTORY, CLI, EXTERNAL),
            "Offloaded-flow audit of a host's datapath.", s.STREAM_OFFLOAD),
)  # fmt: skip

#: Where a durable consumer copies a message it gave up on (``bus/consumer.py``).
DEAD_LETTER = Channel(
    s.DEAD_LETTER, (), (INVENTORY, SCHEDULER), (CLI, EXTERNAL),
    "A message a durable consumer gave up on (malformed, refused, or failed max_deliver "
    "times), with why in its headers; operators look here.", s.STREAM_DEAD_LETTER,
)  # fmt: skip

_DEV = s.INVENTORY_DEVICES_GROUP
_HOSTS = s.INVENTORY_HOSTS_GROUP

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(INVENTORY, _DEV + ".list", m.DeviceListRequest, m.DeviceListReply,
             "List devices with filters and paging (climc isolated-device-list)."),
    Endpoint(INVENTORY, _DEV + ".get", m.DeviceGetRequest, m.DeviceGetReply,
             "One device by id, or by host and PCI address."),
    Endpoint(INVENTORY, _HOSTS + ".list", m.HostListRequest, m.HostListReply,
             "Hosts with status and last-seen."),
    Endpoint(INVENTORY, _HOSTS + ".get", m.HostGetRequest, m.HostGetReply, "One host."),
    Endpoint(SCHEDULER, s.SCHEDULER_GROUP + ".place", m.PlaceRequest, m.PlacementReply,
             "Reserve VFs for a guest on one host, all or none."),
    Endpoint(SCHEDULER, s.SCHEDULER_GROUP + ".attach", m.AttachRequest, m.PlacementReply,
             "Add a VF to an existing guest on its host."),
    Endpoint(SCHEDULER, s.SCHEDULER_GROUP + ".release", m.ReleaseRequest, m.PlacementReply,
             "Release one VF or all of a guest's; idempotent."),
    Endpoint(SCHEDULER, s.SCHEDULER_GROUP + ".confirm", m.ConfirmRequest, m.PlacementReply,
             "Confirm a guest's reservations so they no longer expire."),
    Endpoint(SCHEDULER, s.SCHEDULER_GROUP + ".get", m.GetRequest, m.PlacementReply,
             "A guest's reservations."),
    Endpoint(SCHEDULER, s.SCHEDULER_GROUP + ".cordon", m.CordonRequest, m.CordonReply,
             "Cordon or uncordon a host; lists the guests still holding VFs there.", (CLI,)),
    Endpoint(SCHEDULER, s.SCHEDULER_GROUP + ".vf-reset", m.VfResetRequest, m.VfResetReply,
             "Return a quarantined VF to service once hostd has restored it.", (CLI,)),
    Endpoint(HOSTD, s.HOSTCMD_GROUP + ".rescan", m.RescanRequest, m.CommandAck,
             "Rediscover the host and publish a fresh snapshot.", (CLI, INVENTORY)),
    Endpoint(HOSTD, s.HOSTCMD_GROUP + ".set-numvfs", m.SetNumVfsRequest, m.CommandAck,
             "Set a PF's VF count (0 then N, bounded by sriov_totalvfs).", (CLI,)),
    Endpoint(HOSTD, s.HOSTCMD_GROUP + ".doctor", m.DoctorRequest, m.Diagnostics,
             "Run every doctor check now.", (CLI,)),
    Endpoint(OFFLOAD, s.OFFLOADCMD_GROUP + ".get", m.OffloadGetRequest, m.OffloadStatus,
             "hw-offload settings and NIC checks.", (CLI,)),
    Endpoint(OFFLOAD, s.OFFLOADCMD_GROUP + ".set", m.OffloadSetRequest, m.OffloadStatus,
             "Toggle hw-offload (and tc-policy, max-idle).", (CLI,)),
    Endpoint(OFFLOAD, s.OFFLOADCMD_GROUP + ".audit", m.AuditRequest, m.Audit,
             "Audit offloaded flows now.", (CLI,)),
)  # fmt: skip


def streams_of(*actors: str) -> list[str]:
    """Streams the actors publish to or consume from: what a service verifies at start and
    what its credentials may read the configuration of."""
    chans = [c for c in CHANNELS if set(actors) & {*c.publishers, *c.subscribers}]
    return sorted({c.stream for c in chans if c.stream})
