"""Generate the API description other systems integrate from, out of the schemas.

``docs/asyncapi.yaml`` (AsyncAPI 3.0: every subject and endpoint, who publishes and who
subscribes, payloads with examples, the headers each message really carries) and
``docs/schemas/<type>.json`` (one JSON Schema per message type, with the limits the services
enforce). ``python -m sriov.common.apidoc --write`` regenerates them; a test fails when the
checked-in files are stale, and another validates them with the official AsyncAPI parser.
One module of ~400 lines: channels, messages, header schemas and examples are built from
each other and read best together.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import msgspec
import yaml

from sriov.common import catalog, schemas
from sriov.common import subjects as subj
from sriov.common.bus import headers as hdr
from sriov.common.errors import ERRORS_BY_CODE
from sriov.common.runtime import VERSION
from sriov.common.schemas._examples import example

DOCS = Path(__file__).resolve().parents[5] / "docs"
REF = "#/components/schemas/{name}"


def _channel_id(template: str) -> str:
    parts = template.split(".")[2:]  # drop "sriov.v1"
    return ".".join(p for p in parts if not p.startswith("{")) or template


def _params(template: str) -> dict[str, Any]:
    names = re.findall(r"\{(\w+)\}", template)
    return {n: _PARAM_DOC.get(n, {"description": n}) for n in names}


_PARAM_DOC: dict[str, dict[str, Any]] = {
    "host_id": {"description": "Host id from host.conf (subject-safe token)."},
    "guest_id": {"description": "Guest (server) id (subject-safe token)."},
    "pci": {"description": "PCI address escaped for a subject: 0000:0a:01.1 -> 0000-0a-01-1."},
    "state": {"description": "The link's new state.", "enum": ["up", "down"]},
    "verb": {
        "description": "What happened to the guest's reservation.",
        "enum": ["reserved", "ready", "confirmed", "released", "expired", "lost", "failed"],
    },
    "op": {
        "description": "The request's operation.",
        "enum": ["place", "attach", "release", "confirm"],
    },
    "consumer": {"description": "Durable consumer that gave up on the message."},
}

# What a message is to the one who sends it decides the headers it carries.
EVENT, REQUEST, REPLY, ERROR = "EventHeaders", "RequestHeaders", "ReplyHeaders", "ErrorHeaders"


def _roles() -> dict[type[schemas.Message], list[str]]:
    """Each message type's roles, in catalogue order: published as an event (CloudEvents
    headers), sent as a request (trace context only), returned as a reply (none)."""
    roles: dict[type[schemas.Message], list[str]] = {}

    def add(cls: type[schemas.Message], role: str) -> None:
        if role not in roles.setdefault(cls, []):
            roles[cls].append(role)

    for ch in catalog.CHANNELS:
        for cls in ch.messages:
            add(cls, REQUEST if ch.template == subj.PLACEMENT_REQUEST else EVENT)
    for ep in catalog.ENDPOINTS:
        add(ep.request, REQUEST)
        add(ep.reply, REPLY)
    add(schemas.ErrorReply, ERROR)
    return roles


def _message_id(cls: type[schemas.Message], role: str, roles: list[str]) -> str:
    """A type's component name; a second role (Diagnostics as the doctor's reply) gets a
    suffix, since each AsyncAPI message has one headers schema."""
    return cls.__name__ if role == roles[0] else f"{cls.__name__}.{role.removesuffix('Headers')}"


def _ref(
    cls: type[schemas.Message], role: str, roles: dict[type[schemas.Message], list[str]]
) -> dict[str, str]:
    return {"$ref": f"#/components/messages/{_message_id(cls, role, roles[cls])}"}


def build() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The AsyncAPI document and the per-type JSON Schemas."""
    types = list(schemas.ALL_MESSAGES)
    (_, components) = msgspec.json.schema_components(types, ref_template=REF)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    roles = _roles()

    for ch in catalog.CHANNELS:
        cid = _channel_id(ch.template)
        role = REQUEST if ch.template == subj.PLACEMENT_REQUEST else EVENT
        channels[cid] = {
            "address": ch.template,
            "description": ch.description
            + (f" JetStream stream {ch.stream}." if ch.stream else ""),
            "messages": {_message_id(c, role, roles[c]): _ref(c, role, roles) for c in ch.messages},
            **({"parameters": _params(ch.template)} if _params(ch.template) else {}),
        }
        for pub in ch.publishers:
            operations[f"{_slug(pub)}.send.{cid}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{_esc(cid)}"},
                "summary": f"{pub} publishes",
            }
        for sub in ch.subscribers:
            operations[f"{_slug(sub)}.receive.{cid}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{_esc(cid)}"},
                "summary": f"{sub} subscribes",
            }

    for ep in catalog.ENDPOINTS:
        cid = _channel_id(ep.template)
        reply_id = cid + ".reply"
        channels[cid] = {
            "address": ep.template,
            "description": f"Request/reply endpoint of {ep.service} (nats.micro, endpoint "
            f"`{subj.endpoint_name(ep.template)}`, queue group `sriov-{ep.service}`). "
            + ep.description,
            "messages": {ep.request.__name__: _ref(ep.request, REQUEST, roles)},
            **({"parameters": _params(ep.template)} if _params(ep.template) else {}),
        }
        channels[reply_id] = {
            "address": None,
            "description": "Reply inbox of the requester: the reply, or an ErrorReply whose "
            "headers are Nats-Service-Error (the message text), Nats-Service-Error-Code (an "
            "HTTP-like number) and Sriov-Error-Code (the stable code, also in the body).",
            "messages": {
                _message_id(ep.reply, REPLY, roles[ep.reply]): _ref(ep.reply, REPLY, roles),
                "ErrorReply": _ref(schemas.ErrorReply, ERROR, roles),
            },
        }
        operations[f"{_slug(ep.service)}.serve.{cid}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{_esc(cid)}"},
            "summary": f"{ep.service} answers; callers: {', '.join(ep.callers)}",
            "reply": {"channel": {"$ref": f"#/channels/{_esc(reply_id)}"}},
        }

    dl = catalog.DEAD_LETTER
    dl_id = _channel_id(dl.template)
    channels[dl_id] = {
        "address": dl.template,
        "description": f"{dl.description} JetStream stream {dl.stream}.",
        "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
        "parameters": _params(dl.template),
    }
    for pub in dl.publishers:
        operations[f"{_slug(pub)}.send.{dl_id}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{_esc(dl_id)}"},
            "summary": f"{pub} dead-letters what it gave up on",
        }
    operations[f"operators.receive.{dl_id}"] = {
        "action": "receive",
        "channel": {"$ref": f"#/channels/{_esc(dl_id)}"},
        "summary": "operators read (nats stream view SRIOV_DEAD_LETTER)",
    }

    messages: dict[str, Any] = {}
    for cls in types:
        for role in roles[cls]:
            messages[_message_id(cls, role, roles[cls])] = {
                "name": schemas.type_of(cls),
                "title": cls.__name__,
                "summary": (cls.__doc__ or "").strip().split("\n")[0],
                "contentType": "application/json",
                "headers": {"$ref": f"#/components/schemas/{role}"},
                "payload": {"$ref": REF.format(name=cls.__name__)},
                "examples": [{"headers": _example_headers(cls, role), "payload": _example(cls)}],
            }
    messages["DeadLetter"] = _DEAD_LETTER
    components.update(_header_schemas())
    doc = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "SR-IOV control plane",
            "version": VERSION,
            "description": "Events, commands and queries between hostd, inventory, scheduler "
            "and offload over NATS. Payloads are JSON tagged by `type`; unknown fields are "
            "ignored, unknown types are logged and acknowledged.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "fleet": {
                "host": "nats:4222",
                "protocol": "nats",
                "description": "Your NATS cluster (JetStream enabled).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": components},
    }
    per_type = {schemas.type_of(cls): msgspec.json.schema(cls) for cls in types}
    return doc, per_type


def _example(cls: type[schemas.Message]) -> Any:
    return msgspec.to_builtins(example(cls))


_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
_CE = {
    "ce-specversion": {"type": "string", "const": "1.0"},
    "ce-id": {"type": "string", "description": "Event id; also Nats-Msg-Id for dedupe."},
    "ce-source": {"type": "string", "examples": ["sriov/hostd/host-a-1234"]},
    "ce-type": {"type": "string", "description": "Same as the payload's type field."},
    "ce-time": {
        "type": "string",
        "format": "date-time",
        "description": "When the event was made or committed: RFC 3339, UTC, with Z.",
    },
}
_TRACE = {
    "traceparent": {"type": "string", "description": "W3C trace context (OpenTelemetry)."},
    "tracestate": {"type": "string"},
}
_JSON = {"content-type": {"type": "string", "const": "application/json"}}


def _header_schemas() -> dict[str, Any]:
    """One headers schema per role, as the bus sets them (``bus/headers.py``, ``service.py``,
    ``consumer.py``): what a client must send and may expect."""
    return {
        EVENT: {
            "type": "object",
            "description": "Events: CloudEvents NATS binding, W3C trace context, and "
            "Nats-Msg-Id = ce-id so JetStream drops a duplicate.",
            "properties": {**_CE, hdr.HDR_MSG_ID: {"type": "string"}, **_TRACE, **_JSON},
            "required": [*_CE, hdr.HDR_MSG_ID],
        },
        REQUEST: {
            "type": "object",
            "description": "Requests carry no CloudEvents headers: trace context when the "
            "caller traces, and on the JetStream request channel an optional Nats-Msg-Id "
            "(JetStream drops a duplicate; the request_id makes a retry safe either way).",
            "properties": {**_TRACE, **_JSON, hdr.HDR_MSG_ID: {"type": "string"}},
        },
        REPLY: {
            "type": "object",
            "description": "Replies carry no CloudEvents or error headers.",
            "properties": {**_JSON},
        },
        ERROR: {
            "type": "object",
            "description": "A refused or failed request (the nats.micro service-error "
            "convention, plus our stable code).",
            "properties": {
                hdr.HDR_ERROR: {
                    "type": "string",
                    "maxLength": 1000,
                    "description": "The error's message, for a person (one line).",
                },
                hdr.HDR_ERROR_CODE: {
                    "type": "string",
                    "pattern": "^[1-5][0-9]{2}$",
                    "description": "HTTP-like status: 400 bad request, 404 not found, 409 "
                    "conflict, 500 internal, 503 unavailable, 504 timeout.",
                },
                hdr.HDR_SRIOV_CODE: {
                    "type": "string",
                    "enum": sorted(ERRORS_BY_CODE),
                    "description": "The stable code a program matches on (also the body's "
                    "code).",
                },
                **_JSON,
            },
            "required": [hdr.HDR_ERROR, hdr.HDR_ERROR_CODE, hdr.HDR_SRIOV_CODE],
        },
        "DeadLetterHeaders": {
            "type": "object",
            "description": "Why a durable consumer gave up, plus the original message's "
            "CloudEvents headers and traceparent when it had them.",
            "properties": {
                hdr.HDR_DL_REASON: {
                    "type": "string",
                    "maxLength": 1000,
                    "description": "'malformed: ...', 'rejected: ...' or 'failed Nx: ...'.",
                },
                hdr.HDR_DL_SUBJECT: {"type": "string", "description": "Where it was sent."},
                hdr.HDR_DL_CONSUMER: {"type": "string", "description": "The durable's name."},
                hdr.HDR_DL_DELIVERED: {
                    "type": "string",
                    "pattern": "^[0-9]+$",
                    "description": "Deliveries before giving up.",
                },
                **_CE,
                "traceparent": _TRACE["traceparent"],
            },
            "required": [hdr.HDR_DL_REASON, hdr.HDR_DL_SUBJECT, hdr.HDR_DL_CONSUMER,
                         hdr.HDR_DL_DELIVERED],
        },
    }  # fmt: skip


def _example_headers(cls: type[schemas.Message], role: str) -> dict[str, str]:
    eid = "2f1d7c1e-8a61-4c3e-9a57-1b7f0c9d2e11"
    if role == EVENT:
        return {
            "ce-specversion": "1.0",
            "ce-id": eid,
            "ce-source": "sriov/hostd/host-a-1234",
            "ce-type": schemas.type_of(cls),
            "ce-time": "2026-01-02T03:04:05Z",
            hdr.HDR_MSG_ID: eid,
            "traceparent": _TRACEPARENT,
            "content-type": "application/json",
        }
    if role == REQUEST:
        return {"traceparent": _TRACEPARENT, "content-type": "application/json"}
    if role == ERROR:
        return {
            hdr.HDR_ERROR: "no free VF of model ConnectX-5 Virtual Function",
            hdr.HDR_ERROR_CODE: "409",
            hdr.HDR_SRIOV_CODE: "no_capacity",
            "content-type": "application/json",
        }
    return {"content-type": "application/json"}


_DEAD_LETTER = {
    "name": "deadletter",
    "title": "DeadLetter",
    "summary": "A message a durable consumer gave up on, byte for byte as it was sent.",
    "description": "The payload is the original message's body unchanged (it may not even be "
    "JSON when the reason is 'malformed'); the headers say why and where it came from.",
    "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
    "payload": {"description": "The original body, unchanged."},
    "examples": [
        {
            "headers": {
                hdr.HDR_DL_REASON: "malformed: host event: Object missing required field `seq`",
                hdr.HDR_DL_SUBJECT: "sriov.v1.host.h1.heartbeat.sent",
                hdr.HDR_DL_CONSUMER: "inventory-host-events",
                hdr.HDR_DL_DELIVERED: "1",
            },
            "payload": {"type": "host.heartbeat.v1", "host_id": "h1"},
        }
    ],
}


def _slug(who: str) -> str:
    return who.replace(" ", "-")


def _esc(cid: str) -> str:
    return cid.replace("~", "~0").replace("/", "~1")


def render() -> dict[Path, str]:
    doc, per_type = build()
    files = {DOCS / "asyncapi.yaml": yaml.safe_dump(doc, sort_keys=False, width=100)}
    for name, schema in per_type.items():
        files[DOCS / "schemas" / f"{name}.json"] = json.dumps(schema, indent=2) + "\n"
    return files


def stale() -> list[Path]:
    """Docs that differ from what the schemas generate (missing, changed or extra)."""
    files = render()
    out = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
    existing = set((DOCS / "schemas").glob("*.json")) if (DOCS / "schemas").exists() else set()
    return out + sorted(existing - set(files))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sriov.common.apidoc")
    parser.add_argument("--write", action="store_true", help="rewrite docs/ from the schemas")
    args = parser.parse_args(argv)
    if not args.write:
        bad = stale()
        for p in bad:
            print(f"stale: {p}")
        return 1 if bad else 0
    files = render()
    (DOCS / "schemas").mkdir(parents=True, exist_ok=True)
    for p in set((DOCS / "schemas").glob("*.json")) - set(files):
        p.unlink()
    for p, text in files.items():
        p.write_text(text)
    print(f"wrote {len(files)} files under {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
