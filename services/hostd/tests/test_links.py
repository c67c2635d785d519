"""Flap coalescing: the first change goes out at once, flaps inside the hold-down merge."""

from __future__ import annotations

from sriov.hostd.links import LinkCoalescer
from sriov.hostd.netview import LinkInfo


def link(state: str) -> LinkInfo:
    return LinkInfo(
        7,
        "eth1v0",
        "UP" if state == "up" else "LOWERLAYERDOWN",
        1 if state == "up" else 0,
        None,
        None,
    )


async def test_first_change_immediate_then_coalesced() -> None:
    out: list[tuple[str, int]] = []

    async def emit(info: LinkInfo, flaps: int) -> None:
        out.append((info.state, flaps))

    c = LinkCoalescer(0.5, emit)
    c.seed("eth1v0", "up")
    await c.handle(link("down"), now=100.0)
    assert out == [("down", 0)]
    for i, state in enumerate(["up", "down", "up"]):  # flapping inside the window
        await c.handle(link(state), now=100.1 + i * 0.1)
    await c.flush_due(now=100.4)  # window not over: nothing yet
    assert out == [("down", 0)]
    await c.flush_due(now=100.5)
    assert out == [("down", 0), ("up", 3)]
    assert c.published("eth1v0") == "up"


async def test_flap_that_returns_to_the_published_state_is_silent() -> None:
    out: list[tuple[str, int]] = []

    async def emit(info: LinkInfo, flaps: int) -> None:
        out.append((info.state, flaps))

    c = LinkCoalescer(1.0, emit)
    c.seed("eth1v0", "up")
    await c.handle(link("down"), now=10.0)
    await c.handle(link("up"), now=10.2)
    await c.handle(link("down"), now=10.4)
    await c.flush_due(now=11.0)
    assert out == [("down", 0)]
    await c.handle(link("down"), now=12.0)  # no change, nothing to say
    await c.handle(link("up"), now=12.5)  # after the window: immediate again
    assert out == [("down", 0), ("up", 0)]
    c.forget("eth1v0")
    assert c.published("eth1v0") is None
