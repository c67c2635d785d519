"""Group commit: requests that arrive while the database is busy go in together.

A lone request is sent at once, so nothing waits on an idle database. Once ``slots`` batches
are in flight, the requests arriving meanwhile queue, and the next free slot takes them all
(up to ``limit``) as one batch: one round trip and one commit for many placements. Each
request still gets its own answer: ``run`` returns one result or exception per item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Combiner(Generic[T, R]):
    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[list[R | BaseException]]],
        *,
        slots: int = 2,
        limit: int = 32,
    ) -> None:
        self._run = run
        self.slots = slots
        self.limit = limit
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._busy = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        """Batches sent so far (with :attr:`items`, the mean batch size)."""
        self.items = 0

    async def submit(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        self._pump()
        return await fut

    def _pump(self) -> None:
        while self._queue and self._busy < self.slots:
            batch, self._queue = self._queue[: self.limit], self._queue[self.limit :]
            self._busy += 1
            task = asyncio.create_task(self._batch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = await self._run([item for item, _ in batch])
        except BaseException as exc:  # the whole batch failed (its transaction rolled back)
            results = [exc] * len(batch)
        finally:
            self._busy -= 1
            self._pump()
        for (_item, fut), result in zip(batch, results, strict=True):
            if fut.done():  # its caller gave up (cancelled): the result is in the database
                continue
            if isinstance(result, asyncio.CancelledError):
                fut.cancel()
            elif isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
