"""``sriovctl host-cordon``, ``host-uncordon``, ``host-drain``, ``vf-reset``: a host's upkeep.

Cordoning asks the scheduler to place nothing new on a host; the guests already there keep
their VFs. Draining cordons, then waits until no guest holds a VF there, naming the guests
that still do (exit 1 when they outlast ``--timeout``). ``vf-reset`` returns a quarantined VF
to service: hostd restores it once more, and the scheduler offers it only if it reads back
clean.
"""

from __future__ import annotations

import asyncio
import uuid

import click

from sriov.cli.context import CliContext
from sriov.cli.output import Report, Table, command
from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus

HELD_COLUMNS = ["Guest_id", "Device_id", "PCI_address"]
DRAIN_POLL_S = 1.0


def _host_option(fn: click.decorators.FC) -> click.decorators.FC:
    return click.option("--host", "host_id", required=True, help="The host's id (host_id).")(fn)


async def cordon(bus: Bus, req: m.CordonRequest, timeout: float) -> m.CordonReply:
    subject = s.endpoint(s.SCHEDULER_GROUP, "cordon")
    return await bus.request(subject, req, m.CordonReply, timeout=timeout)


def guests(reply: m.CordonReply) -> list[str]:
    return sorted({h.guest_id for h in reply.held})


def cordon_report(reply: m.CordonReply, exit_code: int = 0, note: str = "") -> Report:
    state = "cordoned" if reply.cordoned else "uncordoned"
    why = f" ({reply.reason})" if reply.cordoned and reply.reason else ""
    held = guests(reply)
    line = f"host {reply.host_id} {state}{why}: " + (
        f"{len(reply.held)} VF(s) held by {len(held)} guest(s): {', '.join(held)}"
        if held
        else "no VF held"
    )
    human: list[Table | str] = [line]
    if reply.held:
        rows = [[h.guest_id, h.device_id, h.pci_address] for h in reply.held]
        human.append(Table(HELD_COLUMNS, rows))
    return Report(reply, human, [note] if note else [], exit_code)


@command("host-cordon")
@_host_option
@click.option("--reason", default="", help="Why (shown to other operators).")
@click.pass_obj
def host_cordon(obj: CliContext, host_id: str, reason: str) -> Report:
    """Place nothing new on a host; the guests there keep their VFs."""
    req = m.CordonRequest(host_id=host_id, cordoned=True, reason=reason)
    return cordon_report(obj.run(lambda bus: cordon(bus, req, obj.timeout)))


@command("host-uncordon")
@_host_option
@click.pass_obj
def host_uncordon(obj: CliContext, host_id: str) -> Report:
    """Let the scheduler place on a host again."""
    req = m.CordonRequest(host_id=host_id, cordoned=False)
    return cordon_report(obj.run(lambda bus: cordon(bus, req, obj.timeout)))


@command("host-drain")
@_host_option
@click.option("--reason", default="drain", show_default=True, help="Why (kept on the host).")
@click.option(
    "--timeout", "wait_s", default=300.0, show_default=True, type=click.FloatRange(min=0),
    help="Seconds to wait for the guests to let go.",
)  # fmt: skip
@click.pass_obj
def host_drain(obj: CliContext, host_id: str, reason: str, wait_s: float) -> Report:
    """Cordon a host, then wait until no guest holds a VF there (exit 1 on timeout)."""
    req = m.CordonRequest(host_id=host_id, cordoned=True, reason=reason)

    async def drain(bus: Bus) -> m.CordonReply:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        reply = await cordon(bus, req, obj.timeout)
        shown: list[str] = []
        while reply.held and loop.time() < deadline:
            if guests(reply) != shown:  # say who blocks the drain, when it changes
                shown = guests(reply)
                click.echo(f"waiting for {len(shown)} guest(s): {', '.join(shown)}", err=True)
            await asyncio.sleep(min(DRAIN_POLL_S, max(0.0, deadline - loop.time())))
            reply = await cordon(bus, req, obj.timeout)
        return reply

    reply = obj.run(drain)
    if reply.held:
        note = (
            f"sriovctl: error: host {host_id} not drained after {wait_s:g} s: "
            f"guests {', '.join(guests(reply))} still hold VFs"
        )
        return cordon_report(reply, 1, note)
    return cordon_report(reply)


@command("vf-reset")
@_host_option
@click.option("--pci", "pci_address", required=True, help="The VF's PCI address.")
@click.option("--request-id", help="Idempotency key (default: a new UUID).")
@click.pass_obj
def vf_reset(obj: CliContext, host_id: str, pci_address: str, request_id: str | None) -> Report:
    """Return a quarantined VF to service once hostd restores it (offered only if clean)."""
    req = m.VfResetRequest(
        request_id=request_id or str(uuid.uuid4()), host_id=host_id, pci_address=pci_address
    )

    async def call(bus: Bus) -> m.VfResetReply:
        subject = s.endpoint(s.SCHEDULER_GROUP, "vf-reset")
        return await bus.request(subject, req, m.VfResetReply, timeout=obj.timeout)

    reply = obj.run(call)
    line = (
        f"host {reply.host_id} VF {reply.pci_address} ({reply.device_id}): {reply.state}, "
        f"desired revision {reply.revision}"
    )
    return Report(reply, [line])


COMMANDS = (host_cordon, host_uncordon, host_drain, vf_reset)
