"""A service's HTTP probes on its own port (``--http-port``): ``/healthz``, ``/readyz``,
``/metrics``.

Standard library only (asyncio streams, HTTP/1.1 with ``Connection: close``): hostd and
offload run on hypervisors, where we install no web framework. The answers come from the
service's own event loop, so an answer at all shows the loop turns:

* ``/healthz``: 200 while the process runs and its event loop is responsive (a stuck loop
  answers nothing, and the kubelet's timeout fails the probe).
* ``/readyz``: 200 once connected to NATS with the micro service and its endpoints
  registered, 503 (with the reason) before that and while NATS is unreachable. A database
  outage does not make inventory or the scheduler unready: every replica would leave the
  Service at once, while they answer ``unavailable`` and recover by themselves.
* ``/metrics``: the Prometheus registry the OpenTelemetry exporter fills, when
  ``OTEL_METRICS_EXPORTER=prometheus`` (404 otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

Readiness = Callable[[], str | None]
"""None when ready, else why not (shown in the 503 body)."""

MAX_REQUEST = 8192
READ_TIMEOUT = 5.0


class ProbeServer:
    """The listener; :meth:`start` it, :meth:`close` it (``port`` is the bound port)."""

    def __init__(self, readiness: Readiness, metrics: bool) -> None:
        self.readiness = readiness
        self.metrics = metrics
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> ProbeServer:
        self.server = await asyncio.start_server(self._handle, host, port, limit=MAX_REQUEST)
        self.port = int(self.server.sockets[0].getsockname()[1])
        log.info("probes on http://%s:%d (/healthz /readyz%s)", host, self.port,
                 " /metrics" if self.metrics else "")  # fmt: skip
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for one request."""
        path = path.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            reason = self.readiness()
            if reason is None:
                return 200, "text/plain", b"ready\n"
            return 503, "text/plain", f"not ready: {reason}\n".encode()
        if path == "/metrics" and self.metrics:
            from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

            return 200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
        return 404, "text/plain", b"not found: /healthz, /readyz, /metrics\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path, _version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            status, ctype, body, method = 400, "text/plain", b"bad request\n", "GET"
        else:
            status, ctype, body = self.answer(method, path)
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  503: "Service Unavailable"}[status]  # fmt: skip
        header = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(header.encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
