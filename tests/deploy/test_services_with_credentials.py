"""The real inventory and scheduler processes run with their generated credentials.

They start as the manifests start them (console script, settings from ``SRIOV_*``
environment only) on streams the stream admin provisioned, verify them, create their own
durable consumers, register their micro
services and answer the operator; the NATS server logs no permission violation.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.errors import NotFound

BIN = Path(sys.executable).parent
SERVICES = ("sriov-inventory", "sriov-scheduler")


@pytest.fixture
def services(secured_nats: Any, database_url: str, tmp_path: Path) -> Iterator[list[Path]]:
    asyncio.run(secured_nats.provision())
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SRIOV_", "OTEL_"))}
    try:
        for name in SERVICES:
            env = {
                **base,
                **secured_nats.env(name),
                "SRIOV_NATS_URL": secured_nats.url,
                "SRIOV_DATABASE_URL": database_url,
                "SRIOV_INSTANCE_ID": f"{name}-test",
            }
            log = tmp_path / f"{name}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [str(BIN / name)], env=env, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            procs.append((proc, log))
        yield [log for _p, log in procs]
    finally:
        for proc, _log in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, _log in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


HOSTS_LIST = s.endpoint(s.INVENTORY_HOSTS_GROUP, "list")
SCHEDULER_GET = s.endpoint(s.SCHEDULER_GROUP, "get")
CALLED = {"sriov-inventory": HOSTS_LIST.subject, "sriov-scheduler": SCHEDULER_GET.subject}


async def _wait_for_services(ops: Any, logs: list[Path]) -> set[str]:
    """Until each service lists the endpoint the test calls. A service answers discovery as
    soon as it registers, before its body has added the endpoints: waiting for a PING alone
    let the first request find no responder (a flake seen under load)."""
    ready: set[str] = set()
    for _ in range(150):  # bounded: 30 s at most on a loaded machine
        try:
            infos = await ops.discover("INFO", wait=0.2)
        except msgspec.DecodeError:  # Bus.discover chokes on the no-responders status
            await asyncio.sleep(0.2)
            continue
        ready = {
            i["name"]
            for i in infos
            if CALLED.get(i["name"]) in {e.get("subject") for e in i.get("endpoints") or []}
        }
        if set(SERVICES) <= ready:
            return ready
        for log in logs:
            text = log.read_text(errors="replace")
            assert "Traceback" not in text, text[-2000:]
    raise AssertionError(
        f"services did not come up: {ready}; logs:\n"
        + "\n".join(log.read_text(errors="replace")[-1500:] for log in logs)
    )


async def test_services_work_with_only_their_own_permissions(
    secured_nats: Any, services: list[Path]
) -> None:
    ops = await secured_nats.connect("sriov-operator")
    try:
        await _wait_for_services(ops, services)
        hosts = await ops.request(HOSTS_LIST, m.HostListRequest(), m.HostListReply)
        assert hosts.total == 0
        with pytest.raises(NotFound, match="guest g1"):  # an answer: the service error
            await ops.request(SCHEDULER_GET, m.GetRequest(guest_id="g1"), m.PlacementReply)
        for stream in (s.STREAM_HOST_EVENTS, s.STREAM_STATE, s.STREAM_PLACEMENT_REQUESTS):
            info = await ops.stream_info(stream)  # verified by the services at start
            assert info.name == stream
    finally:
        await ops.close()
    violations = [line for line in secured_nats.log.read_text().splitlines() if "Violation" in line]
    assert not violations, "\n".join(violations)
    for log in services:
        assert secured_nats.seed(log.stem) not in log.read_text(errors="replace")
