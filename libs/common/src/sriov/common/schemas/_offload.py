"""Offload agent: hw-offload control, eswitch checks and offloaded-flow audits."""

from __future__ import annotations

import msgspec

from sriov.common.schemas._base import Message, Model, utcnow
from sriov.common.schemas._host import Finding
from sriov.common.schemas._limits import Timestamp


class OffloadGetRequest(Message, kw_only=True, tag="offload.get.v1"):
    """Read hw-offload settings and run the NIC checks."""


class OffloadSetRequest(Message, kw_only=True, tag="offload.set.v1"):
    hw_offload: bool
    tc_policy: str | None = None
    """``none``, ``skip_sw`` or ``skip_hw``; unchanged when unset."""
    max_idle_ms: int | None = None
    allow_restart: bool = False
    """Restart ovs-vswitchd when the change needs it (hw-offload is read only at start)."""


class OffloadStatus(Message, kw_only=True, tag="offload.status.v1"):
    host_id: str
    hw_offload: bool
    tc_policy: str | None = None
    max_idle_ms: int | None = None
    restart_required: bool = False
    """The running ovs-vswitchd has not picked up ``hw_offload`` yet."""
    restarted: bool = False
    ovs_version: str = ""
    datapath_types: list[str] = msgspec.field(default_factory=list)
    findings: list[Finding] = msgspec.field(default_factory=list)
    restart_reasons: list[str] = msgspec.field(default_factory=list)
    """Why ovs-vswitchd must restart for the settings to take effect (empty: it need not)."""
    flow_api: bool | None = None
    """Whether the running ovs-vswitchd has its offload flow API on (None: it cannot say)."""
    applied: bool = True
    """ovs-vswitchd has applied the last configuration change (``cur_cfg == next_cfg``)."""


class OffloadConfigChanged(Message, kw_only=True, tag="offload.config.changed.v1"):
    host_id: str
    status: OffloadStatus
    ts: Timestamp = msgspec.field(default_factory=utcnow)


class OffloadChecks(Message, kw_only=True, tag="offload.checks.v1"):
    host_id: str
    findings: list[Finding]
    ts: Timestamp = msgspec.field(default_factory=utcnow)


class AuditRequest(Message, kw_only=True, tag="offload.audit.request.v1"):
    top: int = 10
    """How many non-offloaded flows to name."""


class FlowSummary(Model, kw_only=True):
    ufid: str | None
    in_port: str | None
    match: str
    actions: str
    packets: int
    bytes: int
    dp: str | None = None
    offloaded: str = "no"
    """``yes``, ``partial`` or ``no``."""
    used_s: float | None = None
    """Seconds since the flow last matched (None: never)."""
    datapath: str | None = None
    """The datapath holding the flow (``system@ovs-system``, ``netdev@ovs-netdev``)."""


class PortCounters(Model, kw_only=True):
    port: str
    pf: str | None = None
    flows: int = 0
    offloaded: int = 0
    partial: int = 0
    not_offloaded: int = 0
    bytes: int = 0
    offloaded_bytes: int = 0
    partial_bytes: int = 0
    packets: int = 0
    unknown: int = 0
    """Flows whose dump does not say whether they are offloaded (taken without ``-m``)."""


class Audit(Message, kw_only=True, tag="offload.audit.v1"):
    host_id: str
    hw_offload: bool
    flows: int
    offloaded: int
    partial: int
    not_offloaded: int
    bytes: int
    offloaded_bytes: int
    ratio: float
    """Offloaded flows / flows whose status is known (0 when there are none)."""
    per_port: list[PortCounters] = msgspec.field(default_factory=list)
    top_not_offloaded: list[FlowSummary] = msgspec.field(default_factory=list)
    findings: list[Finding] = msgspec.field(default_factory=list)
    ts: Timestamp = msgspec.field(default_factory=utcnow)
    per_pf: list[PortCounters] = msgspec.field(default_factory=list)
    """Counters summed per offload PF (a bond counts as one), over the PF and its
    representors."""
    partial_bytes: int = 0
    packets: int = 0
    datapaths: list[str] = msgspec.field(default_factory=list)
    unparsed_lines: int = 0
    """dump-flows lines the parser could not read (a finding names them)."""
    duration_ms: float = 0.0
    unknown: int = 0
    """Flows whose status the dump does not say (taken without ``-m``): neither offloaded
    nor in software, so never counted as "not offloaded"."""


OffloadEventT = OffloadConfigChanged | OffloadChecks | Audit
