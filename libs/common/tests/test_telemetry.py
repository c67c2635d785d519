"""OTLP over either transport, chosen by the standard variables; a wrong choice stops the start.

The export itself runs in a child process (a tracer provider is global, once per process):
``telemetry.setup`` as every service calls it, spans sent by the real exporter to a real
gRPC receiver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from sriov.common import telemetry
from sriov.common.errors import ConfigError
from sriov.devtools.otlp import OtlpGrpcReceiver, Span

# A parent span, and a child continued from message headers as a consumer in another
# process would (inject, then extract): the link the receiver must show.
EXPORTER = """
from opentelemetry.trace import SpanKind
from sriov.common import telemetry

tele = telemetry.setup("sriov-grpc-probe")
with telemetry.tracer().start_as_current_span("parent"):
    headers = telemetry.inject({})
with telemetry.messaging_span("sriov.v1.x.{id}.done", "sriov.v1.x.1.done", SpanKind.CONSUMER,
                              headers):
    pass
tele.shutdown()  # flushes: the spans are at the receiver when this process ends
"""

# What a hypervisor's install set lacks: the gRPC exporter and grpcio.
WITHOUT_GRPC = """
import sys

class Uninstalled:
    def find_spec(self, name, path=None, target=None):
        if name == "grpc" or name.startswith(("grpc.", "opentelemetry.exporter.otlp.proto.grpc")):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Uninstalled())
from sriov.offload.main import main
main(sys.argv[1:])
"""


@pytest.fixture
def grpc_rx() -> Iterator[OtlpGrpcReceiver]:
    with OtlpGrpcReceiver() as rx:
        yield rx


def test_the_grpc_receiver_keeps_grpc_out_of_the_test_process() -> None:
    """grpcio's fork handlers run in a child forked while its threads run: PostgreSQL, forked
    under its own user id by a later test of the same worker, died with SIGSEGV that way."""
    probe = (
        "import sys\n"
        "from sriov.devtools.otlp import OtlpGrpcReceiver\n"
        "with OtlpGrpcReceiver() as rx:\n"
        "    assert rx.endpoint.rsplit(':', 1)[1] != '0'\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'grpc'))\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout


# No exporter: ids only, and the sampled flag as the caller sent it.
IDS_ONLY = """
import json
from opentelemetry.trace import SpanKind
from sriov.common import telemetry

tele = telemetry.setup("sriov-ids-probe")
out = {"recording": telemetry.recording()}
with telemetry.tracer().start_as_current_span("root") as root:
    with telemetry.tracer().start_as_current_span("child") as child:
        out["root"] = [root.get_span_context().trace_id, root.get_span_context().span_id]
        out["child"] = [child.get_span_context().trace_id, child.get_span_context().span_id]
        out["records"] = child.is_recording()
        out["sent"] = telemetry.inject({})["traceparent"]
unsampled = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"}
with telemetry.messaging_span("t", "t", SpanKind.CONSUMER, unsampled):
    out["continued"] = telemetry.inject({})["traceparent"]
tele.shutdown()
print(json.dumps(out))
"""


def test_without_an_exporter_spans_are_ids_that_propagate() -> None:
    res = subprocess.run(
        [sys.executable, "-c", IDS_ONLY], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["recording"] is False and out["records"] is False
    (root_trace, root_span), (child_trace, child_span) = out["root"], out["child"]
    assert root_trace == child_trace != 0 and root_span not in (0, child_span) and child_span
    assert out["sent"] == f"00-{child_trace:032x}-{child_span:016x}-01"  # a root is sampled
    trace_id, span_id, flags = out["continued"].split("-")[1:]
    assert (trace_id, flags) == ("0af7651916cd43dd8448eb211c80319c", "00")
    assert span_id != "b7ad6b7169203331"  # a hop of its own, its caller's choice kept


def _env(**otel: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return clean | otel


def test_spans_reach_a_grpc_collector_with_their_parent_links(grpc_rx: OtlpGrpcReceiver) -> None:
    # the per-signal variable wins over the general one (which alone would send HTTP)
    env = _env(
        OTEL_EXPORTER_OTLP_ENDPOINT=grpc_rx.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="grpc",
    )
    res = subprocess.run(
        [sys.executable, "-c", EXPORTER], env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr[-2000:]

    def both(spans: list[Span]) -> tuple[Span, Span] | None:
        named = {s.name: s for s in spans if s.service == "sriov-grpc-probe"}
        if "parent" in named and "sriov.v1.x.{id}.done" in named:
            return named["parent"], named["sriov.v1.x.{id}.done"]
        return None

    parent, child = grpc_rx.wait_for(both, timeout=10, what="the probe's two spans over gRPC")
    assert parent.parent_span_id == ""
    assert child.parent_span_id == parent.span_id and child.trace_id == parent.trace_id
    assert child.kind == "consumer"
    assert child.attributes["messaging.destination.name"] == "sriov.v1.x.1.done"
    assert not grpc_rx.errors


@pytest.mark.parametrize(
    ("env", "chosen"),
    [
        ({}, (None, "http/protobuf")),  # the specification's default; every install set has it
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": " "},
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
             "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ),
    ],
)  # fmt: skip
def test_the_transport_is_read_per_signal_then_general(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], chosen: tuple[str | None, str]
) -> None:
    for var in telemetry.OTLP_PROTOCOL_VARS:
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert telemetry.otlp_protocol() == chosen


@pytest.mark.parametrize(
    ("var", "value", "why"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grcp", "not an OTLP protocol"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json", "send protobuf, not JSON"),
    ],
)
def test_an_unknown_transport_stops_the_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, why: str
) -> None:
    for other in telemetry.OTLP_PROTOCOL_VARS:
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(var, value)
    # refused before anything global is installed, whether or not traces are exported
    with pytest.raises(ConfigError) as err:
        telemetry.setup("sriov-test")
    text = str(err.value)
    assert text.startswith(f"{var}={value!r}: ") and text.endswith("accepted: grpc, http/protobuf")
    assert why in str(err.value)


def test_grpc_without_the_extra_stops_a_service_with_what_to_install() -> None:
    """A hypervisor's set has no gRPC exporter: hostd or offload asked for gRPC says so in one
    line (exit 2, the code of a configuration error) before it connects anywhere."""
    env = _env(OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_TRACES_EXPORTER="otlp")
    res = subprocess.run(
        [sys.executable, "-c", WITHOUT_GRPC, "--nats-url", "nats://127.0.0.1:1",
         "--host-id", "grpc-probe"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("sriov-offload: error: OTEL_EXPORTER_OTLP_PROTOCOL=grpc: "), line
    assert "pip install 'sriov-common[otlp-grpc]'" in line
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf" in line


def test_sriovctl_prints_a_wrong_transport_as_one_line() -> None:
    env = _env(OTEL_EXPORTER_OTLP_PROTOCOL="http/json", OTEL_TRACES_EXPORTER="none")
    res = subprocess.run(
        [sys.executable, "-c", "from sriov.cli.main import main; main()",
         "--nats-url", "nats://127.0.0.1:1", "isolated-device-list"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert "OTEL_EXPORTER_OTLP_PROTOCOL='http/json'" in res.stderr
    assert "[invalid_config]" in res.stderr
