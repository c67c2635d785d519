"""The wire contract: golden payloads stay decodable, docs are fresh, examples validate.

Golden files under ``golden/`` are frozen payloads of every message type as first shipped.
They must keep decoding into today's types with the same values: a field renamed, removed or
retyped fails here. Add the file for a new type with
``python libs/common/tests/test_contract.py --add-missing``; never regenerate existing ones.
"""

from __future__ import annotations

import json
import random
import sys
import uuid
from pathlib import Path

import jsonschema
import msgspec
import pytest

from sriov.common import apidoc, catalog
from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.errors import InvalidRequest, UnknownMessageType
from sriov.common.schemas._examples import example
from sriov.common.schemas._inventory import DEVICE_ID_NAMESPACE

GOLDEN = Path(__file__).parent / "golden"
TYPES = {m.type_of(c): c for c in m.ALL_MESSAGES}


@pytest.mark.parametrize("name", sorted(TYPES))
def test_golden_payload_still_decodes_with_same_values(name: str) -> None:
    path = GOLDEN / f"{name}.json"
    assert path.exists(), f"no golden file for {name}: run {__file__} --add-missing"
    golden = json.loads(path.read_text())
    decoded = m.codec(TYPES[name]).decode(path.read_bytes())
    _same_values(name, golden, msgspec.to_builtins(decoded))


def _same_values(where: str, golden: object, again: object) -> None:
    """Every golden field keeps its value, at any depth; fields added since (with their
    defaults) may appear beside them, in nested objects too."""
    if isinstance(golden, dict) and isinstance(again, dict):
        for key, value in golden.items():
            assert key in again, f"{where}: field {key!r} disappeared"
            _same_values(f"{where}.{key}", value, again[key])
    elif isinstance(golden, list) and isinstance(again, list):
        assert len(golden) == len(again), f"{where}: changed meaning"
        for i, (g, a) in enumerate(zip(golden, again, strict=True)):
            _same_values(f"{where}[{i}]", g, a)
    else:
        assert again == golden, f"{where}: changed meaning"


@pytest.mark.parametrize("name", sorted(TYPES))
def test_round_trip_and_example_matches_json_schema(name: str) -> None:
    cls = TYPES[name]
    msg = example(cls)
    data = m.encode(msg)
    assert m.codec(cls).decode(data) == msg
    schema = json.loads((apidoc.DOCS / "schemas" / f"{name}.json").read_text())
    jsonschema.validate(json.loads(data), schema)


def test_unknown_fields_are_ignored_and_unknown_types_reported() -> None:
    hb = b'{"type":"host.heartbeat.v1","host_id":"h","generation":1,"seq":2,"interval_s":5,'
    assert m.HOST_EVENTS.decode(hb + b'"added_in_v1_7":{"x":1}}').seq == 2
    with pytest.raises(UnknownMessageType, match="unknown message type"):
        m.HOST_EVENTS.decode(b'{"type":"host.heartbeat.v2","host_id":"h"}')
    with pytest.raises(InvalidRequest, match=r"\$.seq"):
        m.HOST_EVENTS.decode(hb.replace(b'"seq":2', b'"seq":"two"') + b"}")
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        m.HOST_EVENTS.decode(b"\xff\xfe")


def test_docs_are_generated_from_current_schemas() -> None:
    stale = apidoc.stale()
    assert not stale, f"docs are stale, run `python -m sriov.common.apidoc --write`: {stale}"


def test_asyncapi_lists_every_message_subject_and_endpoint() -> None:
    doc, _ = apidoc.build()
    assert doc["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in doc["channels"].values()}
    for ch in catalog.CHANNELS:
        assert ch.template in addresses
    for ep in catalog.ENDPOINTS:
        assert ep.template in addresses
    carried = {c for ch in catalog.CHANNELS for c in ch.messages}
    carried |= {c for ep in catalog.ENDPOINTS for c in (ep.request, ep.reply)}
    assert carried | {m.ErrorReply} == set(m.ALL_MESSAGES)
    for op in doc["operations"].values():
        ref = op["channel"]["$ref"].removeprefix("#/channels/")
        assert ref in doc["channels"]


def test_every_catalog_template_maps_back_from_a_concrete_subject() -> None:
    concrete = {
        s.HOST_SNAPSHOT: s.host_snapshot("h1").subject,
        s.DEVICE_STATE: s.device_state("h1", "0000:0a:00.2").subject,
        s.PLACEMENT_EVENT: s.placement_event("g1", "reserved").subject,
    }
    for template, subject in concrete.items():
        assert s.template_of(subject).replace("reserved", "{verb}") == template


def _add_missing() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for name, cls in TYPES.items():
        path = GOLDEN / f"{name}.json"
        if not path.exists():
            path.write_text(json.dumps(msgspec.to_builtins(example(cls)), indent=2) + "\n")
            print(f"added {path}")


if __name__ == "__main__" and "--add-missing" in sys.argv:
    _add_missing()


def test_device_ids_are_the_documented_uuid5() -> None:
    """Device ids are part of the contract (clients compute and compare them): the fast path
    must give exactly ``uuid5(DEVICE_ID_NAMESPACE, "<host_id>/<pci_address>")``."""
    rng = random.Random(7)
    for i in range(5000):
        host = f"host-{rng.randrange(10**6)}" + ("-é" if i % 7 == 0 else "")
        pci = f"0000:{rng.randrange(256):02x}:{rng.randrange(32):02x}.{rng.randrange(8)}"
        want = str(uuid.uuid5(DEVICE_ID_NAMESPACE, f"{host}/{pci}"))
        assert m.device_id(host, pci) == want
    # frozen: the id of one VF as first shipped
    assert m.device_id("host-0001", "0000:3b:00.1") == str(
        uuid.uuid5(uuid.UUID("6f1c3c1e-5a0e-4c47-9a6b-4a3f1f7e2b10"), "host-0001/0000:3b:00.1")
    )
