"""The query service: ``devices.list/get`` and ``hosts.list/get`` over ``nats.micro``.

Every replica registers the same endpoints in one queue group, so NATS spreads requests
over them. Replies come straight from PostgreSQL (the table is the truth; the state stream
is for subscribers that keep their own projection).
"""

from __future__ import annotations

from collections.abc import Mapping

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import ServiceHost
from sriov.common.errors import InvalidRequest, NotFound
from sriov.inventory.db import reads
from sriov.inventory.db.conn import Pool

QUEUE_GROUP = "sriov-inventory"


class QueryApi:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def register(self, service: ServiceHost) -> None:
        dev, hosts = subjects.INVENTORY_DEVICES_GROUP, subjects.INVENTORY_HOSTS_GROUP
        await service.add_endpoint(
            dev, "list", m.DeviceListRequest, self.devices_list, queue_group=QUEUE_GROUP
        )
        await service.add_endpoint(
            dev, "get", m.DeviceGetRequest, self.devices_get, queue_group=QUEUE_GROUP
        )
        await service.add_endpoint(
            hosts, "list", m.HostListRequest, self.hosts_list, queue_group=QUEUE_GROUP
        )
        await service.add_endpoint(
            hosts, "get", m.HostGetRequest, self.hosts_get, queue_group=QUEUE_GROUP
        )

    async def devices_list(
        self, req: m.DeviceListRequest, _headers: Mapping[str, str]
    ) -> m.DeviceListReply:
        m.check(req)  # paging ranges: the request type's own (decoding enforced them too)
        flt = reads.DeviceFilter(
            host_id=req.host_id,
            model=req.model,
            dev_type=req.dev_type,
            vendor_device_id=req.vendor_device_id,
            guest_id=req.guest_id,
            state=req.state,
            lifecycle=req.lifecycle,
        )
        async with self.pool.acquire() as conn:
            devices, total = await reads.list_devices(conn, flt, req.limit, req.offset)
        return m.DeviceListReply(devices=devices, total=total, limit=req.limit, offset=req.offset)

    async def devices_get(
        self, req: m.DeviceGetRequest, _headers: Mapping[str, str]
    ) -> m.DeviceGetReply:
        if req.id is None and (req.host_id is None or req.pci_address is None):
            raise InvalidRequest("give the device id, or both host_id and pci_address", field="id")
        async with self.pool.acquire() as conn:
            dev = await reads.get_device(conn, req.id, req.host_id, req.pci_address)
        if dev is None:
            what = req.id or f"{req.pci_address} on host {req.host_id}"
            raise NotFound(f"no device {what} in the inventory", device=what)
        return m.DeviceGetReply(device=dev)

    async def hosts_list(
        self, req: m.HostListRequest, _headers: Mapping[str, str]
    ) -> m.HostListReply:
        m.check(req)  # paging ranges: the request type's own (decoding enforced them too)
        async with self.pool.acquire() as conn:
            hosts, total = await reads.list_hosts(conn, req.status, req.limit, req.offset)
        return m.HostListReply(hosts=hosts, total=total, limit=req.limit, offset=req.offset)

    async def hosts_get(self, req: m.HostGetRequest, _headers: Mapping[str, str]) -> m.HostGetReply:
        async with self.pool.acquire() as conn:
            host = await reads.get_host(conn, req.host_id)
        if host is None:
            raise NotFound(f"no host {req.host_id!r} in the inventory", host_id=req.host_id)
        return m.HostGetReply(host=host)
