"""Every message type of the contract, and one reusable codec per type.

Messages are msgspec Structs tagged by ``type`` (``<aggregate>.<noun>.v<major>``). Compatible
changes add fields with defaults; a breaking change is a new type and subject.
"""

import functools
from typing import TypeVar

from sriov.common.schemas import _limits as limits
from sriov.common.schemas._base import Codec, Message, Model, check, encode, type_of, utcnow
from sriov.common.schemas._host import (
    PF,
    VF,
    CommandAck,
    DeviceError,
    Diagnostics,
    DoctorRequest,
    Finding,
    Heartbeat,
    HostEvent,
    HostEventT,
    HostSnapshot,
    LinkChanged,
    PfChanged,
    RescanRequest,
    SetNumVfsRequest,
    VfApplied,
    VfChanged,
    VfDiscovered,
    VfRemoved,
)
from sriov.common.schemas._inventory import (
    Device,
    DeviceGetReply,
    DeviceGetRequest,
    DeviceListReply,
    DeviceListRequest,
    DeviceState,
    HostGetReply,
    HostGetRequest,
    HostInfo,
    HostListReply,
    HostListRequest,
    HostState,
    device_id,
    short_addr,
)
from sriov.common.schemas._lifecycle import (
    CordonReply,
    CordonRequest,
    DesiredState,
    HeldVf,
    VfDesired,
    VfLifecycleState,
    VfResetReply,
    VfResetRequest,
)
from sriov.common.schemas._offload import (
    Audit,
    AuditRequest,
    FlowSummary,
    OffloadChecks,
    OffloadConfigChanged,
    OffloadEventT,
    OffloadGetRequest,
    OffloadSetRequest,
    OffloadStatus,
    PortCounters,
)
from sriov.common.schemas._placement import (
    Assignment,
    AttachRequest,
    Confirmed,
    ConfirmRequest,
    ErrorInfo,
    Expired,
    Failed,
    GetRequest,
    Lost,
    NetRequest,
    PlacementEvent,
    PlacementEventT,
    PlacementReply,
    PlacementRequestT,
    PlaceRequest,
    Ready,
    Released,
    ReleaseRequest,
    Reserved,
)
from sriov.common.schemas._service import ErrorReply
from sriov.common.schemas._vfconfig import (
    MAC_PATTERN,
    SETTINGS,
    VFIO_PCI,
    PfCapabilities,
    VfConfig,
    VfLinkState,
    VlanProto,
    clean_config,
)

_T = TypeVar("_T")

#: Every concrete (tagged) message type, for docs generation and golden tests.
ALL_MESSAGES: tuple[type[Message], ...] = (
    HostSnapshot, VfDiscovered, VfChanged, VfRemoved, PfChanged, LinkChanged, Heartbeat,
    Diagnostics, RescanRequest, SetNumVfsRequest, DoctorRequest, CommandAck,
    DeviceState, HostState, DeviceListRequest, DeviceListReply, DeviceGetRequest,
    DeviceGetReply, HostListRequest, HostListReply, HostGetRequest, HostGetReply,
    PlaceRequest, AttachRequest, ReleaseRequest, ConfirmRequest, GetRequest, PlacementReply,
    Reserved, Confirmed, Released, Expired, Lost, Failed,
    OffloadGetRequest, OffloadSetRequest, OffloadStatus, OffloadConfigChanged, OffloadChecks,
    AuditRequest, Audit, ErrorReply,
    VfApplied, Ready, VfDesired, CordonRequest, CordonReply, VfResetRequest, VfResetReply,
)  # fmt: skip

# One reusable codec per stream/endpoint payload.
HOST_EVENTS: Codec[HostEventT] = Codec(HostEventT, "host event")
PLACEMENT_EVENTS: Codec[PlacementEventT] = Codec(PlacementEventT, "placement event")
PLACEMENT_REQUESTS: Codec[PlacementRequestT] = Codec(PlacementRequestT, "placement request")
OFFLOAD_EVENTS: Codec[OffloadEventT] = Codec(OffloadEventT, "offload event")
STATE_EVENTS: Codec[DeviceState | HostState] = Codec(DeviceState | HostState, "state event")
DESIRED: Codec[VfDesired] = Codec(VfDesired, "desired VF state")


@functools.cache
def codec(cls: type[_T]) -> Codec[_T]:
    """Reusable codec for one message type (built once per type)."""
    return Codec(cls, type_of(cls))  # type: ignore[arg-type]


__all__ = [n for n in dir() if not n.startswith("_")]
