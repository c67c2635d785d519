"""What every command needs: where NATS is and a connected bus for one call."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sriov.common import telemetry
from sriov.common.bus import Bus
from sriov.common.config import from_env
from sriov.common.errors import SriovError
from sriov.common.runtime import BusSettings, connect_bus

T = TypeVar("T")
DEFAULT_STATE_DIR = "state"


def stack_nats_url() -> str | None:
    """The URL a local ``sriov-stack up`` wrote, so the demo works with no settings."""
    state = Path(os.environ.get("SRIOV_STATE_DIR", DEFAULT_STATE_DIR)) / "stack.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        return str(json.loads(state.read_text())["nats_url"])
    return None


@dataclass
class CliContext:
    nats_url: str | None
    timeout: float

    def settings(self) -> BusSettings:
        url = self.nats_url or os.environ.get("SRIOV_NATS_URL") or stack_nats_url()
        return from_env(BusSettings, nats_url=url, instance_id="sriovctl")

    @contextlib.asynccontextmanager
    async def bus(self) -> AsyncIterator[Bus]:
        bus = await connect_bus(self.settings(), "sriovctl")
        try:
            yield bus
        finally:
            await bus.close()

    def run(self, fn: Callable[[Bus], Awaitable[T]]) -> T:
        """Run one async call with a connected bus; our errors print as one clear line."""
        from sriov.cli.output import fail

        async def go() -> T:
            async with self.bus() as bus:
                return await fn(bus)

        tele = None
        try:
            # The requester's span starts the trace of a placement (when exporters are set);
            # a wrong OTEL_* value is a ConfigError, printed like any other.
            tele = telemetry.setup("sriovctl") if _otel_configured() else None
            return asyncio.run(go())
        except SriovError as exc:
            fail(
                f"{exc} [{exc.code}]", 2 if exc.code in ("invalid_request", "invalid_config") else 1
            )
            raise AssertionError("unreachable") from exc
        finally:
            if tele is not None:
                tele.shutdown()


def _otel_configured() -> bool:
    return any(
        os.environ.get(k)
        for k in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
                  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )  # fmt: skip
