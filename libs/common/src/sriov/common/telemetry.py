"""OpenTelemetry set-up from the standard ``OTEL_*`` variables, and structured logs.

Nothing configured means no exporter and no noise, and no cost: spans carry fresh ids (so
trace ids propagate across hops, keep the caller's sampled flag and reach the logs) but
record nothing, and database calls are not wrapped at all. Recording spans that nothing
reads was a quarter of the scheduler's CPU per placement. ``OTEL_TRACES_EXPORTER=otlp`` (or an
``OTEL_EXPORTER_OTLP_*ENDPOINT``) sends OTLP to a collector, Jaeger or Tempo, over the
transport ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` or ``OTEL_EXPORTER_OTLP_PROTOCOL`` names:
``http/protobuf`` (the default, as the specification recommends; every install set has it) or
``grpc`` (the ``sriov-common[otlp-grpc]`` extra: the image has it, a hypervisor's set does
not). Endpoint, headers, TLS, compression and timeout are the exporters' own ``OTEL_*``
variables, read by the exporters themselves. ``OTEL_METRICS_EXPORTER=prometheus`` serves
metrics on ``OTEL_EXPORTER_PROMETHEUS_HOST:OTEL_EXPORTER_PROMETHEUS_PORT``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    NoOpTracer,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
    Tracer,
)

if TYPE_CHECKING:  # the SDK loads in setup(): sriovctl without exporters never needs it
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

from sriov.common.errors import ConfigError

TRACER_NAME = "sriov"
#: The transports an OTLP exporter here speaks (``http/json`` has no Python exporter).
OTLP_PROTOCOLS = ("grpc", "http/protobuf")
#: Where the transport for traces is read, the per-signal variable first (the specification's
#: order; the SDK's own auto-configuration reads them the same way).
OTLP_PROTOCOL_VARS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
GRPC_EXTRA = "pip install 'sriov-common[otlp-grpc]'"


class IdsOnlyTracer(NoOpTracer):
    """Spans that are ids and nothing else: a child of the current span (same trace, same
    sampled flag, so a process that exports downstream still records) or a sampled root."""

    def start_span(self, name: str, context: Context | None = None, *_a: Any, **_kw: Any) -> Span:
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            trace_id, flags, state = parent.trace_id, parent.trace_flags, parent.trace_state
        else:
            trace_id, flags, state = random.getrandbits(128), TraceFlags(TraceFlags.SAMPLED), None
        span_id = random.getrandbits(64)
        while not span_id:  # 0 is the invalid id
            span_id = random.getrandbits(64)
        return NonRecordingSpan(SpanContext(trace_id, span_id, False, flags, state))


class ProjectTracer(Tracer):
    """The installed provider's tracer (an exporter is configured, or a test collects spans);
    until one is installed, :class:`IdsOnlyTracer`. Like the API's ProxyTracer, which falls
    back to a tracer that makes no ids at all."""

    def __init__(self) -> None:
        self._ids = IdsOnlyTracer()
        self._real: Tracer | None = None

    def _current(self) -> Tracer:
        if self._real is not None:
            return self._real
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):
            return self._ids
        self._real = provider.get_tracer(TRACER_NAME)
        return self._real

    def start_span(self, *args: Any, **kwargs: Any) -> Span:
        return self._current().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._current().start_as_current_span(*args, **kwargs)


@dataclass
class Telemetry:
    """Handles to shut exporters down cleanly (flushes pending spans)."""

    tracer_provider: TracerProvider | None
    """None: nothing exports, no provider was installed (spans are ids only)."""
    metrics_port: int | None = None

    def shutdown(self) -> None:
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        provider = metrics.get_meter_provider()
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


def _env_list(name: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


def setup(service_name: str, instance_id: str | None = None) -> Telemetry:
    """Install tracer and meter providers for this process, per ``OTEL_*`` variables."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    attrs: dict[str, Any] = {"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)}
    if instance_id:
        attrs["service.instance.id"] = instance_id
    resource = Resource.create(attrs)
    var, protocol = otlp_protocol()  # a wrong value stops the start, exporting or not
    provider = TracerProvider(resource=resource)
    exporters = _env_list("OTEL_TRACES_EXPORTER")
    otlp_configured = any(
        os.environ.get(k)
        for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    exporting = False
    if "otlp" in exporters or (otlp_configured and "none" not in exporters):
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(var, protocol)))
        exporting = True
    if "console" in exporters:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        exporting = True
    if exporting:
        trace.set_tracer_provider(provider)

    port = None
    if "prometheus" in _env_list("OTEL_METRICS_EXPORTER"):
        port = _start_prometheus(resource)
    return Telemetry(provider if exporting else None, port)


def recording() -> bool:
    """Whether spans of this process go anywhere (no: database calls are left unwrapped)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def otlp_protocol() -> tuple[str | None, str]:
    """The OTLP transport for traces and the variable that chose it (``None``: the default)."""
    for var in OTLP_PROTOCOL_VARS:
        value = os.environ.get(var, "").strip()
        if not value:
            continue
        if value in OTLP_PROTOCOLS:
            return var, value
        why = (
            "the Python OTLP exporters send protobuf, not JSON"
            if value == "http/json"
            else "not an OTLP protocol"
        )
        raise ConfigError(f"{var}={value!r}: {why}; accepted: {', '.join(OTLP_PROTOCOLS)}")
    return None, "http/protobuf"


def _otlp_exporter(var: str | None, protocol: str) -> SpanExporter:
    """The exporter for ``protocol``; it reads its endpoint, headers and TLS from ``OTEL_*``."""
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError as exc:  # the optional extra: a hypervisor's set goes without it
            missing = f"{exc.name} is missing" if exc.name else str(exc)
            raise ConfigError(
                f"{var}=grpc: OTLP over gRPC is not installed here ({missing});"
                f" {GRPC_EXTRA}, or set {var}=http/protobuf"
            ) from None
        return GrpcSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _start_prometheus(resource: Resource) -> int:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import start_http_server

    host = os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
    port = int(os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464"))
    server, _thread = start_http_server(port=port, addr=host)
    metrics.set_meter_provider(
        MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader()])
    )
    return int(server.server_port)


@functools.cache
def tracer() -> Tracer:
    """The project's tracer, built once (it follows a provider installed later)."""
    return ProjectTracer()


def meter() -> metrics.Meter:
    return metrics.get_meter(TRACER_NAME)


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add W3C ``traceparent``/``tracestate`` of the current span to ``headers``."""
    propagate.inject(headers)
    return headers


def extract(headers: Mapping[str, str] | None) -> Any:
    """The trace context carried by message headers (an empty context if none)."""
    return propagate.extract(dict(headers or {}))


def messaging_span(
    template: str, subject: str, kind: SpanKind, headers: Mapping[str, str] | None = None
) -> Any:
    """Start a span named by the subject template, the concrete subject as an attribute.

    For consumer/server spans pass the incoming ``headers`` so the span is a child of the
    producer's span in the other process.
    """
    ctx = extract(headers) if headers is not None else None
    return tracer().start_as_current_span(
        template,
        context=ctx,
        kind=kind,
        attributes={
            "messaging.system": "nats",
            "messaging.destination.name": subject,
            "messaging.destination.template": template,
        },
    )


def record_error(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, carrying the current trace and span ids."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"] = f"{ctx.trace_id:032x}"
            out["span_id"] = f"{ctx.span_id:016x}"
        for key, value in record.__dict__.items():
            if key.startswith("x_"):
                out[key[2:]] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """Readable one-line logs for a person at a terminal, with the trace id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        ctx = trace.get_current_span().get_span_context()
        tid = f" trace={ctx.trace_id:032x}" if ctx.is_valid else ""
        extra = "".join(f" {k[2:]}={v}" for k, v in record.__dict__.items() if k.startswith("x_"))
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: "
        text = base + record.getMessage() + extra + tid
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Configure the root logger; ``SRIOV_LOG_FORMAT=json|text``, ``SRIOV_LOG_LEVEL``."""
    handler = logging.StreamHandler(sys.stderr)
    chosen = fmt or os.environ.get("SRIOV_LOG_FORMAT", "text")
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("SRIOV_LOG_LEVEL", "INFO")).upper())
    for noisy in ("nats", "asyncio", "pyroute2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
