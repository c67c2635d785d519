"""``sriovctl events``: follow what happens in the fleet, live, one line per event.

Device state (inventory), link changes and VF outcomes (hostd: a VF prepared, cleaned,
quarantined, a drift repaired), placements (scheduler), offload config,
checks and audits (offload) and host liveness (inventory), filtered by host and kind. It
subscribes to the subjects the services already publish on (core NATS sees JetStream
messages as they are stored), so following costs the services nothing and changes nothing.
Placement events that name only device ids are matched to a host through the devices this
command has seen, or one inventory lookup per unknown device.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
import msgspec

from sriov.cli.context import CliContext
from sriov.cli.output import command, output_format, render_item
from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus
from sriov.common.errors import InvalidRequest, SriovError
from sriov.common.schemas import Codec

KINDS = ("device", "link", "placement", "offload", "host", "vf")
_CODECS: dict[str, Codec[Any]] = {
    "device": m.STATE_EVENTS,
    "host": m.STATE_EVENTS,
    "link": m.HOST_EVENTS,
    "placement": m.PLACEMENT_EVENTS,
    "offload": m.OFFLOAD_EVENTS,
    "vf": m.HOST_EVENTS,
}


def watch_subjects(kinds: tuple[str, ...], hosts: tuple[str, ...]) -> list[tuple[str, str]]:
    """(subject, kind) pairs to subscribe to; per host when hosts are named."""
    per_host = {
        "device": s.DEVICE_STATE,
        "host": s.HOST_STATE,
        "link": s.HOST_LINK,
        "offload": s.OFFLOAD_EVENT,
        "vf": s.HOST_VF_APPLIED,
    }
    out: list[tuple[str, str]] = []
    for kind in kinds:
        if kind == "placement":  # keyed by guest: filtered on the host named in the event
            out.append((s.wildcard(s.PLACEMENT_EVENT), kind))
            continue
        for host in hosts or (None,):
            fixed = {"host_id": host} if host else {}
            out.append((s.wildcard(per_host[kind], **fixed), kind))
    return out


@dataclass
class Event:
    time: str
    kind: str
    host_id: str | None
    subject: str
    type: str
    summary: str
    event: Any


def summarize(msg: Any) -> tuple[str | None, str]:
    """The host an event concerns (None: not in the event) and a one-line summary."""
    match msg:
        case m.DeviceState(device=d):
            gone = " removed" if msg.removed else ""
            return d.host_id, (
                f"{d.addr} {d.model or d.dev_type} link={d.link_state} "
                f"guest={d.guest_id or '-'} rev={msg.revision}{gone}"
            )
        case m.HostState(host=h):
            return h.host_id, f"{h.status} vfs={h.vf_free}/{h.vf_count} free problems={h.problems}"
        case m.LinkChanged():
            where = f" ({msg.role} {msg.pci_address})" if msg.pci_address else ""
            flaps = f" after {msg.flaps} flaps" if msg.flaps > 1 else ""
            return msg.host_id, f"{msg.ifname} {msg.state}{where}{flaps}"
        case m.Reserved():
            addrs = ", ".join(f"{a.addr} {a.model}" for a in msg.assignments)
            return msg.host_id, f"{msg.guest_id} reserved {addrs}"
        case m.Lost():
            return msg.host_id, f"{msg.guest_id} lost {len(msg.device_ids)} VF(s): {msg.reason}"
        case m.VfApplied():
            drift = f" ({', '.join(msg.drift)} put back)" if msg.drift else ""
            error = f": {msg.error}" if msg.error else ""
            vlan = f" vlan={msg.actual.vlan}" if msg.actual is not None else ""
            return msg.host_id, (
                f"VF {msg.pci_address} {msg.outcome}{drift} rev={msg.revision}{vlan}{error}"
            )
        case m.Ready():
            addrs = ", ".join(f"{a.addr} mac={a.config.mac if a.config else '-'}"
                              for a in msg.assignments)  # fmt: skip
            return msg.host_id, f"{msg.guest_id} ready {addrs}"
        case m.Confirmed() | m.Released() | m.Expired():
            verb = type(msg).__name__.lower()
            return None, f"{msg.guest_id} {verb} {len(msg.device_ids)} VF(s)"
        case m.Failed():
            return None, f"{msg.guest_id} {msg.op} failed: {msg.error.code}: {msg.error.message}"
        case m.OffloadConfigChanged(status=st):
            restart = " (restart required)" if st.restart_required else ""
            return msg.host_id, f"hw-offload {'on' if st.hw_offload else 'off'}{restart}"
        case m.OffloadChecks():
            worst = sum(f.severity in ("warning", "error") for f in msg.findings)
            return msg.host_id, f"NIC checks: {len(msg.findings)} finding(s), {worst} to act on"
        case m.Audit():
            return msg.host_id, (
                f"audit: {msg.offloaded}/{msg.flows} flows offloaded (ratio {msg.ratio:.2f}), "
                f"{msg.partial} partial, hw-offload {'on' if msg.hw_offload else 'off'}"
            )
    return getattr(msg, "host_id", None), type(msg).__name__


class Follower:
    """Decode, place on a host, filter and hand events to ``emit``."""

    def __init__(self, bus: Bus, hosts: tuple[str, ...], emit: Callable[[Event], None]) -> None:
        self.bus = bus
        self.hosts = set(hosts)
        self.emit = emit
        self.device_host: dict[str, str] = {}

    async def host_of_devices(self, ids: list[str]) -> str | None:
        for device_id in ids:
            if device_id not in self.device_host:
                with contextlib.suppress(SriovError):
                    reply = await self.bus.request(
                        s.endpoint(s.INVENTORY_DEVICES_GROUP, "get"),
                        m.DeviceGetRequest(id=device_id),
                        m.DeviceGetReply,
                    )
                    self.device_host[device_id] = reply.device.host_id
            if device_id in self.device_host:
                return self.device_host[device_id]
        return None

    async def handle(self, kind: str, subject: str, data: bytes) -> bool:
        """Emit one message if it passes the filters; True when it was emitted."""
        try:
            msg = _CODECS[kind].decode(data)
        except InvalidRequest as exc:  # includes unknown types: show, never stop following
            host, summary, typ, body = None, f"undecodable: {exc}", "?", None
        else:
            if kind == "device" and not isinstance(msg, m.DeviceState):
                return False
            if kind == "host" and not isinstance(msg, m.HostState):
                return False
            if kind == "vf" and not isinstance(msg, m.VfApplied):
                return False
            host, summary = summarize(msg)
            typ, body = str(msg.__struct_config__.tag), msgspec.to_builtins(msg)
            if isinstance(msg, m.DeviceState):
                self.device_host[msg.device.id] = msg.device.host_id
            if isinstance(msg, m.Reserved):
                for a in msg.assignments:
                    self.device_host[a.device_id] = a.host_id
            if host is None and self.hosts and hasattr(msg, "device_ids"):
                host = await self.host_of_devices(list(msg.device_ids))
        if self.hosts and host not in self.hosts:
            return False
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        self.emit(Event(now, kind, host, subject, typ, summary, body))
        return True


async def follow(
    bus: Bus,
    kinds: tuple[str, ...],
    hosts: tuple[str, ...],
    emit: Callable[[Event], None],
    *,
    count: int = 0,
    seconds: float = 0,
    ready: Callable[[], None] = lambda: None,
) -> int:
    """Follow until ``count`` events were emitted or ``seconds`` passed (0: forever)."""
    follower = Follower(bus, hosts, emit)
    queue: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue(maxsize=10_000)

    async def pump(kind: str, messages: Any) -> None:
        async for msg in messages:
            await queue.put((kind, msg.subject, msg.data))

    emitted = 0
    async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as tg:
        pumps = []
        for subject, kind in watch_subjects(kinds, hosts):
            messages = await stack.enter_async_context(bus.subscribe(subject))
            pumps.append(tg.create_task(pump(kind, messages)))
        await bus.flush()  # the server has every subscription: nothing from now is missed
        ready()
        deadline = asyncio.get_running_loop().time() + seconds if seconds else None
        try:
            while not count or emitted < count:
                left = None if deadline is None else deadline - asyncio.get_running_loop().time()
                if left is not None and left <= 0:
                    break
                try:
                    kind, subject, data = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    break
                emitted += await follower.handle(kind, subject, data)
        finally:
            for task in pumps:
                task.cancel()
    return emitted


def _line(ev: Event) -> str:
    return f"{ev.time[11:23]}  {ev.kind:<9}  {ev.host_id or '-':<36}  {ev.summary}"


@command()
@click.option("--host", "hosts", multiple=True, help="Only this host (repeatable).")
@click.option(
    "--kind", "kinds", multiple=True, type=click.Choice(KINDS),
    help="Only this kind of event (repeatable; default: all).",
)  # fmt: skip
@click.option("--count", default=0, type=click.IntRange(0), help="Stop after N events.")
@click.option("--for", "seconds", default=0.0, type=click.FloatRange(0), help="Stop after SECONDS.")
@click.pass_obj
def events(
    obj: CliContext, hosts: tuple[str, ...], kinds: tuple[str, ...], count: int, seconds: float
) -> None:
    """Follow device, link, placement, offload and host events live (Ctrl-C stops).

    One line per event: time (UTC), kind, host, what happened; with -o json (--json) one
    JSON object per line (time, kind, host_id, subject, type, summary, event), with -o yaml
    one YAML document per event.
    """
    for host in hosts:
        try:
            s.token(host, "host_id")
        except InvalidRequest as exc:
            raise click.BadParameter(str(exc), param_hint="--host") from exc
    chosen = tuple(dict.fromkeys(kinds)) or KINDS
    fmt = output_format()

    def emit(ev: Event) -> None:
        click.echo(render_item(ev, fmt, _line))
        sys.stdout.flush()

    def ready() -> None:
        where = f" on {', '.join(hosts)}" if hosts else ""
        click.echo(f"following {', '.join(chosen)} events{where}; Ctrl-C stops", err=True)

    with contextlib.suppress(KeyboardInterrupt):
        obj.run(lambda bus: follow(bus, chosen, hosts, emit, count=count, seconds=seconds,
                                   ready=ready))  # fmt: skip


COMMANDS = (events,)
