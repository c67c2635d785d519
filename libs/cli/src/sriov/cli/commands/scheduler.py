"""``sriovctl server-create``, ``server-attach-network``, ``server-release``, ``server-show``,
``server-confirm``: VF placement for guests, in the guide's ``climc`` words.

This control plane places VFs; it does not run guests. ``server-create`` reserves a VF for
each ``--net`` (all on one host, or none), waits until the host has prepared them
(``ready``: driver, MAC, VLAN applied and read back; ``--no-wait`` returns at ``reserved``)
and prints what a VM manager needs to start the guest with them; the guide's other
``climc server-create`` options are accepted so its command runs as written, and ignored.
A request that gets no answer in time is sent again with the same request id, which is safe:
the scheduler answers a retried request with the first answer.
"""

from __future__ import annotations

import uuid
from typing import Any

import click

from sriov.cli import readiness
from sriov.cli.context import CliContext
from sriov.cli.output import Report, Table, command
from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus
from sriov.common.errors import BusTimeout

COLUMNS = ["Guest_id", "Host_id", "Device_id", "Addr", "Model", "Vendor_device_id", "PF",
           "NUMA", "Net", "State", "Expires_at"]  # fmt: skip
ATTEMPTS = 3
NOT_HANDLED = ("disk", "ncpu", "mem_spec", "auto_start")


async def call(bus: Bus, name: str, req: m.Message, timeout: float) -> m.PlacementReply:
    """One scheduler request, resent (same request id) when no answer came in time."""
    subject = s.endpoint(s.SCHEDULER_GROUP, name)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await bus.request(subject, req, m.PlacementReply, timeout=timeout)
        except BusTimeout:
            if attempt == ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def rows(reply: m.PlacementReply) -> list[list[Any]]:
    return [
        [reply.guest_id, a.host_id, a.device_id, a.addr, a.model, a.vendor_device_id,
         a.pf_ifname or a.pf_pci_address, a.numa_node, a.net, a.state,
         a.expires_at.isoformat(timespec="seconds") if a.expires_at else "-"]
        for a in reply.assignments
    ]  # fmt: skip


def show(reply: m.PlacementReply, what: str, error: str | None = None) -> Report:
    human: list[Table | str] = [
        Table(COLUMNS, rows(reply), f"*** {what}: {len(reply.assignments)} VF(s) ***")
    ]
    if any(a.prepared is not None for a in reply.assignments):
        human.append(Table(readiness.VM_COLUMNS, readiness.vm_rows(reply)))
    notes = [f"sriovctl: error: {error}"] if error else []
    return Report(reply, human, notes, exit_code=1 if error else 0)


async def placed(
    bus: Bus, obj: CliContext, name: str, req: m.PlaceRequest | m.AttachRequest, wait: float
) -> readiness.Outcome:
    """Send ``req``; unless ``wait`` is 0, wait until the host prepared its VFs (or failed)."""
    if not wait:
        return readiness.Outcome(await call(bus, name, req, obj.timeout))
    async with readiness.listening(bus, req.guest_id) as events:
        reply = await call(bus, name, req, obj.timeout)
        get = m.GetRequest(guest_id=req.guest_id)
        return await readiness.wait_ready(
            reply, events, lambda: call(bus, "get", get, obj.timeout), wait
        )


def _wait_options(fn: Any) -> Any:
    fn = click.option(
        "--wait-timeout", default=60.0, show_default=True, type=click.FloatRange(min=0),
        help="Seconds to wait for the VFs to be ready (exit 1 when they are not).",
    )(fn)  # fmt: skip
    return click.option(
        "--no-wait", is_flag=True, help="Return once reserved, before the host prepared the VFs."
    )(fn)


def _request_id(fn: Any) -> Any:
    return click.option(
        "--request-id", help="Idempotency key (default: a new UUID); reuse it to retry safely."
    )(fn)


@command("server-create")
@click.argument("guest")
@click.option(
    "--net",
    "nets",
    multiple=True,
    required=True,
    metavar="NETDESC",
    help="'sriov-nic-model=<model>[:<network or wire>]' or "
    "'sriov-nic-id=<vf id>[:<network or wire>]'; repeat for more VFs.",
)
@click.option("--host", "host_id", help="Place on this host only.")
@click.option(
    "--numa-policy",
    type=click.Choice(["none", "preferred", "required"]),
    default="none",
    show_default=True,
    help="Keep VFs on the guest's NUMA node.",
)
@click.option("--numa-node", type=click.IntRange(0), help="The guest's NUMA node.")
@click.option(
    "--packing",
    type=click.Choice(["spread", "pack"]),
    default="spread",
    show_default=True,
    help="Across PFs: spread over them, or fill one first.",
)
@click.option(
    "--ttl",
    "ttl_s",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds before an unconfirmed reservation expires (scheduler default).",
)
@click.option("--confirm", is_flag=True, help="Confirm at once: the reservation never expires.")
@click.option("--disk", help="Accepted for the guide's command; not handled here.")
@click.option("--ncpu", help="Accepted for the guide's command; not handled here.")
@click.option("--mem-spec", help="Accepted for the guide's command; not handled here.")
@click.option("--auto-start", is_flag=True, help="Accepted for the guide's command; ignored.")
@_request_id
@_wait_options
@click.pass_obj
def server_create(obj: CliContext, /, guest: str, nets: tuple[str, ...], host_id: str | None,
                  numa_policy: str, numa_node: int | None, packing: str, ttl_s: float | None,
                  confirm: bool, request_id: str | None, no_wait: bool, wait_timeout: float,
                  **not_handled: Any) -> Report:  # fmt: skip
    """Reserve VFs for GUEST, all on one host, and wait until the host prepared them."""
    ignored = [f"--{k.replace('_', '-')}" for k in NOT_HANDLED if not_handled.get(k)]
    if ignored:
        click.echo(f"note: {', '.join(ignored)} not handled: sriovctl places VFs only", err=True)
    req = m.PlaceRequest(
        request_id=request_id or str(uuid.uuid4()),
        guest_id=guest,
        nets=[m.NetRequest(desc=n) for n in nets],
        host_id=host_id,
        numa_policy=numa_policy,  # type: ignore[arg-type]
        numa_node=numa_node,
        packing=packing,  # type: ignore[arg-type]
        ttl_s=ttl_s,
    )

    async def go(bus: Bus) -> readiness.Outcome:
        done = await placed(bus, obj, "place", req, 0 if no_wait else wait_timeout)
        if confirm and done.error is None:
            confirmed = m.ConfirmRequest(request_id=f"{req.request_id}/confirm", guest_id=guest)
            reply = await call(bus, "confirm", confirmed, obj.timeout)
            done.reply = readiness.keep_prepared(reply, done.reply)
        return done

    done = obj.run(go)
    return show(done.reply, f"Guest {guest} on host", done.error)


@command("server-attach-network")
@click.argument("guest")
@click.argument("netdesc")
@click.option("--host", "host_id", help="The guest's host, if it holds no VF yet.")
@click.option(
    "--ttl",
    "ttl_s",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds before the unconfirmed reservation expires.",
)
@_request_id
@_wait_options
@click.pass_obj
def server_attach_network(obj: CliContext, guest: str, netdesc: str, host_id: str | None,
                          ttl_s: float | None, request_id: str | None, no_wait: bool,
                          wait_timeout: float) -> Report:  # fmt: skip
    """Add a VF to GUEST on its host. NETDESC: 'sriov-nic-model=<model>[:<network id>]'."""
    req = m.AttachRequest(
        request_id=request_id or str(uuid.uuid4()), guest_id=guest,
        net=m.NetRequest(desc=netdesc), host_id=host_id, ttl_s=ttl_s,
    )  # fmt: skip
    done = obj.run(lambda bus: placed(bus, obj, "attach", req, 0 if no_wait else wait_timeout))
    return show(done.reply, f"Attached to guest {guest}", done.error)


@command("server-release")
@click.argument("guest")
@click.argument("device_id", required=False)
@_request_id
@click.pass_obj
def server_release(
    obj: CliContext, guest: str, device_id: str | None, request_id: str | None
) -> Report:
    """Release one VF (DEVICE_ID) or every VF of GUEST. Releasing twice is harmless."""
    req = m.ReleaseRequest(
        request_id=request_id or str(uuid.uuid4()), guest_id=guest, device_id=device_id
    )
    reply = obj.run(lambda bus: call(bus, "release", req, obj.timeout))
    if reply.released:
        line = f"released {len(reply.released)} VF(s) of guest {guest}: " + ", ".join(
            reply.released
        )
    else:
        line = f"guest {guest} held {'that VF' if device_id else 'no VF'}: nothing to release"
    return Report(reply, [line])


@command("server-confirm")
@click.argument("guest")
@_request_id
@click.pass_obj
def server_confirm(obj: CliContext, guest: str, request_id: str | None) -> Report:
    """GUEST started: its reservations no longer expire."""
    req = m.ConfirmRequest(request_id=request_id or str(uuid.uuid4()), guest_id=guest)
    reply = obj.run(lambda bus: call(bus, "confirm", req, obj.timeout))
    return show(reply, f"Confirmed for guest {guest}")


@command("server-show")
@click.argument("guest")
@click.pass_obj
def server_show(obj: CliContext, guest: str) -> Report:
    """The VFs GUEST holds."""
    reply = obj.run(lambda bus: call(bus, "get", m.GetRequest(guest_id=guest), obj.timeout))
    return show(reply, f"Guest {guest}")


COMMANDS = (server_create, server_attach_network, server_release, server_show, server_confirm)
