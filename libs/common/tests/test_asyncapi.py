"""The published contract, checked by tools this project did not write.

``docs/asyncapi.yaml`` is parsed and validated by the official AsyncAPI parser
(``@asyncapi/parser``, the one the AsyncAPI CLI and Studio use; no maintained Python validator
of AsyncAPI 3 exists). It runs on Debian's ``nodejs`` (``./stack`` installs it) and is
installed here, pinned by the committed ``asyncapi/package-lock.json``, into ``.cache/``:
``npm ci`` from the npm registry, nothing global. Every example of every message is then
checked against its payload and headers schemas inside the same document, so a change to the
schemas, the catalogue or the generator that breaks the contract fails here.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sriov.common import apidoc

HERE = Path(__file__).parent / "asyncapi"
CACHE = Path(__file__).resolve().parents[3] / ".cache" / "asyncapi-parser"
DOC = apidoc.DOCS / "asyncapi.yaml"
#: Informational only: the parser recommends the newest AsyncAPI version (3.1.0).
IGNORED = {"asyncapi-latest-version"}


@pytest.fixture(scope="module")
def parser() -> Path:
    """The pinned parser under .cache, installed once per lock (``npm ci``)."""
    npm = shutil.which("npm")
    assert npm and shutil.which("node"), "node and npm are needed: ./stack installs them"
    lock = (HERE / "package-lock.json").read_bytes()
    stamp = CACHE / ".installed-lock"
    CACHE.mkdir(parents=True, exist_ok=True)
    # Test workers (pytest-xdist) and checkouts' runs share the cache: one installs at a time.
    with (CACHE.parent / "asyncapi-parser.lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not stamp.exists() or stamp.read_bytes() != lock:
            for name in ("package.json", "package-lock.json"):
                shutil.copy(HERE / name, CACHE / name)
            cmd = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
            subprocess.run(cmd, cwd=CACHE, check=True, timeout=600)
            stamp.write_bytes(lock)
        shutil.copy(HERE / "validate.mjs", CACHE / "validate.mjs")
    return CACHE / "validate.mjs"


def _parse(parser: Path, doc: Path) -> tuple[int, list[dict[str, Any]]]:
    out = subprocess.run(
        ["node", str(parser), str(doc)], capture_output=True, text=True, timeout=120
    )
    assert not out.stderr.strip() or out.returncode, out.stderr
    found = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    # severity: 0 error, 1 warning, 2 information, 3 hint
    return out.returncode, [d for d in found if d["severity"] <= 1 and d["code"] not in IGNORED]


def test_official_parser_accepts_the_published_document(parser: Path) -> None:
    rc, problems = _parse(parser, DOC)
    assert rc == 0 and not problems, "\n".join(json.dumps(p) for p in problems)


def test_official_parser_refuses_a_broken_document(parser: Path, tmp_path: Path) -> None:
    """The check above can fail: an operation on a channel that does not exist, a message
    whose payload is not a schema."""
    doc = yaml.safe_load(DOC.read_text())
    first = next(iter(doc["operations"].values()))
    first["channel"] = {"$ref": "#/channels/no.such.channel"}
    doc["components"]["messages"]["PlaceRequest"]["payload"] = {"type": "no-such-type"}
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(doc))
    rc, problems = _parse(parser, broken)
    assert rc != 0 and problems
    text = json.dumps(problems)
    assert "no.such.channel" in text or "operations" in text, text


def _validator(doc: dict[str, Any], pointer: str) -> jsonschema.Draft202012Validator:
    """A validator for the schema at ``pointer`` whose ``#/...`` references resolve inside
    the whole AsyncAPI document (as msgspec's ``ref_template`` wrote them)."""
    return jsonschema.Draft202012Validator({**doc, "$ref": pointer})


def test_every_message_example_matches_its_payload_and_headers() -> None:
    doc = yaml.safe_load(DOC.read_text())
    messages = doc["components"]["messages"]
    checked = 0
    for name, msg in messages.items():
        assert msg.get("examples"), f"{name}: no example"
        for ex in msg["examples"]:
            for part in ("payload", "headers"):
                schema = msg[part]
                assert set(schema) == {"$ref"} or part == "payload", f"{name}.{part}: {schema}"
                if "$ref" not in schema:
                    continue  # DeadLetter: any body
                errors = list(_validator(doc, schema["$ref"]).iter_errors(ex[part]))
                assert not errors, f"{name}.{part}: {[e.message for e in errors]}"
                checked += 1
    assert checked >= 2 * (len(messages) - 1)


def test_headers_are_declared_per_role() -> None:
    """Events carry CloudEvents headers; requests and replies none; errors their codes."""
    doc = yaml.safe_load(DOC.read_text())
    msgs = doc["components"]["messages"]
    role = {name: m["headers"]["$ref"].rsplit("/", 1)[-1] for name, m in msgs.items()}
    assert role["Reserved"] == role["HostSnapshot"] == role["VfApplied"] == "EventHeaders"
    assert role["PlaceRequest"] == role["VfResetRequest"] == "RequestHeaders"
    assert role["PlacementReply"] == role["Diagnostics.Reply"] == "ReplyHeaders"
    assert role["Diagnostics"] == "EventHeaders" and role["ErrorReply"] == "ErrorHeaders"
    assert role["DeadLetter"] == "DeadLetterHeaders"
    schemas = doc["components"]["schemas"]
    assert "ce-id" in schemas["EventHeaders"]["required"]
    assert not any(k.startswith("ce-") for k in schemas["RequestHeaders"]["properties"])
    assert set(schemas["ErrorHeaders"]["required"]) == {
        "Nats-Service-Error", "Nats-Service-Error-Code", "Sriov-Error-Code"
    }  # fmt: skip
    assert set(schemas["DeadLetterHeaders"]["required"]) == {
        "Sriov-Dead-Letter-Reason", "Sriov-Original-Subject", "Sriov-Consumer", "Sriov-Delivered"
    }  # fmt: skip
    dead = doc["channels"]["deadletter"]
    assert dead["address"] == "sriov.v1.deadletter.{consumer}"
    assert "SRIOV_DEAD_LETTER" in dead["description"]
