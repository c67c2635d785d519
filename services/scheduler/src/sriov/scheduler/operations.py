"""The placement operations as the endpoints and the asynchronous consumer call them.

Each one validates the request, makes one store call (one database transaction that also
writes its events to the outbox) and builds the reply; the outbox relay is woken after a
commit. Synchronous callers get errors as service errors; asynchronous ones as Failed events.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import msgspec

from sriov.common import schemas as m
from sriov.common import telemetry
from sriov.common.errors import NotFound, SriovError
from sriov.scheduler import validation as v
from sriov.scheduler.metrics import Metrics
from sriov.scheduler.store import Outcome, Store

R = TypeVar("R")
_encoder = msgspec.json.Encoder()


class Scheduler:
    """The operations of the ``scheduler`` service, over one :class:`Store`."""

    def __init__(
        self,
        store: Store,
        *,
        source: str,
        default_ttl_s: float,
        metrics: Metrics | None = None,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.source = source
        self.default_ttl_s = default_ttl_s
        self.metrics = metrics or Metrics()
        self.on_commit = on_commit

    # --- endpoints (handler(msg, headers) -> reply) -----------------------------------------
    async def place(
        self, req: m.PlaceRequest, headers: Mapping[str, str] | None = None
    ) -> m.PlacementReply:
        return await self._timed("place", "request", self._place(req))

    async def attach(
        self, req: m.AttachRequest, headers: Mapping[str, str] | None = None
    ) -> m.PlacementReply:
        return await self._timed("attach", "request", self._place(req))

    async def release(
        self, req: m.ReleaseRequest, headers: Mapping[str, str] | None = None
    ) -> m.PlacementReply:
        return await self._timed("release", "request", self._release(req))

    async def confirm(
        self, req: m.ConfirmRequest, headers: Mapping[str, str] | None = None
    ) -> m.PlacementReply:
        return await self._timed("confirm", "request", self._confirm(req))

    async def get(
        self, req: m.GetRequest, headers: Mapping[str, str] | None = None
    ) -> m.PlacementReply:
        return await self._timed("get", "request", self._get(req))

    async def cordon(
        self, req: m.CordonRequest, headers: Mapping[str, str] | None = None
    ) -> m.CordonReply:
        return await self._timed("cordon", "request", self.store.cordon(
            _encoder.encode(v.cordon_args(req))))  # fmt: skip

    async def vf_reset(
        self, req: m.VfResetRequest, headers: Mapping[str, str] | None = None
    ) -> m.VfResetReply:
        return await self._timed("vf-reset", "request", self._vf_reset(req))

    async def _vf_reset(self, req: m.VfResetRequest) -> m.VfResetReply:
        reply = await self.store.vf_reset(_encoder.encode(v.reset_args(req, ctx=self._ctx())))
        self.on_commit()
        return reply

    async def handle(self, req: m.PlacementRequestT, via: str = "stream") -> m.PlacementReply:
        """Any placement request (the asynchronous path): same checks, same idempotency."""
        match req:
            case m.PlaceRequest() | m.AttachRequest():
                return await self._timed(op_of(req), via, self._place(req))
            case m.ReleaseRequest():
                return await self._timed("release", via, self._release(req))
            case m.ConfirmRequest():
                return await self._timed("confirm", via, self._confirm(req))
        raise AssertionError(f"unhandled request {type(req).__name__}")

    # --- the work ----------------------------------------------------------------------------
    def _ctx(self) -> v.Context:
        return v.Context(source=self.source, trace=telemetry.inject({}))

    async def _place(self, req: m.PlaceRequest | m.AttachRequest) -> m.PlacementReply:
        args = v.place_args(req, default_ttl=self.default_ttl_s, ctx=self._ctx())
        out = await self.store.place(_encoder.encode(args))
        return self._reply(req, out)

    async def _release(self, req: m.ReleaseRequest) -> m.PlacementReply:
        out = await self.store.release(_encoder.encode(v.release_args(req, ctx=self._ctx())))
        return self._reply(req, out)

    async def _confirm(self, req: m.ConfirmRequest) -> m.PlacementReply:
        out = await self.store.confirm(_encoder.encode(v.confirm_args(req, ctx=self._ctx())))
        return self._reply(req, out)

    async def _get(self, req: m.GetRequest) -> m.PlacementReply:
        out = await self.store.guest(m.check(req).guest_id)
        if not out.assignments:
            raise NotFound(
                f"guest {req.guest_id} holds no VF: none was reserved for it, or all were "
                "released, expired or lost",
                guest_id=req.guest_id,
            )
        return m.PlacementReply(
            request_id="", guest_id=req.guest_id, host_id=out.host_id,
            assignments=out.assignments,
        )  # fmt: skip

    def _reply(self, req: Any, out: Outcome) -> m.PlacementReply:
        self.on_commit()
        return m.PlacementReply(
            request_id=req.request_id,
            guest_id=req.guest_id,
            host_id=out.host_id,
            assignments=out.assignments,
            released=out.released,
        )

    async def _timed(self, op: str, via: str, work: Awaitable[R]) -> R:
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await work
        except SriovError as exc:
            outcome = exc.code
            raise
        except BaseException:
            outcome = "internal"
            raise
        finally:
            self.metrics.observe(op, outcome, time.perf_counter() - started, via)


def op_of(req: m.PlacementRequestT) -> str:
    """The operation name of a request (``place``, ``attach``, ``release``, ``confirm``)."""
    return {
        m.PlaceRequest: "place",
        m.AttachRequest: "attach",
        m.ReleaseRequest: "release",
        m.ConfirmRequest: "confirm",
    }[type(req)]
