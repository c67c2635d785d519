"""Group commit: requests arriving while the database is busy go together, each answered."""

from __future__ import annotations

import asyncio

import pytest

from sriov.scheduler.combine import Combiner


class Db:
    """A stand-in for ``scheduler.place_many``: records each batch, holds it until released,
    answers ``"bad"`` items with their own error and fails a whole batch holding ``"boom"``."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()

    async def run(self, items: list[str]) -> list[str | BaseException]:
        self.batches.append(items)
        await self.gate.wait()
        if "boom" in items:
            raise ConnectionError("connection lost")
        return [ValueError(i) if i == "bad" else i.upper() for i in items]


async def turns() -> None:
    """Let every ready task run as far as it can."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_lone_request_goes_at_once_and_the_next_ones_together() -> None:
    db = Db()
    c = Combiner(db.run, slots=1, limit=3)
    first = asyncio.ensure_future(c.submit("a"))
    await turns()
    assert db.batches == [["a"]]  # nothing waited for company
    rest = [asyncio.ensure_future(c.submit(x)) for x in "bcdef"]
    await turns()
    assert db.batches == [["a"]]  # the one slot is busy: they queue
    db.gate.set()
    assert await first == "A"
    assert await asyncio.gather(*rest) == list("BCDEF")
    assert db.batches == [["a"], ["b", "c", "d"], ["e", "f"]]  # up to limit per batch
    assert (c.batches, c.items) == (3, 6)


async def test_each_caller_gets_its_own_error_and_a_failed_batch_fails_only_its_callers() -> None:
    db = Db()
    c = Combiner(db.run, slots=1, limit=8)
    blocker = asyncio.ensure_future(c.submit("boom"))
    await turns()
    batch = [asyncio.ensure_future(c.submit(x)) for x in ("x", "bad", "y")]
    await turns()
    db.gate.set()
    with pytest.raises(ConnectionError):
        await blocker
    results = await asyncio.gather(*batch, return_exceptions=True)
    assert results[0] == "X" and results[2] == "Y"
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad"
    assert db.batches == [["boom"], ["x", "bad", "y"]]


async def test_a_caller_that_gives_up_does_not_disturb_the_others() -> None:
    db = Db()
    c = Combiner(db.run, slots=1)
    blocker = asyncio.ensure_future(c.submit("a"))
    await turns()
    quitter = asyncio.ensure_future(c.submit("b"))
    stayer = asyncio.ensure_future(c.submit("c"))
    await turns()
    quitter.cancel()
    db.gate.set()
    assert await blocker == "A" and await stayer == "C"
    assert quitter.cancelled()
    assert db.batches == [["a"], ["b", "c"]]  # it was sent; its result is in the database
