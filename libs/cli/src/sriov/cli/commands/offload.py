"""``sriovctl offload-status``, ``offload-enable``, ``offload-disable``, ``offload-audit``.

They talk to each host's offload agent (``sriov-offload``) over its host-scoped endpoints;
``offload-status`` without ``--host`` asks every host in inventory's host list, never the hosts
that ``$SRV`` discovery names: any host identity may answer discovery, so its metadata could
add or hide targets (issue 17).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import click

from sriov.cli.context import CliContext
from sriov.cli.output import Report, Table, command
from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus
from sriov.common.errors import BusError, BusTimeout, SriovError

STATUS_COLUMNS = ["Host", "HW_offload", "TC_policy", "Max_idle_ms", "Flow_API", "Restart",
                  "OVS", "Problems"]  # fmt: skip
FINDING_COLUMNS = ["Host", "Severity", "Check", "Device", "Message", "Fix"]
PORT_COLUMNS = ["Port", "PF", "Flows", "Offloaded", "Partial", "Software", "Packets", "Bytes",
                "Offloaded_bytes"]  # fmt: skip
FLOW_COLUMNS = ["In_port", "Packets", "Bytes", "Used", "Layer", "Datapath", "Actions", "Match"]
PROBLEM = ("warning", "error")
PAGE = 1000
"""Hosts per inventory.hosts.list request (its maximum)."""


def _ep(host: str, name: str) -> s.Subject:
    return s.endpoint(s.offloadcmd_group(host), name)


def _yes(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "no")


def status_row(st: m.OffloadStatus) -> list[object]:
    problems = sum(1 for f in st.findings if f.severity in PROBLEM)
    return [
        st.host_id, _yes(st.hw_offload), st.tc_policy or "-", st.max_idle_ms or "-",
        _yes(st.flow_api), "required" if st.restart_required else "-", st.ovs_version,
        problems,
    ]  # fmt: skip


def findings_table(findings: Sequence[tuple[str, m.Finding]], everything: bool) -> list[Table]:
    """The findings worth showing, as a table (none when there are none)."""
    rows = [
        [host, f.severity, f.check, f.device or "", f.message, f.fix]
        for host, f in findings
        if everything or f.severity in PROBLEM
    ]
    return [Table(FINDING_COLUMNS, rows)] if rows else []


async def inventory_hosts(bus: Bus, timeout: float) -> list[m.HostInfo]:
    """Every host inventory knows, all pages."""
    subject = s.endpoint(s.INVENTORY_HOSTS_GROUP, "list")
    hosts: list[m.HostInfo] = []
    while True:
        req = m.HostListRequest(limit=PAGE, offset=len(hosts))
        page = await bus.request(subject, req, m.HostListReply, timeout=timeout)
        hosts += page.hosts
        if not page.hosts or len(hosts) >= page.total:
            return hosts


def _no_agent(exc: SriovError) -> bool:
    """ "No responders": nothing serves this host's offload endpoints (no agent runs there)."""
    return isinstance(exc, BusError) and not isinstance(exc, BusTimeout)


@command("offload-status")
@click.option("--host", "hosts", multiple=True, help="Only this host (repeatable).")
@click.option("--all-findings", is_flag=True, help="Also show checks that passed.")
@click.pass_obj
def offload_status(obj: CliContext, hosts: tuple[str, ...], all_findings: bool) -> Report:
    """hw-offload settings, the NIC checks and whether ovs-vswitchd must restart, per host.

    Without --host: every online host of inventory's host list (sriovctl host-list).
    """

    async def call(bus: Bus) -> tuple[list[m.OffloadStatus | SriovError], list[str]]:
        notes: list[str] = []
        if hosts:
            targets = list(hosts)
        else:
            known = await inventory_hosts(bus, obj.timeout)
            targets = [h.host_id for h in known if h.status == "online"]
            notes += [f"sriovctl: host {h.host_id} is {h.status} in inventory: not asked"
                      for h in known if h.status != "online"]  # fmt: skip

        async def one(host: str) -> m.OffloadStatus | SriovError | None:
            try:
                return await bus.request(
                    _ep(host, "get"), m.OffloadGetRequest(), m.OffloadStatus, timeout=obj.timeout
                )
            except SriovError as exc:
                if hosts and len(hosts) == 1:
                    raise
                if not hosts and _no_agent(exc):
                    notes.append(f"sriovctl: host {host}: no offload agent runs there")
                    return None
                return exc

        answers = await asyncio.gather(*(one(h) for h in targets))
        return [a for a in answers if a is not None], notes

    results, notes = obj.run(call)
    statuses = [r for r in results if isinstance(r, m.OffloadStatus)]
    errors = [r for r in results if not isinstance(r, m.OffloadStatus)]
    notes += [f"sriovctl: {err} [{err.code}]" for err in errors]
    if not statuses and not errors:
        notes.append("sriovctl: error: no offload agent answered: is sriov-offload running on "
                     "the hosts inventory lists as online?")  # fmt: skip
    found = [(st.host_id, f) for st in statuses for f in st.findings]
    return Report(
        statuses,
        [Table(STATUS_COLUMNS, [status_row(st) for st in statuses],
               f"*** Total: {len(statuses)} ***"),
         *findings_table(found, all_findings)],
        notes,
        exit_code=1 if errors or not statuses else 0,
    )  # fmt: skip


def _set(obj: CliContext, host: str, req: m.OffloadSetRequest) -> Report:
    async def call(bus: Bus) -> m.OffloadStatus:
        timeout = max(obj.timeout, 90.0 if req.allow_restart else 15.0)
        return await bus.request(_ep(host, "set"), req, m.OffloadStatus, timeout=timeout)

    st = obj.run(call)
    human: list[Table | str] = [Table(STATUS_COLUMNS, [status_row(st)])]
    if st.restarted:
        human.append("ovs-vswitchd was restarted.")
    if st.restart_required:
        human.append("ovs-vswitchd must restart for this to take effect:")
        human += [f"  - {reason}" for reason in st.restart_reasons]
        if not req.allow_restart:
            human.append("Run again with --allow-restart to let the agent restart it.")
    return Report(st, [*human, *findings_table([(st.host_id, f) for f in st.findings], False)])


_restart_opt = click.option(
    "--allow-restart",
    is_flag=True,
    help="Let the agent restart ovs-vswitchd if the change needs it (and it may).",
)


@command("offload-enable")
@click.option("--host", required=True, help="Host id.")
@click.option("--tc-policy", type=click.Choice(["none", "skip_sw", "skip_hw"]))
@click.option("--max-idle", "max_idle_ms", type=click.IntRange(500), help="Flow idle ms.")
@_restart_opt
@click.pass_obj
def offload_enable(
    obj: CliContext,
    host: str,
    tc_policy: str | None,
    max_idle_ms: int | None,
    allow_restart: bool,
) -> Report:
    """Set other_config:hw-offload=true on HOST's Open vSwitch."""
    req = m.OffloadSetRequest(
        hw_offload=True, tc_policy=tc_policy, max_idle_ms=max_idle_ms, allow_restart=allow_restart
    )
    return _set(obj, host, req)


@command("offload-disable")
@click.option("--host", required=True, help="Host id.")
@_restart_opt
@click.pass_obj
def offload_disable(obj: CliContext, host: str, allow_restart: bool) -> Report:
    """Set other_config:hw-offload=false (takes effect when ovs-vswitchd restarts)."""
    return _set(obj, host, m.OffloadSetRequest(hw_offload=False, allow_restart=allow_restart))


@command("offload-audit")
@click.option("--host", required=True, help="Host id.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(0, 1000),
              help="How many software (non-offloaded) flows to name.")  # fmt: skip
@click.option("--ports/--no-ports", default=True, show_default=True, help="Per-port table.")
@click.pass_obj
def offload_audit(obj: CliContext, host: str, top: int, ports: bool) -> Report:
    """Audit HOST's datapath flows now: how many are offloaded, and the busiest that are not."""

    async def call(bus: Bus) -> m.Audit:
        timeout = max(obj.timeout, 30.0)
        return await bus.request(
            _ep(host, "audit"), m.AuditRequest(top=top), m.Audit, timeout=timeout
        )

    a = obj.run(call)
    human: list[Table | str] = [Table(
        ["Host", "HW_offload", "Flows", "Offloaded", "Partial", "Software", "Ratio", "Bytes",
         "Offloaded_bytes", "Datapaths"],
        [[a.host_id, _yes(a.hw_offload), a.flows, a.offloaded, a.partial, a.not_offloaded,
          f"{a.ratio:.1%}", a.bytes, a.offloaded_bytes, ", ".join(a.datapaths) or "-"]],
    )]  # fmt: skip
    if ports and a.per_port:
        rows = [
            [p.port, p.pf or "", p.flows, p.offloaded, p.partial, p.not_offloaded, p.packets,
             p.bytes, p.offloaded_bytes]
            for p in [*a.per_pf, *a.per_port]
        ]  # fmt: skip
        human.append(Table(PORT_COLUMNS, rows))
    if a.top_not_offloaded:
        human.append("Top non-offloaded flows:")
        human.append(Table(FLOW_COLUMNS, [_flow_row(f) for f in a.top_not_offloaded]))
    return Report(a, [*human, *findings_table([(a.host_id, f) for f in a.findings], True)])


def _flow_row(f: m.FlowSummary) -> list[object]:
    used = "never" if f.used_s is None else f"{f.used_s:.3f}s"
    match = f.match if len(f.match) <= 80 else f.match[:77] + "..."
    return [f.in_port or "", f.packets, f.bytes, used, f.dp or "", f.datapath or "", f.actions,
            match]  # fmt: skip


COMMANDS = (offload_status, offload_enable, offload_disable, offload_audit)
