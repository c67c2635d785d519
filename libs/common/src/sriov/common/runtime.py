"""Process scaffolding every service shares: settings, signals, bus, micro service, shutdown.

A service's ``main`` parses its settings (a ``BusSettings`` subclass in its ``settings.py``,
read with :func:`sriov.common.config.parse_args`), then hands :func:`run` a body coroutine that
registers endpoints and runs its loops until ``ctx.stop`` is set (SIGTERM or SIGINT).
Everything opened is closed by one ``AsyncExitStack`` in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any, Self

import msgspec

from sriov.common import catalog, probes, telemetry
from sriov.common.bus import DEFAULT_CONCURRENCY, STREAMS, Bus, ServiceHost, StreamSpec
from sriov.common.config import Settings, option, setting_error
from sriov.common.errors import BusError, ConfigError, SriovError
from sriov.common.subjects import STREAM_DEAD_LETTER

log = logging.getLogger(__name__)
VERSION = "0.1.0"


def default_instance_id(pid: int | None = None) -> str:
    """A replica's id where none is given: unique per process on a host (``pid``: another
    process's, as a launcher finds its children in service discovery)."""
    return f"{socket.gethostname()}-{pid or os.getpid()}"


class BusSettings(Settings):
    """NATS (also from SRIOV_NATS_* environment variables)"""

    nats_url: Annotated[str, option("NATS URL(s), comma separated (a cluster)")] = (
        "nats://127.0.0.1:4222"
    )
    nats_user: Annotated[str | None, option("NATS user")] = None
    nats_password: Annotated[str | None, option("NATS password")] = None
    nats_creds: Annotated[str | None, option("NATS .creds file (JWT + nkey)")] = None
    nats_nkey_seed: Annotated[str | None, option("NATS user nkey seed (SU...), a secret")] = None
    """What ``sriovctl nats-config`` writes into each identity's environment file."""
    nats_tls_ca: Annotated[str | None, option("CA file to verify the NATS server")] = None
    nats_tls_cert: Annotated[str | None, option("client certificate for NATS")] = None
    nats_tls_key: Annotated[str | None, option("client key for NATS")] = None
    nats_inbox_prefix: Annotated[str | None, option("reply inbox prefix this identity may use")] = (
        None
    )
    """Per-host inbox prefix, so a host's credentials can be limited to its own replies."""
    stream_replicas: Annotated[int, option("replicas of the streams created (3 in a cluster)")] = 1
    provision_streams: Annotated[bool, option("create/update the streams at start", flag=None)] = (
        True
    )
    """Host agents' credentials may not create streams; then an identity that may (the
    stream admin, inventory or scheduler) provisions them."""
    instance_id: Annotated[str, option("replica id for logs, traces and service discovery")] = (
        msgspec.field(default_factory=default_instance_id)
    )
    request_concurrency: Annotated[
        int, option("requests of one kind served at once; more wait their turn", ge=1, le=4096)
    ] = DEFAULT_CONCURRENCY
    """Per endpoint (each ``nats.micro`` endpoint runs up to this many requests as tasks), and
    for the scheduler's JetStream inbox of place/attach/release requests."""
    http_port: Annotated[int | None, option("serve /healthz /readyz /metrics (0: any port)")] = None
    """Port of the HTTP probes: 0 picks a free one, unset serves none."""
    http_host: Annotated[str, option("address the HTTP probes listen on")] = "127.0.0.1"
    """0.0.0.0 in a pod, where the kubelet calls the pod's IP."""

    def check(self) -> Self:
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            raise setting_error(type(self), "http_port", "use 0 to 65535", self.http_port)
        return self

    @property
    def urls(self) -> list[str]:
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]


class DatabaseSettings(BusSettings):
    """PostgreSQL (also from SRIOV_DATABASE_URL)"""

    database_url: Annotated[str, option("PostgreSQL DSN; every replica uses the same")] = ""
    db_connect_wait_s: Annotated[
        float,
        option("seconds to wait at start for PostgreSQL to answer", ge=0, flag="--db-connect-wait"),
    ] = 60.0
    """A replica started while PostgreSQL restarts (a fleet-wide restart) waits, not exits."""

    def check(self) -> Self:
        super().check()
        if not self.database_url:
            raise ConfigError(
                "no database: give --database-url or set SRIOV_DATABASE_URL "
                "(e.g. postgresql://user@127.0.0.1:5432/sriov)",
                key="database_url",
            )
        return self


class ServiceFailed(SriovError):
    """A service stopped because one of its loops crashed (exit code 1)."""

    code = "service_failed"


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; True when stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


class Jitter:
    """Delays of a periodic timer that many daemons start at once (a fleet-wide restart, a
    NATS upgrade): the first is anywhere between ``earliest`` of an interval and a whole
    one, each next one within ``fraction`` of an interval, so the fleet's timers spread over
    the interval instead of firing together.

    ``earliest`` is for a timer whose work was just done at start (hostd's start snapshot is
    a full resync): a first run seconds later would repeat it for nothing.
    ``seed`` (the host and the timer's name) makes a daemon's delays reproducible and
    different from its neighbours'. The interval is read at each call (a reload may change it).
    """

    def __init__(self, seed: str, fraction: float = 0.1, earliest: float = 0.0) -> None:
        if not 0 <= fraction < 1:
            raise ValueError(f"jitter fraction {fraction} must be in [0, 1)")
        if not 0 <= earliest <= 1:
            raise ValueError(f"jitter earliest {earliest} must be in [0, 1]")
        self.fraction = fraction
        self.earliest = earliest
        self._rng = random.Random(seed)
        self._started = False

    def delay(self, interval_s: float) -> float:
        if not self._started:
            self._started = True
            return self._rng.uniform(self.earliest * interval_s, interval_s)
        return interval_s * self._rng.uniform(1 - self.fraction, 1 + self.fraction)


async def connect_bus(settings: BusSettings, name: str) -> Bus:
    return await Bus.connect(
        settings.urls,
        name=f"{name}/{settings.instance_id}",
        source=f"sriov/{name}/{settings.instance_id}",
        user=settings.nats_user,
        password=settings.nats_password,
        creds_file=settings.nats_creds,
        nkey_seed=settings.nats_nkey_seed,
        tls_ca=settings.nats_tls_ca,
        tls_cert=settings.nats_tls_cert,
        tls_key=settings.nats_tls_key,
        inbox_prefix=settings.nats_inbox_prefix,
    )


@dataclass
class ServiceContext:
    name: str
    bus: Bus
    service: ServiceHost
    stop: asyncio.Event
    stack: contextlib.AsyncExitStack
    settings: Any
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)
    """Background loops that died: the process then exits non-zero, so a supervisor
    restarts it."""

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """A long-lived background loop; its crash stops the whole service (no silent death)."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)

        def done(t: asyncio.Task[Any]) -> None:
            if not t.cancelled() and t.exception() is not None and not self.stop.is_set():
                log.error("%s crashed: %r; stopping", name, t.exception(), exc_info=t.exception())
                self.crashed.append(name)
                self.stop.set()

        task.add_done_callback(done)
        self.tasks.append(task)
        return task


Body = Callable[[ServiceContext], Awaitable[None]]


async def serve(
    name: str,
    description: str,
    settings: BusSettings,
    body: Body,
    *,
    metadata: dict[str, str] | None = None,
    ensure_streams: bool = True,
    stop: asyncio.Event | None = None,
) -> None:
    """Connect, register the micro service, run ``body`` until stopped, then clean up."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    tele = telemetry.setup(name, settings.instance_id)
    ready = _Readiness()
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(_remove_signal_handlers, loop)
        stack.callback(tele.shutdown)
        http = None
        if settings.http_port is not None:  # first: /healthz answers while NATS is slow
            http = probes.ProbeServer(ready.reason, metrics=tele.metrics_port is not None)
            await http.start(settings.http_host, settings.http_port)
            stack.push_async_callback(http.close)
        bus = await connect_bus(settings, name)
        ready.bus = bus
        stack.push_async_callback(bus.close)
        if ensure_streams and settings.provision_streams:
            try:
                await bus.ensure_streams(replicas=settings.stream_replicas)
            except BusError as exc:
                # Publishing still works if someone else provisioned the streams.
                log.warning("streams not provisioned by this identity: %s", exc)
        if ensure_streams:  # a tampered or missing stream stops the start, naming it
            await bus.verify_streams(streams_to_verify(name), replicas=settings.stream_replicas)
        meta = {"instance": settings.instance_id, **(metadata or {})}
        if tele.metrics_port:
            meta["metrics_port"] = str(tele.metrics_port)
        if http is not None:
            meta["http_port"] = str(http.port)
        # announced after the body added its endpoints: discovery then means "serving"
        svc = ServiceHost.prepare(
            bus, name, VERSION, description, meta, concurrency=settings.request_concurrency
        )
        stack.push_async_callback(svc.stop)
        ctx = ServiceContext(name, bus, svc, stop, stack, settings)
        await body(ctx)
        await svc.announce()
        await bus.flush()  # the server has the subscriptions: requests reach us from now on
        log.info("%s %s started (instance %s)", name, VERSION, settings.instance_id)
        ready.registered = True
        await stop.wait()
        ready.registered = False
        log.info("%s stopping", name)
        await svc.stop()  # requests in flight finish while the loops they wake still run
        for task in ctx.tasks:
            task.cancel()
        if ctx.tasks:
            # Bounded: a cancellation swallowed inside a library must not hang shutdown.
            _done, pending = await asyncio.wait(ctx.tasks, timeout=10)
            for task in pending:
                log.warning("%s did not stop within 10s; leaving it", task.get_name())
    if ctx.crashed:
        raise ServiceFailed(f"{name} stopped because {', '.join(ctx.crashed)} crashed")


def streams_to_verify(name: str) -> list[StreamSpec]:
    """The streams a service (``sriov-inventory``...) uses, and the dead-letter stream when it
    consumes any (its durables copy what they give up on there)."""
    actor = name.removeprefix("sriov-")
    used = catalog.streams_of(actor)
    if any(actor in c.subscribers and c.stream for c in catalog.CHANNELS):
        used.append(STREAM_DEAD_LETTER)
    return [spec for spec in STREAMS if spec.name in used]


@dataclass
class _Readiness:
    """What ``/readyz`` reports: connected to NATS, service and endpoints registered. Not
    the database: an outage there makes every replica answer ``unavailable`` and recover
    by itself, and taking them all out of the Service at once would not help."""

    bus: Bus | None = None
    registered: bool = False

    def reason(self) -> str | None:
        if self.bus is None:
            return "connecting to NATS"
        if not self.bus.is_connected:
            return "NATS connection lost, reconnecting"
        return None if self.registered else "starting or stopping"


def _remove_signal_handlers(loop: asyncio.AbstractEventLoop) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(sig)


def run(main: Callable[[], Coroutine[Any, Any, None]], prog: str) -> None:
    """``asyncio.run`` with a readable one-line error and exit code 2 for our errors."""
    telemetry.setup_logging()
    try:
        asyncio.run(main())
    except ServiceFailed as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except SriovError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        pass
