"""``nats.micro`` services whose endpoints take and return msgspec messages, their errors,
and their discovery (``$SRV``).

Domain errors become service errors with a stable code and a readable message, never a
Python repr; :func:`raise_service_error` turns them back into our error types on the caller.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec
import nats.errors
import nats.micro
from nats.aio.client import Client
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, Service, ServiceConfig
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


class ServiceHost:
    """A ``nats.micro`` service whose endpoints take and return msgspec messages.

    Built unannounced (:meth:`prepare`), it collects endpoints and registers with NATS only
    at :meth:`announce`: a service that answers discovery (``$SRV.PING``/``INFO``) serves
    every endpoint it lists, so a client that waits for it never finds "no responders"."""

    def __init__(self, bus: Bus, config: ServiceConfig) -> None:
        self.bus = bus
        self.config = config
        self.service: Service | None = None
        self._pending: list[EndpointConfig] = []

    @classmethod
    def prepare(
        cls, bus: Bus, name: str, version: str, description: str, metadata: dict[str, str]
    ) -> ServiceHost:
        config = ServiceConfig(
            name=name, version=version, description=description, metadata=metadata
        )
        return cls(bus, config)

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
        self.service = await nats.micro.add_service(self.bus._nc, config=self.config)
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

        async def serve(req: Request) -> None:
            with telemetry.messaging_span(
                sub.template, req.subject, SpanKind.SERVER, req.headers
            ) as span:
                try:
                    msg = req_codec.decode(req.data)
                    reply = await handler(msg, req.headers or {})
                except SriovError as exc:
                    telemetry.record_error(span, exc)
                    await respond_error(req, exc)
                    return
                except Exception as exc:
                    telemetry.record_error(span, exc)
                    log.exception("endpoint %s failed", sub.subject)
                    await respond_error(
                        req, SriovError(f"internal error in {sub.subject}: {type(exc).__name__}")
                    )
                    return
                await req.respond(encode(reply), headers={"content-type": "application/json"})

        endpoint = EndpointConfig(
            name=subj.endpoint_name(sub.template),
            subject=sub.subject,
            handler=serve,
            queue_group=queue_group or self.config.name,
            metadata=metadata or {"request": req_codec.name},
        )
        if self.service is None:
            self._pending.append(endpoint)
        else:
            await self.service.add_endpoint(endpoint)

    async def stop(self) -> None:
        if self.service is not None:
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
