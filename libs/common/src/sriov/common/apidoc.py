"""Generate the API description other systems integrate from, out of the schemas.

``docs/asyncapi.yaml`` (AsyncAPI 3.0: every subject and endpoint, who publishes and who
subscribes, payloads with examples) and ``docs/schemas/<type>.json`` (one JSON Schema per
message type). ``python -m sriov.common.apidoc --write`` regenerates them; a test fails when
the checked-in files are stale.
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
from sriov.common.runtime import VERSION
from sriov.common.schemas._examples import example

DOCS = Path(__file__).resolve().parents[5] / "docs"
REF = "#/components/schemas/{name}"


def _channel_id(template: str) -> str:
    parts = template.split(".")[2:]  # drop "sriov.v1"
    return ".".join(p for p in parts if not p.startswith("{")) or template


def _params(template: str) -> dict[str, Any]:
    names = re.findall(r"\{(\w+)\}", template)
    return {n: {"description": _PARAM_DOC.get(n, n)} for n in names}


_PARAM_DOC = {
    "host_id": "Host id from host.conf (subject-safe token).",
    "guest_id": "Guest (server) id.",
    "pci": "PCI address escaped for a subject: 0000:0a:01.1 -> 0000-0a-01-1.",
    "state": "up or down.",
    "verb": "reserved, confirmed, released, expired, lost or failed.",
    "op": "place, attach or release.",
    "consumer": "Durable consumer that gave up on the message.",
}


def _message_ref(cls: type[schemas.Message]) -> dict[str, str]:
    return {"$ref": f"#/components/messages/{cls.__name__}"}


def build() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The AsyncAPI document and the per-type JSON Schemas."""
    types = list(schemas.ALL_MESSAGES)
    (_, components) = msgspec.json.schema_components(types, ref_template=REF)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    for ch in catalog.CHANNELS:
        cid = _channel_id(ch.template)
        channels[cid] = {
            "address": ch.template,
            "description": ch.description
            + (f" JetStream stream {ch.stream}." if ch.stream else ""),
            "messages": {c.__name__: _message_ref(c) for c in ch.messages},
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
            "description": f"Request/reply endpoint of {ep.service} (nats.micro). "
            + ep.description,
            "messages": {ep.request.__name__: _message_ref(ep.request)},
            **({"parameters": _params(ep.template)} if _params(ep.template) else {}),
        }
        channels[reply_id] = {
            "address": None,
            "description": "Reply inbox of the requester. Errors carry headers "
            "Nats-Service-Error, Nats-Service-Error-Code and Sriov-Error-Code and an "
            "ErrorReply body.",
            "messages": {
                ep.reply.__name__: _message_ref(ep.reply),
                "ErrorReply": _message_ref(schemas.ErrorReply),
            },
        }
        operations[f"{_slug(ep.service)}.serve.{cid}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{_esc(cid)}"},
            "summary": f"{ep.service} answers; callers: {', '.join(ep.callers)}",
            "reply": {"channel": {"$ref": f"#/channels/{_esc(reply_id)}"}},
        }

    messages = {
        cls.__name__: {
            "name": schemas.type_of(cls),
            "title": cls.__name__,
            "summary": (cls.__doc__ or "").strip().split("\n")[0],
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/CloudEventsHeaders"},
            "payload": {"$ref": REF.format(name=cls.__name__)},
            "examples": [{"payload": msgspec.to_builtins(example(cls))}],
        }
        for cls in types
    }
    components["CloudEventsHeaders"] = _HEADERS
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


_HEADERS = {
    "type": "object",
    "description": "CloudEvents NATS binding plus W3C trace context.",
    "properties": {
        "ce-specversion": {"type": "string", "const": "1.0"},
        "ce-id": {"type": "string", "description": "Event id; also Nats-Msg-Id for dedupe."},
        "ce-source": {"type": "string", "examples": ["sriov/hostd/host-a-1234"]},
        "ce-type": {"type": "string", "description": "Same as the payload's type field."},
        "ce-time": {"type": "string", "format": "date-time"},
        "Nats-Msg-Id": {"type": "string"},
        "traceparent": {"type": "string"},
        "tracestate": {"type": "string"},
    },
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
