"""``sriovctl isolated-device-list``, ``isolated-device-show``, ``host-list``, ``host-show``.

The device table has the guide's ``climc isolated-device-list`` columns and paging footer;
``--lifecycle`` adds where each VF is in its lifecycle and what hostd read back of it
(driver, MAC, VLAN), and filters on the state, so the guide's table stays as it is.
"""

from __future__ import annotations

import datetime as dt

import click
import msgspec

from sriov.cli.context import CliContext
from sriov.cli.output import Report, Table, command
from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus

DEVICE_COLUMNS = ["ID", "Dev_type", "Model", "Addr", "Vendor_device_id", "Host_id", "Guest_id"]
LIFECYCLE_COLUMNS = ["Lifecycle", "Driver", "MAC", "VLAN"]
LIFECYCLE_STATES = ("free", "preparing", "ready", "cleaning", "quarantined")
HOST_COLUMNS = ["ID", "Name", "Status", "Last_seen", "Generation", "PFs", "VFs", "Free", "Errors"]


def footer(total: int, limit: int, offset: int) -> str:
    pages = max(1, -(-total // limit))
    page = offset // limit + 1
    return f"*** Total: {total} Pages: {pages} Limit: {limit} Offset: {offset} Page: {page} ***"


def device_row(d: m.Device) -> list[str | None]:
    return [d.id, d.dev_type, d.model, d.addr, d.vendor_device_id, d.host_id, d.guest_id]


def lifecycle_cells(d: m.Device) -> list[str | None]:
    """The lifecycle state ("-": a host without the lifecycle) and the read-back config."""
    a = d.actual
    return [
        d.lifecycle or "-",
        d.driver,
        a.mac if a else d.mac,
        str(a.vlan) if a else None,
    ]


@command("isolated-device-list")
@click.option("--host", "host_id", help="Only this host's devices.")
@click.option("--model", help="Exact model, e.g. 'I350 Ethernet Controller Virtual Function'.")
@click.option("--dev-type", help="Device type (NIC).")
@click.option("--vendor-device-id", help="vendor:device, e.g. 15b3:1018.")
@click.option("--guest", "guest_id", help="Only devices held by this guest.")
@click.option("--free", "state", flag_value="free", help="Only devices no guest holds.")
@click.option("--attached", "state", flag_value="attached", help="Only devices guests hold.")
@click.option(
    "--lifecycle",
    type=click.Choice(["any", *LIFECYCLE_STATES]),
    help="Add the lifecycle state, driver, MAC and VLAN; only VFs in this state ('any': all).",
)
@click.option("--limit", default=15, show_default=True, type=click.IntRange(1, 1000))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0))
@click.pass_obj
def isolated_device_list(
    obj: CliContext,
    host_id: str | None,
    model: str | None,
    dev_type: str | None,
    vendor_device_id: str | None,
    guest_id: str | None,
    state: str | None,
    lifecycle: str | None,
    limit: int,
    offset: int,
) -> Report:
    """List SR-IOV VFs of the fleet (like `climc isolated-device-list`)."""
    req = m.DeviceListRequest(
        host_id=host_id,
        model=model,
        dev_type=dev_type,
        vendor_device_id=vendor_device_id,
        guest_id=guest_id,
        state=state or "any",  # type: ignore[arg-type]
        lifecycle=None if lifecycle in (None, "any") else lifecycle,  # type: ignore[arg-type]
        limit=limit,
        offset=offset,
    )

    async def call(bus: Bus) -> m.DeviceListReply:
        subject = s.endpoint(s.INVENTORY_DEVICES_GROUP, "list")
        return await bus.request(subject, req, m.DeviceListReply, timeout=obj.timeout)

    reply = obj.run(call)
    columns = DEVICE_COLUMNS + (LIFECYCLE_COLUMNS if lifecycle else [])
    rows = [device_row(d) + (lifecycle_cells(d) if lifecycle else []) for d in reply.devices]
    return Report(reply, [Table(columns, rows, footer(reply.total, reply.limit, reply.offset))])


@command("isolated-device-show")
@click.argument("device")
@click.option("--host", "host_id", help="With DEVICE a PCI address: the host it is on.")
@click.pass_obj
def isolated_device_show(obj: CliContext, device: str, host_id: str | None) -> Report:
    """Show one VF by id (or by PCI address with --host)."""
    req = (
        m.DeviceGetRequest(host_id=host_id, pci_address=device)
        if host_id
        else m.DeviceGetRequest(id=device)
    )

    async def call(bus: Bus) -> m.DeviceGetReply:
        subject = s.endpoint(s.INVENTORY_DEVICES_GROUP, "get")
        return await bus.request(subject, req, m.DeviceGetReply, timeout=obj.timeout)

    dev = obj.run(call).device
    return Report(dev, [fields_table(dev)])


@command("host-list")
@click.option(
    "--status", type=click.Choice(["online", "offline", "unknown"]), help="Only these hosts."
)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0))
@click.pass_obj
def host_list(obj: CliContext, status: str | None, limit: int, offset: int) -> Report:
    """List hosts with their liveness and VF counts."""
    req = m.HostListRequest(status=status, limit=limit, offset=offset)  # type: ignore[arg-type]

    async def call(bus: Bus) -> m.HostListReply:
        subject = s.endpoint(s.INVENTORY_HOSTS_GROUP, "list")
        return await bus.request(subject, req, m.HostListReply, timeout=obj.timeout)

    reply = obj.run(call)
    rows = [host_row(h) for h in reply.hosts]
    return Report(
        reply, [Table(HOST_COLUMNS, rows, footer(reply.total, reply.limit, reply.offset))]
    )


@command("host-show")
@click.argument("host_id")
@click.pass_obj
def host_show(obj: CliContext, host_id: str) -> Report:
    """Show one host."""

    async def call(bus: Bus) -> m.HostGetReply:
        subject = s.endpoint(s.INVENTORY_HOSTS_GROUP, "get")
        req = m.HostGetRequest(host_id=host_id)
        return await bus.request(subject, req, m.HostGetReply, timeout=obj.timeout)

    host = obj.run(call).host
    return Report(host, [fields_table(host)])


def host_row(h: m.HostInfo) -> list[object]:
    return [
        h.host_id, h.hostname, h.status, _text(h.last_seen), h.generation,
        h.pf_count, h.vf_count, h.vf_free, h.errors,
    ]  # fmt: skip


def fields_table(struct: msgspec.Struct) -> Table:
    """One object as a Field/Value table, in its fields' order."""
    return Table(
        ["Field", "Value"], [[f, _text(getattr(struct, f))] for f in struct.__struct_fields__]
    )


def _text(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, msgspec.Struct):  # capabilities, read-back configuration
        return msgspec.json.encode(value).decode()
    return "" if value is None else str(value)


COMMANDS = (isolated_device_list, isolated_device_show, host_list, host_show)
