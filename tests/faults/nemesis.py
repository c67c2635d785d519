"""The soak's nemesis: faults on a random schedule drawn from one seed, several at a time.

Every fault is inject, hold for a drawn while, heal, and both ends go on the timeline. At
most one fault per target at a time; the NATS nodes count as one target (two nodes down
leave the R3 streams without a quorum: a longer outage, not a different one) and so do
PostgreSQL's faults. Holding a stream at its storage limit is simulated by lowering its
limits, and services refuse, by design, to start on a stream whose limits differ from the
catalogue's (a full stream keeps its configuration): so a killed service is restarted once
no stream is held, and no stream is held while a restarted service is still starting.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from fleet import System

from sriov.common import subjects
from sriov.common.bus import Bus

KINDS = ("kill", "stop", "pg-restart", "partition", "stream-limit", "pg-connections")
LIMITED_STREAMS = (
    subjects.STREAM_PLACEMENT,
    subjects.STREAM_PLACEMENT_REQUESTS,
    subjects.STREAM_STATE,
    subjects.STREAM_HOST_EVENTS,
)


@dataclass
class Nemesis:
    system: System
    bus: Bus
    rng: random.Random
    t0: float = field(default_factory=time.monotonic)
    gap_s: tuple[float, float] = (1.0, 5.0)
    """Pause between two injections."""
    hold_s: tuple[float, float] = (1.0, 8.0)
    """How long a fault lasts."""
    kinds: tuple[str, ...] = KINDS
    timeline: list[str] = field(default_factory=list)
    injected: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)
    """Faults that could not be injected or healed (the soak reports them as violations)."""
    _busy: set[str] = field(default_factory=set)
    _limited: int = 0
    _starting: int = 0

    def note(self, text: str) -> None:
        """Onto the timeline, and printed (an unattended soak's log shows where it is)."""
        line = f"{time.monotonic() - self.t0:8.1f}s  {text}"
        self.timeline.append(line)
        print(line, flush=True)

    async def run(self, stop: asyncio.Event) -> float:
        """Inject until ``stop``; then wait for every fault to heal. Returns when the last did."""
        running: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(*self.gap_s))
            if stop.is_set():
                break
            kind = self.rng.choice(self.kinds)
            target, fault = self._draw(kind)
            if target in self._busy:
                continue
            self._busy.add(target)
            task = asyncio.create_task(
                self._one(kind, target, fault, self.rng.uniform(*self.hold_s))
            )
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running)
        return time.monotonic()

    async def _one(
        self, kind: str, target: str, fault: Callable[[float], Awaitable[str]], hold: float
    ) -> None:
        self.injected[kind] += 1
        try:
            self.note(f"inject {kind} {target} for {hold:.1f}s")
            self.note(f"healed {kind} {target}: {await fault(hold)}")
        except Exception as exc:  # a fault we could not inject or heal is worth a report
            self.errors.append(f"{kind} {target}: {type(exc).__name__}: {exc}")
            self.note(f"FAILED {kind} {target}: {exc}")
        finally:
            self._busy.discard(target)

    def _draw(self, kind: str) -> tuple[str, Callable[[float], Awaitable[str]]]:
        fleet, cluster, pg = self.system.fleet, self.system.cluster, self.system.pg
        if kind in ("kill", "stop"):
            names = [p.name for p in fleet.procs] + [n.name for n in cluster.nodes] + ["postgres"]
            name = self.rng.choice(names)
            node = next((n for n in cluster.nodes if n.name == name), None)
            target = "nats" if node else "pg" if name == "postgres" else name
            if kind == "stop":
                pid = (
                    node.proc if node else pg.proc if name == "postgres" else fleet.proc(name).popen
                )
                return target, lambda hold: self._freeze(name, pid.pid if pid else 0, hold)
            if node is not None:
                return target, lambda hold: self._kill_node(cluster.nodes.index(node), hold)
            if name == "postgres":
                return target, lambda hold: self._pg_down(hold, kill=True)
            return target, lambda hold: self._kill_proc(name, hold)
        if kind == "pg-restart":
            return "pg", lambda hold: self._pg_down(hold, kill=False)
        if kind == "partition":
            i = self.rng.randrange(len(cluster.nodes))
            return "nats", lambda hold: self._partition(i, hold)
        if kind == "stream-limit":
            stream = self.rng.choice(LIMITED_STREAMS)
            return "stream", lambda hold: self._stream_limit(stream, hold)
        return "pg", self._hold_connections

    # --- the faults (each returns what it did, for the timeline) ------------------------------
    async def _freeze(self, name: str, pid: int, hold: float) -> str:
        os.killpg(pid, signal.SIGSTOP)
        await asyncio.sleep(hold)
        os.killpg(pid, signal.SIGCONT)
        return f"{name} continued"

    async def _kill_proc(self, name: str, hold: float) -> str:
        fleet = self.system.fleet
        await asyncio.to_thread(fleet.kill, name)
        await asyncio.sleep(hold)
        while self._limited:
            await asyncio.sleep(0.2)
        self._starting += 1  # no await since the check: no stream gets held meanwhile
        try:
            starts = fleet.log(name).count(" started (instance ")
            proc = fleet.restart(name)
            deadline = time.monotonic() + 120
            while fleet.log(name).count(" started (instance ") == starts:
                if proc.popen.poll() is not None or time.monotonic() > deadline:
                    break  # a death is the soak's finding (obituaries), not a hang here
                await asyncio.sleep(0.2)
        finally:
            self._starting -= 1
        return f"{name} restarted"

    async def _kill_node(self, index: int, hold: float) -> str:
        node = self.system.cluster.nodes[index]
        await asyncio.to_thread(node.kill)
        await asyncio.sleep(hold)
        node.proc = None
        await asyncio.to_thread(node.start)
        return f"{node.name} restarted"

    async def _pg_down(self, hold: float, kill: bool) -> str:
        pg = self.system.pg
        await asyncio.to_thread(pg.kill if kill else pg.stop)
        await asyncio.sleep(hold)
        await asyncio.to_thread(pg.start)
        return "PostgreSQL started"

    async def _partition(self, index: int, hold: float) -> str:
        cluster = self.system.cluster
        await asyncio.to_thread(cluster.partition, index)
        await asyncio.sleep(hold)
        await asyncio.to_thread(cluster.partition, index, False)
        return f"{cluster.nodes[index].name}'s route link up"

    async def _stream_limit(self, stream: str, hold: float) -> str:
        """Hold ``stream`` at its storage limit: its size now, new messages refused."""
        while self._starting:
            await asyncio.sleep(0.2)
        self._limited += 1  # no await since the check: no service starts meanwhile
        try:
            try:  # refused while another fault has the cluster re-electing: not a finding
                info = await self._js_api(("STREAM", "INFO", stream), {})
            except Exception as exc:
                return f"not injected ({exc})"
            original = info["config"]
            full = {**original, "max_bytes": max(1, info["state"]["bytes"]), "discard": "new"}

            async def restore() -> None:
                await self._retry(lambda: self._js_api(("STREAM", "UPDATE", stream), original))

            try:
                await self._js_api(("STREAM", "UPDATE", stream), full)
            except Exception as exc:
                # a 503 or a timeout while the cluster re-elects does not say the update was
                # not applied (seed 7 left a stream limited that way, and a restarted service
                # refused it): put the original back all the same
                await restore()
                return f"not injected ({exc}); its limits put back to be sure"
            try:
                await asyncio.sleep(hold)
            finally:
                await restore()
        finally:
            self._limited -= 1
        return f"{stream} limits restored"

    async def _hold_connections(self, hold: float) -> str:
        """PostgreSQL out of connections: a holder takes every slot it can get."""
        held: list[asyncpg.Connection] = []
        try:
            while len(held) < 500:
                try:
                    held.append(await asyncpg.connect(self.system.pg.dsn, timeout=5))
                except (asyncpg.TooManyConnectionsError, asyncpg.CannotConnectNowError):
                    break
            await asyncio.sleep(hold)
        finally:
            await asyncio.gather(*(c.close(timeout=5) for c in held), return_exceptions=True)
        return f"released {len(held)} connections"

    async def _js_api(self, api: tuple[str, ...], body: object) -> dict[str, Any]:
        reply = await self.bus.request_raw(
            subjects.js_api(*api), json.dumps(body).encode(), timeout=5
        )
        data: dict[str, Any] = json.loads(reply.data)
        if "error" in data:
            raise RuntimeError(f"{api}: {data['error']}")
        return data

    async def _retry(self, call: Callable[[], Awaitable[object]], for_s: float = 120) -> None:
        """Heal through the other faults (a node down, a partition): retry until it works."""
        deadline = time.monotonic() + for_s
        while True:
            try:
                await call()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
