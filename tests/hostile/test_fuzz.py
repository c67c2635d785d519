"""Fuzzing (hypothesis) the two parsers that read what others wrote: the message decoders
and host.conf.

A decoder gets arbitrary bytes, arbitrary JSON and JSON shaped like each message type with
the fields filled with anything: it returns a message of its union or raises InvalidRequest
(UnknownMessageType for an unknown tag) naming where, and nothing else ever escapes. A
decoded message encodes and decodes to itself. host.conf gets arbitrary text and YAML with
its own keys holding anything: a HostConf or a ConfigError saying ``file:line: ...``.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import msgspec
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sriov.common import schemas as m
from sriov.common.errors import ConfigError, InvalidRequest, UnknownMessageType
from sriov.hostd.hostconf import HostConf, load_host_conf

CODECS: list[m.Codec[Any]] = [
    m.HOST_EVENTS,
    m.PLACEMENT_EVENTS,
    m.PLACEMENT_REQUESTS,
    m.STATE_EVENTS,
    m.OFFLOAD_EVENTS,
    *(m.codec(cls) for cls in m.ALL_MESSAGES),
]
TAGS = [m.type_of(cls) for cls in m.ALL_MESSAGES]
FIELDS = sorted({f for cls in m.ALL_MESSAGES for f in cls.__struct_fields__} - {"type"})
HOSTILE_TEXT = [
    "'; DROP TABLE inventory.devices; --",
    "x' OR '1'='1",
    "../../../etc/passwd",
    "sriov.v1.host.*.>",
    "$(reboot)",
    "{{7*7}}",
    "\x00",
    "\u202eevil",
    "é" * 300,
    "9" * 400,
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(HOSTILE_TEXT)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
shaped = st.builds(
    lambda tag, fields: {"type": tag, **fields},
    st.sampled_from(TAGS),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8),
)
payloads = (
    st.binary(max_size=300)
    | json_values.map(msgspec.json.encode)
    | shaped.map(msgspec.json.encode)
    | st.sampled_from([b"", b"\xff\xfe{", b'{"type": "\xff"}', b"[" * 5000, b'{"type":1}'])
)


def check_decode(codec: m.Codec[Any], data: bytes) -> None:
    try:
        msg = codec.decode(data)
    except UnknownMessageType as exc:
        assert exc.details["field"] == "type"
        return
    except InvalidRequest as exc:
        assert str(exc).startswith(codec.name) and exc.details["field"]
        return
    assert codec.decode(m.encode(msg)) == msg


@settings(max_examples=400, deadline=None)
@given(data=payloads, index=st.integers(min_value=0, max_value=len(CODECS) - 1))
def test_decoders_raise_only_invalid_request(data: bytes, index: int) -> None:
    check_decode(CODECS[index], data)


@settings(max_examples=300, deadline=None)
@given(msg=shaped)
def test_decoder_of_the_tagged_type_names_the_field(msg: dict[str, Any]) -> None:
    codec = m.codec(next(c for c in m.ALL_MESSAGES if m.type_of(c) == msg["type"]))
    check_decode(codec, msgspec.json.encode(msg))


# --- host.conf -----------------------------------------------------------------------------
CONF_KEYS = sorted(HostConf.__struct_fields__)
ifnames = st.text(string.ascii_letters + string.digits + "/:. -", min_size=0, max_size=18)
conf_values = (
    json_values
    | st.lists(ifnames, max_size=4)
    | st.lists(st.builds(lambda a, b, c: f"{a}/{b}/{c}", ifnames, ifnames, ifnames), max_size=3)
    | st.dictionaries(ifnames, st.integers(-5, 10**6) | st.text(max_size=5), max_size=3)
)
conf_docs = st.dictionaries(st.sampled_from([*CONF_KEYS, "bogus_key"]), conf_values, max_size=7)
texts = st.text(max_size=300) | st.sampled_from(
    ["host_id: [", "{{{", "host_id: !!python/object:os.system x", "\t- a", "a: &x [*x]", "---\n"]
)


#: tmp_path is shared by a test's examples; each example overwrites the one file
FIXTURE_OK = [HealthCheck.function_scoped_fixture]


def check_conf(path: Path, text: str) -> None:
    path.write_text(text, errors="surrogateescape")
    try:
        conf = load_host_conf(path)
    except ConfigError as exc:
        assert str(path) in str(exc), f"error does not name the file: {exc}"
        return
    assert isinstance(conf, HostConf) and conf.host_id


@settings(max_examples=300, deadline=None, suppress_health_check=FIXTURE_OK)
@given(doc=conf_docs)
def test_host_conf_yaml_of_its_own_keys(tmp_path: Path, doc: dict[str, Any]) -> None:
    check_conf(tmp_path / "host.conf", yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=200, deadline=None, suppress_health_check=FIXTURE_OK)
@given(text=texts)
def test_host_conf_arbitrary_text(tmp_path: Path, text: str) -> None:
    check_conf(tmp_path / "host.conf", text)
