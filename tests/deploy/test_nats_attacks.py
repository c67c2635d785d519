"""Issue 17's attacks, run against a real nats-server built from the generated config.

Each row is one identity trying one thing it does not own: the server must refuse it (the
request gets no answer and the server reports a permissions violation) and nothing stored
may change. The allowed rows beside them keep least privilege from breaking the system.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from sriov.cli import nats_auth as na
from sriov.common import runtime
from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus, ConsumerSpec
from sriov.common.errors import BusError, BusTimeout

A, B = "node-a", "node-b"
HOST_A = na.host_identity(A).user
READERS = ("sriov-operator", "client-cloud")
EVERYONE = (HOST_A, "sriov-inventory", "sriov-scheduler", *READERS)


@pytest.fixture
def sn(secured_nats: Any, caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.WARNING, logger="sriov.common.bus")
    return secured_nats


async def provisioned(sn: Any) -> Bus:
    admin = await sn.connect("sriov-stream-admin")
    await admin.ensure_streams()
    return admin


async def snapshot(bus: Bus) -> dict[str, Any]:
    """What is stored: every stream's configuration and state, every consumer's config."""
    out: dict[str, Any] = {}
    for name in (x.name for x in na.STREAMS):
        raw = await bus.request_raw(s.js_api("STREAM", "INFO", name), b"")
        info = json.loads(raw.data)
        out[name] = (info["config"], info["state"]["messages"], info["state"]["bytes"])
        raw = await bus.request_raw(s.js_api("CONSUMER", "LIST", name), b"")
        out[name + "/consumers"] = sorted(
            json.dumps(c["config"], sort_keys=True) for c in json.loads(raw.data)["consumers"]
        )
    return out


async def denied(bus: Bus, subject: str, body: dict[str, Any] | None = None) -> None:
    with pytest.raises(BusTimeout):
        await bus.request_raw(subject, json.dumps(body or {}).encode(), timeout=0.5)


def _state_cfg(**changes: Any) -> dict[str, Any]:
    return {"name": s.STREAM_STATE, "subjects": [s.DEVICE_STATE_ALL], "storage": "file",
            "max_msgs": 1, **changes}  # fmt: skip


STREAM_ATTACKS = [
    ("update", s.js_api("STREAM", "UPDATE", s.STREAM_STATE), _state_cfg()),
    ("seal", s.js_api("STREAM", "UPDATE", s.STREAM_DEAD_LETTER), {"sealed": True}),
    ("create", s.js_api("STREAM", "CREATE", "EVIL"), {"name": "EVIL", "subjects": ["x.>"]}),
    ("delete", s.js_api("STREAM", "DELETE", s.STREAM_HOST_EVENTS), {}),
    ("purge", s.js_api("STREAM", "PURGE", s.STREAM_HOST_EVENTS), {}),
    ("steal", s.js_api("CONSUMER", "MSG", "NEXT", s.STREAM_HOST_EVENTS, "inventory-host-events"),
     {"batch": 1}),
    ("redefine", s.js_api("CONSUMER", "CREATE", s.STREAM_HOST_EVENTS, "inventory-host-events",
                          "nothing.matches"),
     {"stream_name": s.STREAM_HOST_EVENTS,
      "config": {"name": "inventory-host-events", "durable_name": "inventory-host-events",
                 "filter_subject": "nothing.matches", "ack_policy": "explicit"}}),
    ("precreate", s.js_api("CONSUMER", "DURABLE", "CREATE", s.STREAM_PLACEMENT_REQUESTS,
                           "scheduler-requests"),
     {"stream_name": s.STREAM_PLACEMENT_REQUESTS,
      "config": {"durable_name": "scheduler-requests", "deliver_policy": "new",
                 "ack_policy": "explicit"}}),
    ("delete-durable", s.js_api("CONSUMER", "DELETE", s.STREAM_HOST_EVENTS,
                                "inventory-host-events"), {}),
    ("read-b-desired", s.js_api("CONSUMER", "CREATE", s.STREAM_DESIRED, "hostd-desired-node-b",
                                s.desired_of_host(B)),
     {"stream_name": s.STREAM_DESIRED,
      "config": {"name": "hostd-desired-node-b", "durable_name": "hostd-desired-node-b",
                 "filter_subject": s.desired_of_host(B), "ack_policy": "explicit"}}),
]  # fmt: skip


OWNERS = {"steal": "sriov-inventory", "redefine": "sriov-inventory",
          "precreate": "sriov-scheduler"}  # fmt: skip


ROWS = [
    pytest.param(user, *attack, id=f"{attack[0]}-{user}")
    for attack in STREAM_ATTACKS
    for user in EVERYONE
    if OWNERS.get(attack[0]) != user  # the owner's allowed row: test_nats_permissions
]


@pytest.mark.parametrize(("user", "attack", "subject", "body"), ROWS)
async def test_no_running_identity_changes_a_stream_or_someone_elses_durable(
    sn: Any, user: str, attack: str, subject: str, body: dict[str, Any]
) -> None:
    admin = await provisioned(sn)
    inventory = await sn.connect("sriov-inventory")
    ops = await sn.connect("sriov-operator")  # reads what is stored; changes nothing
    attacker = await sn.connect(user)
    try:
        spec = ConsumerSpec(s.STREAM_HOST_EVENTS, "inventory-host-events", [s.HOST_EVENTS_ALL])
        await inventory.js_publish_raw(s.host_state(A).subject, b"{}", {})
        stop = asyncio.Event()
        stop.set()
        await inventory.consume(spec, m.HOST_EVENTS, _never, stop=stop)  # creates its durable
        before = await snapshot(ops)
        await denied(attacker, subject, body)
        assert await snapshot(ops) == before, f"{user} changed what is stored by {attack}"
    finally:
        for bus in (attacker, ops, inventory, admin):
            await bus.close()


async def _never(*_a: Any) -> None:
    raise AssertionError("no message expected")


async def test_host_publishes_only_exact_verbs_and_small_messages(
    sn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    admin = await provisioned(sn)
    host = await sn.connect(HOST_A)
    ops = await sn.connect("sriov-operator")
    try:
        before = await snapshot(ops)
        with pytest.raises(BusTimeout):
            await host.js_publish_raw(f"sriov.v1.host.{A}.link.anything-goes", b"{}", {}, 0.5)
        assert await host.js_publish_raw(s.host_link(A, True).subject, b"{}", {})
        after = await snapshot(ops)
        assert after[s.STREAM_HOST_EVENTS][1] == before[s.STREAM_HOST_EVENTS][1] + 1
        with pytest.raises((BusError, BusTimeout)):  # over the account's max_payload
            await host.js_publish_raw(s.host_heartbeat(A).subject, b"x" * (2 << 20), {}, 0.5)
    finally:
        await host.close()
        await ops.close()
        await admin.close()


async def test_a_sealed_or_changed_stream_stops_a_service_with_a_clear_error(sn: Any) -> None:
    admin = await provisioned(sn)
    inventory = await sn.connect("sriov-inventory")
    try:
        raw = await admin.request_raw(s.js_api("STREAM", "INFO", s.STREAM_DEAD_LETTER), b"")
        cfg = json.loads(raw.data)["config"] | {"sealed": True}
        await admin.request_raw(s.js_api("STREAM", "UPDATE", s.STREAM_DEAD_LETTER),
                                json.dumps(cfg).encode())  # fmt: skip
        with pytest.raises(BusError, match=f"stream {s.STREAM_DEAD_LETTER} differs.*sealed"):
            await inventory.verify_streams(runtime.streams_to_verify("sriov-inventory"))
        sealed = f"refused to provision stream {s.STREAM_DEAD_LETTER}.*10052"
        with pytest.raises(BusError, match=sealed):
            await admin.ensure_streams()  # a BusError, never an uncaught ServerError
    finally:
        await inventory.close()
        await admin.close()


async def test_a_redefined_durable_is_named_not_bound(sn: Any) -> None:
    admin = await provisioned(sn)
    scheduler = await sn.connect("sriov-scheduler")
    try:
        spec = ConsumerSpec(s.STREAM_PLACEMENT_REQUESTS, "scheduler-requests",
                            [s.PLACEMENT_REQUESTS_ALL])  # fmt: skip
        stop = asyncio.Event()
        stop.set()
        await scheduler.consume(spec, m.HOST_EVENTS, _never, stop=stop)
        spec.deliver_all = False  # what a pre-created durable with another policy looks like
        differs = r"scheduler-requests.*deliver_policy is 'all', expected 'new'"
        with pytest.raises(BusError, match=differs):
            await scheduler.consume(spec, m.HOST_EVENTS, _never, stop=stop)
    finally:
        await scheduler.close()
        await admin.close()


# ---------------------------------------------------------------------------------------------
# The provisioning identity (stream-admin): it shapes streams, it never touches messages
# ---------------------------------------------------------------------------------------------
ADMIN = "sriov-stream-admin"
ADMIN_DENIED = [
    *(a for a in STREAM_ATTACKS if a[0] not in ("update", "seal", "delete-durable")),
    ("read-msg", s.js_api("STREAM", "MSG", "GET", s.STREAM_HOST_EVENTS), {"seq": 1}),
    ("read-direct", s.js_api("DIRECT", "GET", s.STREAM_HOST_EVENTS), {"seq": 1}),
    ("read-ephemeral", s.js_api("CONSUMER", "CREATE", s.STREAM_HOST_EVENTS),
     {"stream_name": s.STREAM_HOST_EVENTS,
      "config": {"deliver_policy": "all", "ack_policy": "none"}}),
    ("publish-event", s.host_link(A, True).subject, {}),
    ("publish-request", s.placement_request("vm-1", "place").subject, {}),
]  # fmt: skip


@pytest.mark.parametrize(("attack", "subject", "body"), [
    pytest.param(*a, id=a[0]) for a in ADMIN_DENIED
])  # fmt: skip
async def test_stream_admin_reads_no_message_and_takes_no_durable(
    sn: Any, attack: str, subject: str, body: dict[str, Any]
) -> None:
    admin = await provisioned(sn)
    inventory = await sn.connect("sriov-inventory")
    ops = await sn.connect("sriov-operator")
    try:
        spec = ConsumerSpec(s.STREAM_HOST_EVENTS, "inventory-host-events", [s.HOST_EVENTS_ALL])
        await inventory.js_publish_raw(s.host_state(A).subject, b"{}", {})
        stop = asyncio.Event()
        stop.set()
        await inventory.consume(spec, m.HOST_EVENTS, _never, stop=stop)
        before = await snapshot(ops)
        await denied(admin, subject, body)
        assert await snapshot(ops) == before, f"the stream admin changed what is stored: {attack}"
    finally:
        for bus in (ops, inventory, admin):
            await bus.close()


async def test_stream_admin_subscribes_to_no_event(sn: Any) -> None:
    admin = await provisioned(sn)
    host = await sn.connect(HOST_A)
    try:
        async with admin.subscribe(s.HOST_EVENTS_ALL) as messages:
            await host.js_publish_raw(s.host_link(A, True).subject, b"{}", {})
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await anext(messages)
    finally:
        await host.close()
        await admin.close()


async def test_stream_admin_updates_streams_and_removes_a_tampered_durable(sn: Any) -> None:
    """What it is for: re-provisioning repairs a lowered limit, and a durable someone redefined
    is deleted so that its owner creates it again as the catalogue says."""
    admin = await provisioned(sn)
    inventory = await sn.connect("sriov-inventory")
    try:
        update = s.js_api("STREAM", "UPDATE", s.STREAM_PLACEMENT)
        raw = await admin.request_raw(s.js_api("STREAM", "INFO", s.STREAM_PLACEMENT), b"")
        cfg = json.loads(raw.data)["config"] | {"max_msgs_per_subject": 1}
        reply = json.loads((await admin.request_raw(update, json.dumps(cfg).encode())).data)
        assert "error" not in reply, reply  # allowed: it is the one that changes streams
        with pytest.raises(BusError, match="max_msgs_per_subject is 1, expected 64"):
            await inventory.verify_streams(runtime.streams_to_verify("sriov-inventory"))
        await admin.ensure_streams()
        await inventory.verify_streams(runtime.streams_to_verify("sriov-inventory"))

        spec = ConsumerSpec(s.STREAM_HOST_EVENTS, "inventory-host-events", [s.HOST_EVENTS_ALL])
        stop = asyncio.Event()
        stop.set()
        await inventory.consume(spec, m.HOST_EVENTS, _never, stop=stop)
        spec.deliver_all = False  # as if someone had redefined it
        with pytest.raises(BusError, match="inventory-host-events"):
            await inventory.consume(spec, m.HOST_EVENTS, _never, stop=stop)
        gone = s.js_api("CONSUMER", "DELETE", s.STREAM_HOST_EVENTS, "inventory-host-events")
        assert json.loads((await admin.request_raw(gone, b"")).data)["success"] is True
        await inventory.consume(spec, m.HOST_EVENTS, _never, stop=stop)  # created again
        info = s.js_api("CONSUMER", "INFO", s.STREAM_HOST_EVENTS, "inventory-host-events")
        config = json.loads((await admin.request_raw(info, b"")).data)["config"]
        assert config["deliver_policy"] == "new"
    finally:
        await inventory.close()
        await admin.close()
