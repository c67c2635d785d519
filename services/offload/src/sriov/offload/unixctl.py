"""An asyncio client for OVS daemons' unixctl control sockets (what ``ovs-appctl`` speaks).

Why not ``ovs.unixctl.client.UnixctlClient``: it blocks, has no timeout, and the ``ovs``
wheel parses JSON-RPC in pure Python one character at a time, so a 100k-flow
``dpctl/dump-flows`` reply (tens of MB) takes minutes. The protocol is small: one JSON-RPC
request ``{"method", "params": [str...], "id"}`` and one reply ``{"result", "error",
"id"}`` per connection; msgspec decodes the reply in C.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Iterator

import msgspec

from sriov.common.errors import SriovError, Unavailable

_MAX_UNIX_PATH = 107
_CHUNK = 1 << 20


class UnixctlError(SriovError):
    """The daemon answered the command with an error (the text ``ovs-appctl`` prints)."""

    code = "unixctl_error"
    status = 500


class _Reply(msgspec.Struct):
    id: int | str | None = None
    result: str | None = None
    error: str | None = None


_decode_reply = msgspec.json.Decoder(_Reply).decode
_encoder = msgspec.json.Encoder()


def describe_socket(path: str) -> str:
    """Why a unix socket cannot be reached, for error messages (missing, refused...)."""
    if not os.path.exists(path):
        return "the socket file does not exist"
    return "the socket exists but nothing accepts connections on it"


@contextlib.contextmanager
def _connectable(path: str) -> Iterator[str]:
    """A path short enough for ``connect()`` (sun_path holds 107 bytes): long ones go
    through ``/proc/self/fd/<dir>/<name>``, as OVS itself does."""
    if len(os.fsencode(path)) <= _MAX_UNIX_PATH:
        yield path
        return
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


async def call(path: str, command: str, *args: str, timeout: float = 5.0, what: str = "") -> str:
    """Run ``command args`` on the daemon behind ``path``; return its text output.

    Raises :class:`Unavailable` naming the socket when the daemon cannot be reached or does
    not answer in ``timeout`` seconds, and :class:`UnixctlError` when it refuses the command.
    """
    who = what or "daemon"
    try:
        async with asyncio.timeout(timeout):
            return await _call(path, command, list(args), who)
    except TimeoutError:
        raise Unavailable(
            f"{who} control socket {path} did not answer {command!r} within {timeout}s",
            socket=path,
        ) from None


async def _call(path: str, command: str, args: list[str], who: str) -> str:
    try:
        with _connectable(path) as target:
            reader, writer = await asyncio.open_unix_connection(target, limit=_CHUNK)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, None):
            reason = describe_socket(path)
        raise Unavailable(
            f"cannot reach {who} at control socket {path}: {reason} (is it running?)",
            socket=path,
        ) from exc
    try:
        writer.write(_encoder.encode({"id": 0, "method": command, "params": args}))
        await writer.drain()
        reply = await _read_reply(reader, path, who)
    except (ConnectionError, BrokenPipeError) as exc:
        raise Unavailable(
            f"{who} at control socket {path} dropped the connection: {exc}", socket=path
        ) from exc
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if reply.error is not None:
        raise UnixctlError(f"{who} refused {command!r}: {reply.error.strip()}", socket=path)
    return reply.result or ""


async def _read_reply(reader: asyncio.StreamReader, path: str, who: str) -> _Reply:
    buf = bytearray()
    while True:
        chunk = await reader.read(_CHUNK)
        if not chunk:
            raise Unavailable(
                f"{who} at control socket {path} closed the connection before answering",
                socket=path,
            )
        buf += chunk
        # A reply ends with '}'; only then is it worth trying to decode (stays linear).
        if buf.rstrip().endswith(b"}"):
            try:
                return _decode_reply(buf)
            except msgspec.ValidationError as exc:
                raise UnixctlError(f"{who} at {path} sent a malformed reply: {exc}") from exc
            except msgspec.DecodeError:
                continue  # a '}' inside the result text happened to end this chunk
