"""The gRPC side of ``OtlpGrpcReceiver``, run as its own process.

A process whose gRPC threads are running must not fork: grpcio's fork handlers run in the
child and can crash it before it execs (PostgreSQL, started under another user id, is
forked, not vforked, and died with SIGSEGV that way). So the test process never imports
grpc; this process serves opentelemetry-proto's ``TraceService`` on a free loopback port,
prints the port, and posts each request's bytes unchanged to the receiver's HTTP side.

``python -m sriov.devtools.otlp_grpc http://127.0.0.1:PORT`` (the HTTP receiver's base URL).
"""

from __future__ import annotations

import signal
import sys
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def serve(http_endpoint: str) -> None:
    url = f"{http_endpoint}/v1/traces"

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(  # the generated service's method name
            self, request: ExportTraceServiceRequest, context: Any
        ) -> ExportTraceServiceResponse:
            post = urllib.request.Request(
                url, data=request.SerializeToString(), method="POST",
                headers={"Content-Type": "application/x-protobuf"},
            )  # fmt: skip
            with urllib.request.urlopen(post, timeout=10):
                pass
            return ExportTraceServiceResponse()

    server = grpc.server(ThreadPoolExecutor(2, thread_name_prefix="otlp-grpc"))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)  # type: ignore[no-untyped-call]
    port = int(server.add_insecure_port("127.0.0.1:0"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print(port, flush=True)
    stop.wait()
    server.stop(grace=None).wait(5)


if __name__ == "__main__":
    serve(sys.argv[1])
