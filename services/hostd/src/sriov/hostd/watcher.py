"""Netlink link watcher: kernel link changes as events, resynchronised on overflow.

It binds to the link multicast group *before* dumping current links, so nothing that
happens during the dump is missed; then it streams ``RTM_NEWLINK``/``RTM_DELLINK`` and
tells its owner about carrier/operstate changes and about netdevs appearing or
disappearing. If the kernel drops messages because the socket buffer overflowed
(ENOBUFS), the socket is useless: it is replaced, links are dumped afresh and the
difference is reported as if the missed messages had arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Callable
from typing import Any

from pyroute2.netlink.rtnl import RTMGRP_LINK

from sriov.hostd.netview import LinkInfo, NetView, dump, link_from_msg
from sriov.hostd.nsock import async_iproute

log = logging.getLogger(__name__)
RTM_NEWLINK, RTM_DELLINK = 16, 17

#: (new info, previous info or None) for a link whose state changed.
OnState = Callable[[LinkInfo, LinkInfo | None], None]
#: A netdev appeared, disappeared or was renamed.
OnTopology = Callable[[str], None]
#: Every RTM_NEWLINK as received (a PF's VF-table change arrives as one with no state change).
OnLink = Callable[[LinkInfo], None]


class LinkWatcher:
    """Owns one subscribed netlink socket (and one for queries) in a namespace."""

    def __init__(
        self,
        on_state: OnState,
        on_topology: OnTopology,
        *,
        netns: str | None = None,
        rcvbuf: int = 1 << 20,
        on_link: OnLink | None = None,
        on_resync: Callable[[], None] | None = None,
    ) -> None:
        self.netns = netns
        self.rcvbuf = rcvbuf
        self._on_state = on_state
        self._on_topology = on_topology
        self._on_link = on_link
        self._on_resync = on_resync
        """After a resync: the notifications lost (VF-table changes too) are not replayed."""
        self.links: dict[str, LinkInfo] = {}
        self.resyncs = 0
        self._ipr: Any = None
        self._query: Any = None
        self._closed = False
        self._query_lock = asyncio.Lock()

    def _new_socket(self, **kw: Any) -> Any:
        return async_iproute(self.netns, **kw)

    async def start(self) -> None:
        """Subscribe, then dump: afterwards ``links`` is current."""
        await self._subscribe()
        self._query = self._new_socket()

    async def _subscribe(self) -> None:
        ipr = self._new_socket(rcvbuf=self.rcvbuf)
        await ipr.bind(groups=RTMGRP_LINK)
        table: dict[str, LinkInfo] = {}
        async for msg in await ipr.link("dump"):
            info = link_from_msg(msg)
            table[info.ifname] = info
        self._ipr = ipr
        old, self.links = self.links, table
        if old:
            self._report(old, table)

    def _report(self, old: dict[str, LinkInfo], new: dict[str, LinkInfo]) -> None:
        """What changed between two tables (after a resync), as events."""
        for name, info in new.items():
            prev = old.get(name)
            if prev is None or prev.index != info.index:
                self._on_topology(name)
            elif prev.state != info.state:
                self._on_state(info, prev)
        for name in old.keys() - new.keys():
            self._on_topology(name)

    async def run(self) -> None:
        """Stream events until closed; ENOBUFS (or a broken socket) means resync."""
        while not self._closed:
            try:
                async for msg in self._ipr.get():
                    self._handle(msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closed:
                    return
                code = getattr(exc, "code", None) or getattr(exc, "errno", None)
                if code == errno.ENOBUFS:
                    log.warning("netlink socket overflowed (ENOBUFS): resynchronising links")
                else:
                    log.warning("netlink read failed (%s): resynchronising links", exc)
                    await asyncio.sleep(0.5)
                await self.resync()

    async def resync(self) -> None:
        self.resyncs += 1
        old = self._ipr
        with contextlib.suppress(Exception):
            old.close()
        await self._subscribe()
        if self._on_resync is not None:
            self._on_resync()

    def _handle(self, msg: Any) -> None:
        kind = msg["header"]["type"]
        if kind == RTM_NEWLINK:
            info = link_from_msg(msg)
            if self._on_link is not None:
                self._on_link(info)
            prev = self.links.get(info.ifname)
            if prev is None or prev.index != info.index:
                renamed = [n for n, i in self.links.items() if i.index == info.index]
                for name in renamed:
                    del self.links[name]
                self.links[info.ifname] = info
                self._on_topology(info.ifname)
                return
            self.links[info.ifname] = info
            if prev.state != info.state:
                self._on_state(info, prev)
        elif kind == RTM_DELLINK:
            name = str(msg.get("ifname") or "")
            gone = self.links.pop(name, None)
            if gone is None:  # deleted under another name: find it by index
                for n, i in list(self.links.items()):
                    if i.index == msg["index"]:
                        gone = self.links.pop(n)
                        name = n
            if gone is not None:
                self._on_topology(name)

    async def view(self) -> NetView:
        """Current links (from the event stream) plus default routes and addresses (dumped)."""
        async with self._query_lock:
            try:
                return await dump(self._query, self.links)
            except Exception as exc:
                log.warning("netlink route/address dump failed (%s); retrying once", exc)
                with contextlib.suppress(Exception):
                    self._query.close()
                self._query = self._new_socket()
                return await dump(self._query, self.links)

    def close(self) -> None:
        self._closed = True
        for sock in (self._ipr, self._query):
            if sock is not None:
                with contextlib.suppress(Exception):
                    sock.close()
