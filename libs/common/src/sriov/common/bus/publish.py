"""Publishing many JetStream messages cheaply: headers encoded once, acknowledgements on one
inbox of our own.

An outbox relay sends thousands of events whose acknowledgements it awaits together. Through
nats-py's ``publish_async`` each cost 74-86 µs of client CPU (7 CloudEvents headers, batches
of 500, a local nats-server): ~20 µs went to encoding the header dict field by field at every
publish, the rest to per-message bookkeeping and to decoding each acknowledgement into a
dataclass. Here the header block is encoded by :func:`encode_headers` (the bytes nats-py
would send), or stored encoded by a relay whose rows share most of it (:func:`extend_headers`),
and handed to :class:`~.client.Client`'s publish as is; :class:`AckInbox` matches
acknowledgements to futures on one wildcard subscription, decoding them with msgspec: 38-47 µs
per message. A refusal in the batch (a message too large, a stream full) now fails its future
at once; nats-py's handler let the error escape, so the batch waited out its timeout.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import re
from collections.abc import Mapping
from typing import Any, cast

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from .client import Client

# nats-py's own rules (nats/aio/client.py): a key is an HTTP token, a value is trimmed and
# may not end its line
_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
NO_RESPONDERS = "503"


@functools.lru_cache(maxsize=256)
def _key(name: str) -> str:
    key = name.strip()
    if key and not _KEY.fullmatch(key):
        raise nats.errors.BadHeaderError(key)
    return key


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """The header block nats-py would build for ``headers``, byte for byte."""
    return b"NATS/1.0\r\n" + _lines(headers) + b"\r\n"


def extend_headers(block: bytes, headers: Mapping[str, str]) -> bytes:
    """``block`` (from :func:`encode_headers`) with ``headers`` added, none of whose names it
    holds: a batch's shared headers are encoded once, each message's own appended."""
    return block[:-2] + _lines(headers) + b"\r\n"


def _lines(headers: Mapping[str, str]) -> bytes:
    parts = []
    for name, raw in headers.items():
        key = _key(name)  # a fixed, small set of names: checked once each
        if key:
            value = raw.strip()
            if "\r" in value or "\n" in value:
                value = value.translate(_NEWLINES)
            parts.append(f"{key}: {value}\r\n")
    return "".join(parts).encode()


class _Ack(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: dict[str, Any] | None = None


_decode_ack = msgspec.json.Decoder(_Ack).decode


class AckInbox:
    """One connection's JetStream publishes whose acknowledgements arrive on one wildcard
    inbox (``<inbox prefix>.<nuid>.<n>``, inside what the identity may subscribe to)."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = f"{nc._inbox_prefix.decode()}.{nc._nuid.next().decode()}."
        self._count = itertools.count()
        self._waiting: dict[str, asyncio.Future[_Ack]] = {}
        self._started = False
        self._lock = asyncio.Lock()

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | bytes
    ) -> asyncio.Future[_Ack]:
        """Send one message; the future holds JetStream's acknowledgement, or its refusal
        (``nats.js.errors.APIError``, or ``NoStreamResponseError`` when no stream listens)."""
        if not self._started:
            async with self._lock:
                if not self._started:
                    await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)
                    self._started = True
        token = str(next(self._count))
        future: asyncio.Future[_Ack] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        future.add_done_callback(lambda _f: self._waiting.pop(token, None))
        encoded = headers if isinstance(headers, bytes) else encode_headers(headers)
        block = cast(dict[str, Any], encoded)  # bytes: see Client
        await self._nc.publish(subject, payload, reply=self._prefix + token, headers=block)
        return future

    async def _on_ack(self, msg: Msg) -> None:
        future = self._waiting.get(msg.subject[len(self._prefix) :])
        if future is None or future.done():  # given up on (a timed-out batch)
            return
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            ack = _decode_ack(msg.data)
        except msgspec.DecodeError as exc:
            future.set_exception(exc)
            return
        if ack.error is None:
            future.set_result(ack)
            return
        try:  # raises the error matching the code (nats-py's own async reply handler lets it
            # escape, so its future never completes and a refusal reads as a timeout)
            nats.js.errors.APIError.from_error(ack.error)
        except nats.js.errors.APIError as exc:
            future.set_exception(exc)
        except TypeError:  # fields this nats-py does not know
            future.set_exception(nats.js.errors.APIError(description=str(ack.error)))
