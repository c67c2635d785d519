"""Run a durable consumer until stop, surviving what ``Bus.consume`` lets escape.

``Bus.consume`` returns when the connection closes and raises when binding the durable fails
(NATS away for longer than a reconnect). Re-entering it re-binds the same durable and carries
on; unacked messages are redelivered, which the handlers tolerate (idempotent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sriov.common import runtime
from sriov.common.bus import Bus, ConsumerSpec, ConsumerStats, Delivery
from sriov.common.schemas import Codec

log = logging.getLogger(__name__)
T = TypeVar("T")


async def consume(
    bus: Bus,
    spec: ConsumerSpec,
    codec: Codec[T],
    handler: Callable[[T, Delivery], Awaitable[None]],
    *,
    stop: asyncio.Event,
    stats: ConsumerStats,
    batch_handler: Callable[[list[tuple[T, Delivery]]], Awaitable[None]] | None = None,
) -> None:
    while not stop.is_set():
        try:
            await bus.consume(
                spec, codec, handler, stop=stop, stats=stats, batch_handler=batch_handler
            )
        except Exception as exc:  # NATS away for longer than a reconnect: keep trying
            if stop.is_set():
                return
            log.warning("%s: consumer stopped (%s: %s); resuming", spec.durable,
                        type(exc).__name__, exc)  # fmt: skip
            await runtime.pause(stop, 1.0)
