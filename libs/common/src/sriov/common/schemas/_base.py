"""Base Struct and decoding helpers shared by every message type."""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any, Generic, TypeVar

import msgspec

from sriov.common.errors import InvalidRequest, UnknownMessageType


class Message(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=False):
    """Base of every wire message: tagged by ``type``, whose value carries the major version.

    Unknown fields are ignored on decode (msgspec's default), so producers may add fields
    with defaults without breaking older consumers.
    """


class Model(msgspec.Struct, kw_only=True):
    """Base of nested (untagged) value objects inside messages."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


M = TypeVar("M")
S = TypeVar("S", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder()


def encode(msg: Any) -> bytes:
    """Encode any message or model to JSON bytes."""
    return _encoder.encode(msg)


@functools.cache
def type_of(cls: type[Message]) -> str:
    """The ``type`` tag of a message class (cached: it is on every publish's path)."""
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


#: An escaped NUL (``\\u0000`` not preceded by another backslash) inside JSON text.
_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class Codec(Generic[M]):
    """One reusable decoder for a message type or a union of them.

    Errors become :class:`InvalidRequest` naming the JSON path, or
    :class:`UnknownMessageType` when the ``type`` tag is not one this codec knows, so a
    consumer can log-and-ack unknown types and dead-letter malformed ones.
    """

    def __init__(self, typ: Any, name: str) -> None:
        self.type = typ
        self.name = name
        self._decoder: msgspec.json.Decoder[M] = msgspec.json.Decoder(typ)

    def decode(self, data: bytes | str) -> M:
        raw = data.encode(errors="surrogateescape") if isinstance(data, str) else data
        if not raw.strip():
            raise InvalidRequest(f"{self.name}: empty body (a JSON object is expected)", field="$")
        if b"\\u0000" in raw and _NUL.search(raw):
            # PostgreSQL text cannot hold NUL: refuse it here, naming it, rather than fail
            # deep in a database write with an internal error.
            raise InvalidRequest(
                f"{self.name}: a string holds a NUL character (\\u0000)", field="$"
            )
        try:
            return self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            text = str(exc)
            if "at `$.type`" in text and text.startswith("Invalid value"):
                raise UnknownMessageType(
                    f"{self.name}: unknown message type ({text})", field="type"
                ) from exc
            raise invalid(self.name, exc) from exc
        except msgspec.DecodeError as exc:
            raise InvalidRequest(f"{self.name}: not valid JSON ({exc})", field="$") from exc
        # msgspec raises these two, not DecodeError, for a bad byte inside a string and for
        # very deep nesting; a consumer or endpoint must see them as malformed input too.
        except UnicodeDecodeError as exc:
            raise InvalidRequest(
                f"{self.name}: a string is not valid UTF-8 (byte {exc.start})", field="$"
            ) from exc
        except RecursionError as exc:
            raise InvalidRequest(f"{self.name}: JSON nested too deeply", field="$") from exc


_MISSING = re.compile(r"^Object missing required field `([^`]+)`")


def invalid(name: str, exc: msgspec.ValidationError) -> InvalidRequest:
    """A msgspec validation error as :class:`InvalidRequest` whose ``field`` is the path of
    the offending field (``nets[0].desc``, ``guest_id``; ``$`` only for the whole body)."""
    text = str(exc)
    path = text.rsplit(" - at `", 1)[1].rstrip("`") if " - at `" in text else "$"
    missing = _MISSING.match(text)
    if missing:
        path = f"{path}.{missing.group(1)}"
    field = path.removeprefix("$.") if path != "$" else "$"
    return InvalidRequest(f"{name}: {_shorten(text)}", field=field)


def check(msg: S) -> S:
    """Enforce the limits of ``msg``'s type on a Struct built in Python (decoding enforces
    them on the wire; constructors do not): the same definitions, the same errors."""
    try:
        return msgspec.convert(msgspec.to_builtins(msg), type(msg))
    except msgspec.ValidationError as exc:
        name = type_of(type(msg)) if isinstance(msg, Message) else type(msg).__name__
        raise invalid(name, exc) from exc


def _shorten(text: str, limit: int = 400) -> str:
    """msgspec quotes the offending value whole: keep an error about a 2 MB string short."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}...({len(text) - limit} characters)...{text[-half:]}"
