"""Small OTLP trace receivers for tests: what the services' real exporters send.

Services export with the standard OTLP exporters (``OTEL_EXPORTER_OTLP_ENDPOINT``, over
``OTEL_EXPORTER_OTLP_PROTOCOL`` ``http/protobuf`` or ``grpc``); ``OtlpReceiver`` (HTTP) and
``OtlpGrpcReceiver`` (gRPC, opentelemetry-proto's ``TraceService``, served from a child
process: see ``otlp_grpc``) listen on a free loopback port, and both keep each
``ExportTraceServiceRequest``'s spans flattened the same way, so a test can check
parent/child links and span links across processes.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass(frozen=True)
class SpanLink:
    trace_id: str
    span_id: str


@dataclass(frozen=True)
class Span:
    """One received span, ids as lowercase hex (the form logs and traceparent use)."""

    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any] = field(hash=False)
    links: tuple[SpanLink, ...] = ()
    status_code: int = 0


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which)


def decode(body: bytes) -> list[Span]:
    """The spans of one OTLP/HTTP protobuf export request."""
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    return spans_of(req)


def spans_of(req: ExportTraceServiceRequest) -> list[Span]:
    """An export request's spans, flattened (whichever transport brought it)."""
    out: list[Span] = []
    for rs in req.resource_spans:
        res = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
        service = str(res.get("service.name", ""))
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    Span(
                        service=service,
                        name=s.name,
                        kind=KINDS.get(s.kind, str(s.kind)),
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        attributes={kv.key: _value(kv.value) for kv in s.attributes},
                        links=tuple(
                            SpanLink(lk.trace_id.hex(), lk.span_id.hex()) for lk in s.links
                        ),
                        status_code=s.status.code,
                    )
                )
    return out


class _Spans:
    """What a receiver got, and waiting for it: shared by both transports."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.errors: list[str] = []
        self._cond = threading.Condition()

    def _add(self, spans: list[Span]) -> None:
        with self._cond:
            self.spans.extend(spans)
            self._cond.notify_all()

    def _error(self, text: str) -> None:
        with self._cond:
            self.errors.append(text)

    def snapshot(self) -> list[Span]:
        with self._cond:
            return list(self.spans)

    def wait_for(
        self, found: Callable[[list[Span]], Any], timeout: float = 30, what: str = "spans"
    ) -> Any:
        """Wait until ``found(spans)`` is truthy and return it; raise naming ``what`` if not."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = found(list(self.spans))
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    names = sorted({f"{s.service}:{s.name}" for s in self.spans})
                    raise TimeoutError(
                        f"no {what} within {timeout}s; received {len(self.spans)} spans: {names}"
                    )
                self._cond.wait(min(left, 0.5))


class OtlpReceiver(_Spans):
    """``with OtlpReceiver() as rx:`` point ``OTEL_EXPORTER_OTLP_ENDPOINT`` at ``rx.endpoint``."""

    def __init__(self) -> None:
        super().__init__()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self._answer(404, b"")
                    return
                try:
                    spans = decode(body)
                except Exception as exc:  # a broken export is a finding, not a crash
                    receiver._error(f"undecodable export from {self.client_address}: {exc}")
                    self._answer(400, b"")
                    return
                receiver._add(spans)
                self._answer(200, ExportTraceServiceResponse().SerializeToString())

            def _answer(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: tests read the spans, not an access log

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-receiver", daemon=True
        )

    @property
    def endpoint(self) -> str:
        """The base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporter adds /v1/traces)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class OtlpGrpcReceiver(OtlpReceiver):
    """``with OtlpGrpcReceiver() as rx:`` export with ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc`` and
    ``OTEL_EXPORTER_OTLP_ENDPOINT=rx.endpoint`` (``http://``: the exporter goes without TLS).

    The gRPC server runs in a child process (``otlp_grpc``) that posts each request to this
    receiver's HTTP side, so grpc's threads never live in a process that forks."""

    _relay: subprocess.Popen[str] | None = None
    _grpc_port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._grpc_port}"

    def start(self) -> OtlpGrpcReceiver:
        super().start()
        self._relay = subprocess.Popen(
            [sys.executable, "-m", "sriov.devtools.otlp_grpc", super().endpoint],
            stdout=subprocess.PIPE,
            text=True,
        )  # its stderr is the test's
        assert self._relay.stdout is not None
        line = self._relay.stdout.readline().strip()
        if not line.isdigit():
            self.stop()
            raise RuntimeError(f"the OTLP gRPC relay did not start: {line!r}")
        self._grpc_port = int(line)
        return self

    def stop(self) -> None:
        if self._relay is not None:
            self._relay.terminate()
            try:
                self._relay.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self._relay.kill()
                self._relay.communicate()
            if self._relay.returncode not in (0, -15):
                self._error(f"the OTLP gRPC relay exited {self._relay.returncode}")
            self._relay = None
        super().stop()

    def __enter__(self) -> OtlpGrpcReceiver:
        return self.start()


def by_id(spans: list[Span]) -> dict[str, Span]:
    return {s.span_id: s for s in spans}


def ancestors(span: Span, index: dict[str, Span]) -> Iterator[Span]:
    """The span's parent, grandparent... as far as they were received."""
    seen: set[str] = set()
    cur = index.get(span.parent_span_id)
    while cur is not None and cur.span_id not in seen:
        seen.add(cur.span_id)
        yield cur
        cur = index.get(cur.parent_span_id)
