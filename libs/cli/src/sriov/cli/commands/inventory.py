"""``sriovctl isolated-device-list``, ``isolated-device-show``, ``host-list``, ``host-show``.

The device table has the guide's ``climc isolated-device-list`` columns and paging footer.
"""

from __future__ import annotations

import datetime as dt

import click

from sriov.cli.context import CliContext
from sriov.cli.output import echo_table, emit_json
from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus

DEVICE_COLUMNS = ["ID", "Dev_type", "Model", "Addr", "Vendor_device_id", "Host_id", "Guest_id"]
HOST_COLUMNS = ["ID", "Name", "Status", "Last_seen", "Generation", "PFs", "VFs", "Free", "Errors"]


def register(cli: click.Group) -> None:
    for command in (isolated_device_list, isolated_device_show, host_list, host_show):
        cli.add_command(command)


def footer(total: int, limit: int, offset: int) -> str:
    pages = max(1, -(-total // limit))
    page = offset // limit + 1
    return f"*** Total: {total} Pages: {pages} Limit: {limit} Offset: {offset} Page: {page} ***"


def device_row(d: m.Device) -> list[str | None]:
    return [d.id, d.dev_type, d.model, d.addr, d.vendor_device_id, d.host_id, d.guest_id]


def _json_flag(fn: click.decorators.FC) -> click.decorators.FC:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON.")(fn)


@click.command("isolated-device-list")
@click.option("--host", "host_id", help="Only this host's devices.")
@click.option("--model", help="Exact model, e.g. 'I350 Ethernet Controller Virtual Function'.")
@click.option("--dev-type", help="Device type (NIC).")
@click.option("--vendor-device-id", help="vendor:device, e.g. 15b3:1018.")
@click.option("--guest", "guest_id", help="Only devices held by this guest.")
@click.option("--free", "state", flag_value="free", help="Only devices no guest holds.")
@click.option("--attached", "state", flag_value="attached", help="Only devices guests hold.")
@click.option("--limit", default=15, show_default=True, type=click.IntRange(1, 1000))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0))
@_json_flag
@click.pass_obj
def isolated_device_list(
    obj: CliContext,
    host_id: str | None,
    model: str | None,
    dev_type: str | None,
    vendor_device_id: str | None,
    guest_id: str | None,
    state: str | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List SR-IOV VFs of the fleet (like `climc isolated-device-list`)."""
    req = m.DeviceListRequest(
        host_id=host_id,
        model=model,
        dev_type=dev_type,
        vendor_device_id=vendor_device_id,
        guest_id=guest_id,
        state=state or "any",  # type: ignore[arg-type]
        limit=limit,
        offset=offset,
    )

    async def call(bus: Bus) -> m.DeviceListReply:
        subject = s.endpoint(s.INVENTORY_DEVICES_GROUP, "list")
        return await bus.request(subject, req, m.DeviceListReply, timeout=obj.timeout)

    reply = obj.run(call)
    if obj.as_json or as_json:
        emit_json(reply)
        return
    echo_table(
        DEVICE_COLUMNS,
        [device_row(d) for d in reply.devices],
        footer(reply.total, reply.limit, reply.offset),
    )


@click.command("isolated-device-show")
@click.argument("device")
@click.option("--host", "host_id", help="With DEVICE a PCI address: the host it is on.")
@_json_flag
@click.pass_obj
def isolated_device_show(obj: CliContext, device: str, host_id: str | None, as_json: bool) -> None:
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
    if obj.as_json or as_json:
        emit_json(dev)
        return
    rows = [[f, _text(getattr(dev, f))] for f in m.Device.__struct_fields__]
    echo_table(["Field", "Value"], rows)


@click.command("host-list")
@click.option(
    "--status", type=click.Choice(["online", "offline", "unknown"]), help="Only these hosts."
)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0))
@_json_flag
@click.pass_obj
def host_list(obj: CliContext, status: str | None, limit: int, offset: int, as_json: bool) -> None:
    """List hosts with their liveness and VF counts."""
    req = m.HostListRequest(status=status, limit=limit, offset=offset)  # type: ignore[arg-type]

    async def call(bus: Bus) -> m.HostListReply:
        subject = s.endpoint(s.INVENTORY_HOSTS_GROUP, "list")
        return await bus.request(subject, req, m.HostListReply, timeout=obj.timeout)

    reply = obj.run(call)
    if obj.as_json or as_json:
        emit_json(reply)
        return
    echo_table(
        HOST_COLUMNS,
        [host_row(h) for h in reply.hosts],
        footer(reply.total, reply.limit, reply.offset),
    )


@click.command("host-show")
@click.argument("host_id")
@_json_flag
@click.pass_obj
def host_show(obj: CliContext, host_id: str, as_json: bool) -> None:
    """Show one host."""

    async def call(bus: Bus) -> m.HostGetReply:
        subject = s.endpoint(s.INVENTORY_HOSTS_GROUP, "get")
        req = m.HostGetRequest(host_id=host_id)
        return await bus.request(subject, req, m.HostGetReply, timeout=obj.timeout)

    host = obj.run(call).host
    if obj.as_json or as_json:
        emit_json(host)
        return
    echo_table(["Field", "Value"], [[f, _text(getattr(host, f))] for f in host.__struct_fields__])


def host_row(h: m.HostInfo) -> list[object]:
    return [
        h.host_id, h.hostname, h.status, _text(h.last_seen), h.generation,
        h.pf_count, h.vf_count, h.vf_free, h.errors,
    ]  # fmt: skip


def _text(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return "" if value is None else str(value)
