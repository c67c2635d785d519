"""A real inventory process serves its HTTP probes: /healthz, /readyz (503 once NATS is gone,
while /healthz stays 200), /metrics when Prometheus metrics are on, and 404 elsewhere."""

from __future__ import annotations

import asyncio
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from sriov.devtools.embedded import NatsServer, free_port
from sriov.inventory import testing as t


def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as res:
            return res.status, res.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()
    except OSError as exc:  # not listening yet
        return 0, str(exc)


async def answer(port: int, path: str, status: int, what: str) -> str:
    """The body of the first answer with ``status`` (polled)."""
    seen: list[str] = []

    async def check() -> bool:
        code, body = await asyncio.to_thread(get, port, path)
        seen.append(body)
        return code == status

    await t.eventually(check, what=what, timeout=30)
    return seen[-1]


async def test_probes_of_a_running_inventory(nats_server: NatsServer, database_url: str) -> None:
    http, prometheus = free_port(), free_port()
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "prometheus",
           "OTEL_EXPORTER_PROMETHEUS_PORT": str(prometheus),
           "SRIOV_HTTP_PORT": str(http)}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "sriov-inventory"), "--nats-url", nats_server.url,
        "--database-url", database_url, "--instance-id", "probe-test",
        env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert await answer(http, "/readyz", 200, "ready") == "ready\n"
        assert await asyncio.to_thread(get, http, "/healthz") == (200, "ok\n")
        code, text = await asyncio.to_thread(get, http, "/metrics")
        assert code == 200 and "# TYPE" in text and "sriov" in text
        # the same registry as the exporter's own port (OTEL_EXPORTER_PROMETHEUS_PORT)
        code, other = await asyncio.to_thread(get, prometheus, "/metrics")
        assert code == 200 and "# TYPE" in other
        assert (await asyncio.to_thread(get, http, "/nope"))[0] == 404
        assert (await asyncio.to_thread(get, http, "/healthz", "POST"))[0] == 405

        nats_server.stop()
        body = await answer(http, "/readyz", 503, "unready without NATS")
        assert "NATS connection lost" in body
        assert await asyncio.to_thread(get, http, "/healthz") == (200, "ok\n")  # alive
        assert proc.returncode is None
    finally:
        proc.terminate()
        _out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()[-2000:]
