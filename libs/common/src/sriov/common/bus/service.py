"""``nats.micro`` services whose endpoints take and return msgspec messages, their errors,
and their discovery (``$SRV``).

Each endpoint serves up to ``concurrency`` requests at once, each as its own task: nats-py runs
one subscription's callbacks one at a time, so micro's callback here only waits for a free slot
and starts the task. A request that finds every slot taken waits in the subscription's queue
(backpressure, never dropped); a stop answers every request already delivered before the
connection closes. Because micro's own counters would time the spawn and never see an error
(we answer errors ourselves), the statistics on ``$SRV.STATS`` are ours, per request.

Domain errors become service errors with a stable code and a readable message, never a
Python repr; :func:`raise_service_error` turns them back into our error types on the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, Service, ServiceConfig, ServiceStats
from opentelemetry.trace import SpanKind

from sriov.common import subjects as subj
from sriov.common import telemetry
from sriov.common.errors import SriovError, error_from_code
from sriov.common.schemas import Codec, ErrorReply, Message, codec, encode

from .headers import HDR_ERROR, HDR_ERROR_CODE, HDR_SRIOV_CODE

if TYPE_CHECKING:
    from .connection import Bus

log = logging.getLogger(__name__)

Handler = Callable[[Any, Mapping[str, str]], Awaitable[Message]]

DEFAULT_CONCURRENCY = 16
"""Requests one endpoint serves at once unless the service's settings say otherwise."""
DRAIN_TIMEOUT_S = 10.0
"""How long a stop waits for the requests in flight before it cancels them (their callers
time out and retry, as after a crash)."""


@dataclass
class EndpointLoad:
    """One endpoint's free slots and its statistics, counted per request when it is answered:
    a request answered with an error is an error (``last_error`` names its code)."""

    slots: asyncio.Semaphore
    limit: int
    requests: int = 0
    errors: int = 0
    last_error: str | None = None
    processing_ns: int = 0
    in_flight: int = 0

    def answered(self, elapsed_ns: int, error: str | None) -> None:
        self.requests += 1
        self.processing_ns += elapsed_ns
        if error is not None:
            self.errors += 1
            self.last_error = error


class _MicroService(Service):
    """micro's service with our per-request statistics and a stop that drains.

    Reaches into nats-py 2.16's ``Service._endpoints`` and ``Endpoint._subscription``: micro
    stops an endpoint by unsubscribing, which drops the requests already delivered to us and
    waiting for a slot; a drain starts them. ``test_service.py`` fails if that changes."""

    def __init__(self, client: Client, config: ServiceConfig, loads: dict[str, EndpointLoad]):
        super().__init__(client, config)
        self._loads = loads

    def stats(self) -> ServiceStats:
        stats = super().stats()
        for ep in stats.endpoints:
            load = self._loads.get(ep.subject)
            if load is None:
                continue
            ep.num_requests, ep.num_errors = load.requests, load.errors
            ep.last_error = load.last_error
            ep.processing_time = load.processing_ns
            ep.average_processing_time = load.processing_ns // max(1, load.requests)
            ep.data = {"in_flight": load.in_flight, "concurrency": load.limit}
        return stats

    async def drain_endpoints(self) -> None:
        """No new requests from the server; those already here are started."""
        endpoints, self._endpoints = self._endpoints, []
        subs = [ep._subscription for ep in endpoints if ep._subscription is not None]
        await asyncio.gather(*(sub.drain() for sub in subs), return_exceptions=True)


class ServiceHost:
    """A ``nats.micro`` service whose endpoints take and return msgspec messages.

    Built unannounced (:meth:`prepare`), it collects endpoints and registers with NATS only
    at :meth:`announce`: a service that answers discovery (``$SRV.PING``/``INFO``) serves
    every endpoint it lists, so a client that waits for it never finds "no responders"."""

    def __init__(
        self, bus: Bus, config: ServiceConfig, concurrency: int = DEFAULT_CONCURRENCY
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency of service {config.name} is {concurrency}: use 1+")
        self.bus = bus
        self.config = config
        self.concurrency = concurrency
        self.service: _MicroService | None = None
        self.loads: dict[str, EndpointLoad] = {}
        """Per endpoint subject: what ``$SRV.STATS`` reports."""
        self._pending: list[EndpointConfig] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._abandoned = False

    @classmethod
    def prepare(
        cls,
        bus: Bus,
        name: str,
        version: str,
        description: str,
        metadata: dict[str, str],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> ServiceHost:
        config = ServiceConfig(
            name=name, version=version, description=description, metadata=metadata
        )
        return cls(bus, config, concurrency)

    @classmethod
    async def start(
        cls, bus: Bus, name: str, version: str, description: str, metadata: dict[str, str]
    ) -> ServiceHost:
        """Prepared and announced at once (endpoints added later appear as they come)."""
        host = cls.prepare(bus, name, version, description, metadata)
        await host.announce()
        return host

    async def announce(self) -> None:
        """Register with NATS, with every endpoint added so far."""
        if self.service is not None:
            return
        # the package's own client: micro registers on it
        self.service = _MicroService(self.bus._nc, self.config, self.loads)
        await self.service.start()
        pending, self._pending = self._pending, []
        for endpoint in pending:
            await self.service.add_endpoint(endpoint)

    async def add_endpoint(
        self,
        group: str,
        name: str,
        request: type[Message] | Codec[Any],
        handler: Handler,
        *,
        queue_group: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Serve ``<group>.<name>``: decode, call ``handler``, encode the reply or error.

        Replicas share ``queue_group`` (the service's name unless given), so one answers."""
        req_codec = request if isinstance(request, Codec) else codec(request)
        sub = subj.endpoint(group, name)
        load = self.loads[sub.subject] = EndpointLoad(
            asyncio.Semaphore(self.concurrency), self.concurrency
        )

        async def serve(req: Request) -> None:
            started = time.perf_counter_ns()
            error: str | None = None
            with telemetry.messaging_span(
                sub.template, req.subject, SpanKind.SERVER, req.headers
            ) as span:
                try:
                    try:
                        msg = req_codec.decode(req.data)
                        reply = await handler(msg, req.headers or {})
                    except SriovError as exc:
                        telemetry.record_error(span, exc)
                        error = f"{exc.code}: {exc.message}"[:1000]
                        await respond_error(req, exc)
                    except Exception as exc:
                        telemetry.record_error(span, exc)
                        log.exception("endpoint %s failed", sub.subject)
                        internal = SriovError(
                            f"internal error in {sub.subject}: {type(exc).__name__}"
                        )
                        error = f"{internal.code}: {internal.message}"
                        await respond_error(req, internal)
                    else:
                        await req.respond(
                            encode(reply), headers={"content-type": "application/json"}
                        )
                except Exception as exc:  # the answer could not be sent (connection lost)
                    error = error or f"unanswered: {type(exc).__name__}"
                    log.warning("endpoint %s could not answer: %r", sub.subject, exc)
                finally:
                    load.answered(time.perf_counter_ns() - started, error)

        async def accept(req: Request) -> None:
            await load.slots.acquire()  # all busy: this subscription's queue holds the rest
            if self._abandoned:
                load.slots.release()
                return
            load.in_flight += 1
            task = asyncio.create_task(serve(req), name=f"request {sub.subject}")
            self._tasks.add(task)

            def done(t: asyncio.Task[None]) -> None:
                self._tasks.discard(t)
                load.in_flight -= 1
                load.slots.release()

            task.add_done_callback(done)

        endpoint = EndpointConfig(
            name=subj.endpoint_name(sub.template),
            subject=sub.subject,
            handler=accept,
            queue_group=queue_group or self.config.name,
            metadata=metadata or {"request": req_codec.name},
        )
        if self.service is None:
            self._pending.append(endpoint)
        else:
            await self.service.add_endpoint(endpoint)

    async def stop(self) -> None:
        """Stop taking requests, answer those already here, then leave discovery."""
        if self.service is None or self._stopping:
            return
        self._stopping = True
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await self.service.drain_endpoints()
                while self._tasks:
                    await asyncio.wait(set(self._tasks))
        except TimeoutError:
            self._abandoned = True
            log.warning(
                "%s: %d request(s) still running after %.0fs; cancelling them",
                self.config.name, len(self._tasks), DRAIN_TIMEOUT_S,
            )  # fmt: skip
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                await asyncio.wait(set(self._tasks))
        with contextlib.suppress(Exception):
            await self.service.stop()


async def respond_error(req: Request, exc: SriovError) -> None:
    body = ErrorReply(
        code=exc.code,
        message=exc.message if len(exc.message) <= 2000 else exc.message[:2000] + "…",
        details={k: v for k, v in exc.details.items() if isinstance(v, str | int | float | bool)},
    )
    await req.respond(
        encode(body),
        headers={
            HDR_ERROR: exc.message[:1000].replace("\r", " ").replace("\n", " "),
            HDR_ERROR_CODE: str(exc.status),
            HDR_SRIOV_CODE: exc.code,
            "content-type": "application/json",
        },
    )


def raise_service_error(headers: Mapping[str, str] | None, data: bytes) -> None:
    """Turn a micro service error reply into our error type (no-op for a normal reply)."""
    if not headers or HDR_ERROR_CODE not in headers:
        return
    message = headers.get(HDR_ERROR, "service error")
    code = headers.get(HDR_SRIOV_CODE, "")
    details: dict[str, Any] = {}
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        body = msgspec.json.decode(data, type=ErrorReply)
        code, message, details = body.code, body.message, dict(body.details)
    raise error_from_code(code or "internal", message, **details)


async def discover(nc: Client, verb: str, wait: float) -> list[dict[str, Any]]:
    """Every running micro service's answer to ``$SRV.<verb>`` within ``wait`` seconds."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    answers: list[dict[str, Any]] = []
    try:
        await nc.publish(f"$SRV.{verb}", b"", reply=inbox)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                m = await sub.next_msg(timeout=left)
            except nats.errors.TimeoutError:
                break
            if not m.data:  # "no responders" status: nothing is running
                continue
            with contextlib.suppress(msgspec.DecodeError):
                answers.append(msgspec.json.decode(m.data))
    finally:
        await sub.unsubscribe()
    return answers
