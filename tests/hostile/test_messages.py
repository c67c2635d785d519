"""Malformed and hostile messages on every subject a running service listens to.

Requests (every endpoint of inventory, scheduler, hostd and offload) get empty bodies,
garbage, invalid UTF-8, unknown types, wrong types, 2 MB payloads and injection-looking ids;
each answer must be a service error with a stable code and a short message a person can read
(or, where the hostile text is merely an unknown name, a normal "not found"/empty answer).
Events (every stream a service consumes) get the same: malformed ones land in the
dead-letter stream with the reason and original subject, unknown types are acknowledged and
dropped. Afterwards everything stored (inventory's devices and hosts, the scheduler's
reservations, the last-value state stream) is exactly as before, every consumer is drained,
every process is alive and a placement still works.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from fleet import GUIDE_VFS, Fleet
from workload import CX5, Expect, Workload, consumers_drained, converge, inventory_devices

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import HDR_ERROR, HDR_ERROR_CODE, HDR_SRIOV_CODE, STREAMS, Bus
from sriov.common.errors import BusError

pytestmark = [pytest.mark.slow, pytest.mark.netns]

HUGE = 2_000_000
EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
INJECTIONS = [
    "'; DROP TABLE inventory.devices; --",
    "x' OR '1'='1",
    "../../../etc/passwd",
    "sriov.v1.host.*.>",
    "$(reboot)",
    "{{7*7}}",
    "a\x00b",
    "\u202egnp.exe",
]
#: Codes a clear refusal may carry (never "internal").
CLEAR = {"invalid_request", "unknown_type", "not_found", "unknown_model", "no_capacity",
         "host_offline", "device_busy", "conflict"}  # fmt: skip


def examples(host_id: str) -> list[tuple[str, str, m.Message, type[m.Message]]]:
    """(service, endpoint subject, a valid request, reply type) for every endpoint."""
    inv_d, inv_h = subjects.INVENTORY_DEVICES_GROUP, subjects.INVENTORY_HOSTS_GROUP
    sch, hcmd = subjects.SCHEDULER_GROUP, subjects.hostcmd_group(host_id)
    ocmd = subjects.offloadcmd_group(host_id)
    net = m.NetRequest(desc=f"sriov-nic-model={CX5}")
    ep = subjects.endpoint
    return [
        ("inventory", ep(inv_d, "list").subject, m.DeviceListRequest(host_id=host_id),
         m.DeviceListReply),
        ("inventory", ep(inv_d, "get").subject, m.DeviceGetRequest(id="x"), m.DeviceGetReply),
        ("inventory", ep(inv_h, "list").subject, m.HostListRequest(), m.HostListReply),
        ("inventory", ep(inv_h, "get").subject, m.HostGetRequest(host_id=host_id), m.HostGetReply),
        ("scheduler", ep(sch, "place").subject,
         m.PlaceRequest(request_id="r", guest_id="g", nets=[net]), m.PlacementReply),
        ("scheduler", ep(sch, "attach").subject,
         m.AttachRequest(request_id="r", guest_id="g", net=net), m.PlacementReply),
        ("scheduler", ep(sch, "release").subject,
         m.ReleaseRequest(request_id="r", guest_id="g", device_id="d"), m.PlacementReply),
        ("scheduler", ep(sch, "confirm").subject,
         m.ConfirmRequest(request_id="r", guest_id="g"), m.PlacementReply),
        ("scheduler", ep(sch, "get").subject, m.GetRequest(guest_id="g"), m.PlacementReply),
        ("hostd", ep(hcmd, "rescan").subject, m.RescanRequest(), m.CommandAck),
        ("hostd", ep(hcmd, "set-numvfs").subject,
         m.SetNumVfsRequest(pf="eth1", num_vfs=8), m.CommandAck),
        ("hostd", ep(hcmd, "doctor").subject, m.DoctorRequest(), m.Diagnostics),
        ("offload", ep(ocmd, "get").subject, m.OffloadGetRequest(), m.OffloadStatus),
        ("offload", ep(ocmd, "set").subject,
         m.OffloadSetRequest(hw_offload=False, tc_policy="skip_sw"), m.OffloadStatus),
        ("offload", ep(ocmd, "audit").subject, m.AuditRequest(top=3), m.Audit),
    ]  # fmt: skip


def _replace_strings(value: Any, text: str) -> Any:
    """Every string (but the type tag) of a message's JSON replaced by ``text``."""
    if isinstance(value, dict):
        return {k: (v if k == "type" else _replace_strings(v, text)) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(v, text) for v in value]
    return text if isinstance(value, str) else value


def hostile(msg: m.Message) -> Iterator[tuple[str, bytes]]:
    """(what, payload) of every kind of bad input, built from a valid ``msg``."""
    body: dict[str, Any] = msgspec.to_builtins(msg)
    tag = body["type"]
    fields = [k for k in body if k != "type"]
    yield "empty", b""
    yield "not json", b"\x00\x01 not json at all"
    yield "json array", b"[1, 2, 3]"
    yield "invalid UTF-8 in type", b'{"type": "\xff\xfe"}'
    yield "unknown type", msgspec.json.encode({**body, "type": "sriov.evil.v9"})
    yield "no type", msgspec.json.encode({k: v for k, v in body.items() if k != "type"})
    nested = b"[" * 100_000 + b"]" * 100_000
    yield "deep nesting", b'{"type": "' + tag.encode() + b'", "x": ' + nested + b"}"
    if fields:
        raw = msgspec.json.encode({**body, fields[0]: "PLACEHOLDER"})
        yield "invalid UTF-8 in a field", raw.replace(b"PLACEHOLDER", b"\xc3\x28\xa0\xa1")
        yield "wrong types", msgspec.json.encode({**body, **{k: {"evil": [1]} for k in fields}})
        each = HUGE // len(fields)  # 2 MB in all (the server takes up to 8 MB)
        yield "huge", msgspec.json.encode({**body, **{k: "A" * each for k in fields}})
    else:
        yield "huge", msgspec.json.encode({**body, "padding": "A" * HUGE})
    strings = _replace_strings(body, "PLACEHOLDER")
    if strings != body:
        for text in INJECTIONS:
            yield f"injection {text!r}", msgspec.json.encode(_replace_strings(body, text))


def assert_clear(what: str, subject: str, headers: dict[str, str] | None, data: bytes,
                 reply: type[m.Message]) -> str:  # fmt: skip
    """A service error with a known code and a short readable message, or a valid reply."""
    where = f"{subject} ({what})"
    if not headers or HDR_ERROR_CODE not in headers:
        m.codec(reply).decode(data)
        return "answered"
    code, message = headers.get(HDR_SRIOV_CODE, ""), headers.get(HDR_ERROR, "")
    assert code in CLEAR, f"{where}: code {code!r}: {message}"
    assert message and len(message) <= 1000, f"{where}: message {message[:200]!r}"
    assert "Traceback" not in message and "object at 0x" not in message, f"{where}: {message}"
    body = m.codec(m.ErrorReply).decode(data)
    assert body.code == code, f"{where}: body {data[:300]!r}"
    return code


async def stored(client: Bus, fleet: Fleet, guest: str) -> tuple[Any, ...]:
    """Everything a hostile message could corrupt, as comparable values."""
    devices = sorted(
        msgspec.json.encode(msgspec.structs.replace(d, updated_at=EPOCH))
        for d in await inventory_devices(client, fleet.host_id)
    )
    hosts = await client.request(
        subjects.endpoint(subjects.INVENTORY_HOSTS_GROUP, "list"),
        m.HostListRequest(), m.HostListReply,
    )  # fmt: skip
    host_rows = sorted((h.host_id, h.status, h.hostname) for h in hosts.hosts)
    held = await client.request(
        subjects.endpoint(subjects.SCHEDULER_GROUP, "get"), m.GetRequest(guest_id=guest),
        m.PlacementReply,
    )  # fmt: skip
    # the host's last values (the hostile ones sit on subjects of their own)
    state: dict[str, Any] = {}
    host = fleet.host_id
    for flt in (subjects.device_state_of_host(host), subjects.host_state(host).subject):
        async for subject, data in client.last_values(subjects.STREAM_STATE, flt):
            ev = m.STATE_EVENTS.decode(data)  # revisions move on with valid traffic
            if isinstance(ev, m.DeviceState):
                state[subject] = (m.encode(msgspec.structs.replace(ev.device, updated_at=EPOCH)),
                                  ev.removed)  # fmt: skip
            else:
                state[subject] = (ev.host.host_id, ev.host.status)
    return devices, host_rows, sorted(a.device_id for a in held.assignments), state


@pytest.fixture
async def baseline(fleet: Fleet, client: Bus) -> tuple[Workload, str, tuple[Any, ...]]:
    """The system ready, one guest holding a VF, and a snapshot of what is stored."""
    await converge(
        client, Expect(fleet.host_id, GUIDE_VFS, {}), time.monotonic(), 120, fleet.obituaries
    )
    wl = Workload(client, fleet.host_id)
    guest = f"keeper-{uuid.uuid4().hex[:6]}"
    devs = await wl.place(guest, CX5)
    await converge(
        client, Expect(fleet.host_id, GUIDE_VFS, {guest: set(devs)}), time.monotonic(), 60
    )
    return wl, guest, await stored(client, fleet, guest)


async def still_sound(
    fleet: Fleet, client: Bus, wl: Workload, guest: str, before: tuple[Any, ...], dl: int
) -> None:
    """Nothing stored changed, every process lives, and a placement round trip works."""
    holdings = {guest: set(wl.guests[guest])}
    await converge(
        client, Expect(fleet.host_id, GUIDE_VFS, holdings, dead_letters=dl), time.monotonic(), 60
    )
    assert await stored(client, fleet, guest) == before
    assert fleet.dead() == [], f"processes died: {fleet.dead()}"
    probe = f"probe-{uuid.uuid4().hex[:6]}"
    await wl.place(probe, CX5)
    await wl.release(probe)
    await wl.release(guest)


async def test_hostile_requests_get_clear_errors(
    fleet: Fleet, client: Bus, baseline: tuple[Workload, str, tuple[Any, ...]]
) -> None:
    wl, guest, before = baseline
    outcomes: dict[str, int] = {}
    for service, subject, msg, reply in examples(fleet.host_id):
        for what, payload in hostile(msg):
            resp = await client.request_raw(subject, payload, timeout=15)
            outcome = assert_clear(what, subject, resp.headers, resp.data, reply)
            outcomes[f"{service}:{outcome}"] = outcomes.get(f"{service}:{outcome}", 0) + 1
    print(f"\nhostile requests: {outcomes}")
    # a request without its type tag is still a valid request of its endpoint's one type:
    # the place example without "type" did reserve a VF for guest "g"; give it back
    await wl.call("release", m.ReleaseRequest(request_id="cleanup", guest_id="g"))
    await still_sound(fleet, client, wl, guest, before, dl=0)


def stream_targets(host_id: str) -> list[tuple[str, str, m.Message]]:
    """(consumer, subject, a valid message) for every stream a service consumes."""
    hostile_host = "hostile-host"
    vf = m.VF(pci_address="0000:ff:1f.7", pf_pci_address="0000:ff:00.0", vf_index=0)
    dev = m.Device(
        id=m.device_id(hostile_host, vf.pci_address), host_id=hostile_host,
        pci_address=vf.pci_address, addr=m.short_addr(vf.pci_address),
    )  # fmt: skip
    net = m.NetRequest(desc=f"sriov-nic-model={CX5}")
    return [
        ("inventory-host-events", subjects.host_vf(hostile_host, "discovered").subject,
         m.VfDiscovered(host_id=hostile_host, generation=1, seq=1, vf=vf)),
        ("inventory-host-events", subjects.host_snapshot(hostile_host).subject,
         m.HostSnapshot(host_id=hostile_host, generation=1, seq=2, hostname="h", pfs=[], vfs=[vf])),
        ("inventory-placement", subjects.placement_event("hostile-guest", "reserved").subject,
         m.Released(request_id="r", guest_id="hostile-guest", device_ids=[dev.id])),
        ("scheduler-state", subjects.device_state(hostile_host, vf.pci_address).subject,
         m.DeviceState(device=dev, revision=1)),
        ("scheduler-requests", subjects.placement_request("hostile-guest", "place").subject,
         m.PlaceRequest(request_id="r", guest_id="hostile-guest", nets=[net], host_id=host_id)),
    ]  # fmt: skip


async def dead_lettered(client: Bus) -> dict[str, dict[str, str]]:
    """ce-id -> headers of every dead-lettered message."""
    out: dict[str, dict[str, str]] = {}
    async for dead in client.history(subjects.STREAM_DEAD_LETTER):
        out[dead.headers.get("ce-id", f"seq-{dead.seq}")] = dead.headers
    return out


async def test_hostile_events_are_dead_lettered_or_dropped(
    fleet: Fleet, client: Bus, baseline: tuple[Workload, str, tuple[Any, ...]]
) -> None:
    wl, guest, before = baseline
    dl_before = len(await dead_lettered(client))
    stream_of = {
        "inventory-host-events": subjects.STREAM_HOST_EVENTS,
        "inventory-placement": subjects.STREAM_PLACEMENT,
        "scheduler-state": subjects.STREAM_STATE,
        "scheduler-requests": subjects.STREAM_PLACEMENT_REQUESTS,
    }
    sent: dict[str, tuple[str, str, str]] = {}
    for consumer, target, msg in stream_targets(fleet.host_id):
        for i, (what, payload) in enumerate(hostile(msg)):
            subject = target
            if consumer == "scheduler-state":  # last value per subject: one subject each
                subject = subjects.device_state("hostile-host", f"0000:fe:{i:02x}.0").subject
            if len(payload) > HUGE // 2 and "huge" not in what:
                continue
            ce_id = uuid.uuid4().hex
            limit = next(st.max_msg_size for st in STREAMS if st.name == stream_of[consumer])
            if len(payload) > limit:  # the stream refuses it: it never reaches a consumer
                with pytest.raises(BusError, match="exceeds maximum allowed"):
                    await client.js_publish_raw(subject, payload, {"ce-id": ce_id}, timeout=10)
                continue
            await client.js_publish_raw(
                subject, payload, {"ce-id": ce_id, "Nats-Msg-Id": ce_id}, timeout=10
            )
            sent[ce_id] = (consumer, subject, what)
    # well-formed but forged: another host's snapshot (no VFs) on a hostile host's subject,
    # and a request naming another guest than its subject; both refused, nothing changes
    forged = [
        ("inventory-host-events", subjects.host_snapshot("hostile-host").subject,
         m.HostSnapshot(host_id=fleet.host_id, generation=99, seq=1, hostname="x", pfs=[],
                        vfs=[])),
        ("scheduler-requests", subjects.placement_request("hostile-guest", "release").subject,
         m.ReleaseRequest(request_id="forged", guest_id=guest)),
    ]  # fmt: skip
    for consumer, subject, msg in forged:
        ce_id = uuid.uuid4().hex
        await client.js_publish_raw(subject, m.encode(msg), {"ce-id": ce_id}, timeout=10)
        sent[ce_id] = (consumer, subject, f"forged {m.type_of(type(msg))}")
    async with asyncio.timeout(60):  # every consumer works through all of it
        while await consumers_drained(client) is not None:
            await asyncio.sleep(0.25)
    dls = await dead_lettered(client)
    kinds: dict[str, str] = {}
    for ce_id, (consumer, subject, what) in sent.items():
        headers = dls.get(ce_id)
        if headers is None:
            kinds[f"{consumer}: {what}"] = "acked"
            continue
        assert headers["Sriov-Original-Subject"] == subject
        assert headers["Sriov-Consumer"].startswith(consumer), headers
        reason = headers["Sriov-Dead-Letter-Reason"]
        assert reason.startswith(("malformed:", "rejected:")) and len(reason) <= 1000, (
            consumer,
            what,
            reason,
        )
        kinds[f"{consumer}: {what}"] = reason.split(":", 1)[0]
    for key, kind in sorted(kinds.items()):
        print(f"{key}: {kind}")
    for key, kind in kinds.items():
        if any(w in key for w in ("empty", "not json", "invalid UTF-8", "wrong types", "huge",
                                   "json array", "no type", "deep nesting")):  # fmt: skip
            assert kind in ("malformed", "rejected"), f"{key} was {kind}, not dead-lettered"
        if "forged" in key:
            assert kind == "rejected", f"{key} was {kind}, expected refused and dead-lettered"
        if "unknown type" in key:
            assert kind == "acked", f"{key} was {kind}: unknown types are acked and dropped"
    await still_sound(fleet, client, wl, guest, before, dl=len(dls))
    assert len(dls) >= dl_before
