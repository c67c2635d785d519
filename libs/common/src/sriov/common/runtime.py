"""Process scaffolding every service shares: settings, signals, bus, micro service, shutdown.

A service's ``main`` parses its options, then hands :func:`run` a body coroutine that
registers endpoints and runs its loops until ``ctx.stop`` is set (SIGTERM or SIGINT).
Everything opened is closed by one ``AsyncExitStack`` in reverse order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sriov.common import probes, telemetry
from sriov.common.bus import Bus, ServiceHost
from sriov.common.config import Settings, from_env
from sriov.common.errors import BusError, SriovError

log = logging.getLogger(__name__)
VERSION = "0.1.0"


class BusSettings(Settings):
    """How a process reaches NATS. Environment: ``SRIOV_NATS_URL`` and friends."""

    nats_url: str = "nats://127.0.0.1:4222"
    """One URL or several separated by commas (a cluster)."""
    nats_user: str | None = None
    nats_password: str | None = None
    nats_creds: str | None = None
    """A ``.creds`` file (JWT + nkey) for decentralised auth."""
    nats_tls_ca: str | None = None
    nats_tls_cert: str | None = None
    nats_tls_key: str | None = None
    nats_inbox_prefix: str | None = None
    """Per-host inbox prefix, so a host's credentials can be limited to its own replies."""
    stream_replicas: int = 1
    """Replicas of the JetStream streams this process creates (3 in a NATS cluster)."""
    provision_streams: bool = True
    """Create/update the streams at start. Host agents' credentials may not; then an
    identity that may (the stream admin, inventory or scheduler) provisions them."""
    instance_id: str = msgspec.field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}"
    )
    http_port: int | None = None
    """Port of the HTTP probes (/healthz, /readyz, /metrics): 0 picks a free one, unset
    serves none (``SRIOV_HTTP_PORT``)."""
    http_host: str = "127.0.0.1"
    """Address the probes listen on; 0.0.0.0 in a pod, where the kubelet calls its IP."""

    @property
    def urls(self) -> list[str]:
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]


class ServiceFailed(SriovError):
    """A service stopped because one of its loops crashed (exit code 1)."""

    code = "service_failed"


def _default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def add_bus_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("NATS (also from SRIOV_NATS_* environment variables)")
    g.add_argument("--nats-url", help="NATS URL(s), comma separated")
    g.add_argument("--nats-user")
    g.add_argument("--nats-password")
    g.add_argument("--nats-creds", help="NATS .creds file")
    g.add_argument("--nats-tls-ca")
    g.add_argument("--nats-tls-cert")
    g.add_argument("--nats-tls-key")
    g.add_argument("--nats-inbox-prefix", help="reply inbox prefix this identity may use")
    g.add_argument("--stream-replicas", type=int, help="replicas of the streams created")
    g.add_argument("--instance-id", help="replica id for logs, traces and service discovery")
    h = parser.add_argument_group("HTTP probes (also SRIOV_HTTP_PORT, SRIOV_HTTP_HOST)")
    h.add_argument("--http-port", type=int, help="serve /healthz /readyz /metrics (0: any port)")
    h.add_argument("--http-host", help="address to listen on (default 127.0.0.1)")


def settings_from_args(
    cls: type[Any], args: argparse.Namespace, parser: argparse.ArgumentParser
) -> Any:
    """Settings from the environment, overridden by the options given; an invalid value is
    reported with the option's own spelling (``--reservation-ttl``, not the field's)."""
    fields = {f for f in cls.__struct_fields__}
    # argparse has no public list of its actions; _actions is stable since Python 3.2
    options = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    return from_env(cls, options=options, **{k: v for k, v in vars(args).items() if k in fields})


async def connect_bus(settings: BusSettings, name: str) -> Bus:
    return await Bus.connect(
        settings.urls,
        name=f"{name}/{settings.instance_id}",
        source=f"sriov/{name}/{settings.instance_id}",
        user=settings.nats_user,
        password=settings.nats_password,
        creds_file=settings.nats_creds,
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
        meta = {"instance": settings.instance_id, **(metadata or {})}
        if tele.metrics_port:
            meta["metrics_port"] = str(tele.metrics_port)
        if http is not None:
            meta["http_port"] = str(http.port)
        svc = await ServiceHost.start(bus, name, VERSION, description, meta)
        stack.push_async_callback(svc.stop)
        ctx = ServiceContext(name, bus, svc, stop, stack, settings)
        log.info("%s %s started (instance %s)", name, VERSION, settings.instance_id)
        await body(ctx)
        ready.registered = True
        await stop.wait()
        ready.registered = False
        log.info("%s stopping", name)
        for task in ctx.tasks:
            task.cancel()
        if ctx.tasks:
            # Bounded: a cancellation swallowed inside a library must not hang shutdown.
            _done, pending = await asyncio.wait(ctx.tasks, timeout=10)
            for task in pending:
                log.warning("%s did not stop within 10s; leaving it", task.get_name())
    if ctx.crashed:
        raise ServiceFailed(f"{name} stopped because {', '.join(ctx.crashed)} crashed")


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
        # Bus has no public connection state yet: the one place outside bus that asks nats.
        if not self.bus.nc.is_connected:
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
