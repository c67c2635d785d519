"""``sriovctl host-doctor``, ``host-rescan``, ``host-set-numvfs``: commands to one host's hostd.

Each goes to that host's command endpoints (``sriov.v1.hostcmd.<host_id>.*``), so only the
named host answers. ``host-doctor`` exits 1 when a check found an error, so scripts can
gate on it.
"""

from __future__ import annotations

import click

from sriov.cli.context import CliContext
from sriov.cli.output import Report, Table, command
from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2, "ok": 3}


def _host_option(fn: click.decorators.FC) -> click.decorators.FC:
    return click.option("--host", "host_id", required=True, help="The host's id (host_id).")(fn)


def finding_rows(findings: list[m.Finding], verbose: bool) -> list[list[str]]:
    rows = []
    for f in sorted(findings, key=lambda f: SEVERITY_ORDER.get(f.severity, 9)):
        if f.severity == "ok" and not verbose:
            continue
        detail = f.message
        if f.evidence and f.severity != "ok":
            detail += "\nseen: " + f.evidence
        rows.append([f.severity.upper(), f.check, f.device or "", detail, f.fix])
    return rows


@command("host-doctor")
@_host_option
@click.option("--all", "verbose", is_flag=True, help="Also list the checks that passed.")
@click.pass_obj
def host_doctor(obj: CliContext, host_id: str, verbose: bool) -> Report:
    """Run every check of the guide on a host: IOMMU, SR-IOV, MMIO, ACS/ARI, vfio, IB, offload."""
    subject = s.endpoint(s.hostcmd_group(host_id), "doctor")

    async def call(bus: Bus) -> m.Diagnostics:
        return await bus.request(subject, m.DoctorRequest(), m.Diagnostics, timeout=obj.timeout)

    diag = obj.run(call)
    errors = sum(1 for f in diag.findings if f.severity == "error")
    return Report(
        diag, [doctor_table(host_id, diag.findings, verbose)], exit_code=1 if errors else 0
    )


def doctor_table(host_id: str, findings: list[m.Finding], verbose: bool) -> Table:
    """Problems first; the checks that passed with ``--all``, or when nothing else is to show
    (a healthy host lists what was checked, not an empty grid)."""
    count = {s: sum(1 for f in findings if f.severity == s) for s in SEVERITY_ORDER}
    shown = verbose or count["ok"] == len(findings)
    summary = (
        f"*** {host_id}: {len(findings)} checks, {count['error']} errors, "
        f"{count['warning']} warnings"
        + ("" if shown else f", {count['ok']} passed (--all lists them)")
        + " ***"
    )
    rows = finding_rows(findings, shown)
    return Table(["Severity", "Check", "Device", "Finding", "Fix"], rows, summary)


@command("host-rescan")
@_host_option
@click.pass_obj
def host_rescan(obj: CliContext, host_id: str) -> Report:
    """Make a host rediscover its PFs and VFs and publish a fresh snapshot."""
    subject = s.endpoint(s.hostcmd_group(host_id), "rescan")

    async def call(bus: Bus) -> m.CommandAck:
        return await bus.request(subject, m.RescanRequest(), m.CommandAck, timeout=obj.timeout)

    ack = obj.run(call)
    return Report(ack, [f"{host_id}: {ack.message} (snapshot seq {ack.snapshot_seq})"])


@command("host-set-numvfs")
@_host_option
@click.option("--pf", required=True, help="PF netdev name (eth1) or PCI address.")
@click.option("--num", "num_vfs", required=True, type=click.IntRange(0), help="VF count.")
@click.option(
    "--force", is_flag=True,
    help="Even though guests hold VFs of the PF: their reservations end (lost).",
)  # fmt: skip
@click.pass_obj
def host_set_numvfs(obj: CliContext, host_id: str, pf: str, num_vfs: int, force: bool) -> Report:
    """Set a PF's VF count (written as 0 then N, bounded by sriov_totalvfs).

    Refused while guests hold VFs of the PF (recreating VFs destroys theirs), unless --force.
    """
    subject = s.endpoint(s.hostcmd_group(host_id), "set-numvfs")
    req = m.SetNumVfsRequest(pf=pf, num_vfs=num_vfs, force=force)

    async def call(bus: Bus) -> m.CommandAck:
        # creating many VFs takes a while on real hardware: allow more than the default
        return await bus.request(subject, req, m.CommandAck, timeout=max(obj.timeout, 30))

    ack = obj.run(call)
    return Report(ack, [f"{host_id}: {ack.message}"])


COMMANDS = (host_doctor, host_rescan, host_set_numvfs)
