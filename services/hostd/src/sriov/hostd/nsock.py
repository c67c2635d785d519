"""Netlink sockets inside a named network namespace, without forking.

pyroute2's ``netns=`` forks a child to create the socket; forking a process that runs
threads (worker threads, the NATS client, the file watcher) can deadlock the child and
stall for seconds. Instead the calling thread enters the namespace with setns(2), opens
the socket (which stays bound to that namespace) and returns at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import socket

from sriov.common.errors import ConfigError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"
NETLINK_ROUTE = 0


@functools.cache
def _libc() -> ctypes.CDLL:
    """Loaded once: ``find_library`` runs ``ldconfig``, milliseconds on every socket."""
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _setns(fd: int) -> None:
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns failed: {os.strerror(err)}")


def netlink_socket(netns: str | None) -> socket.socket:
    """An rtnetlink socket in ``netns`` (None: this thread's namespace)."""
    if netns is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    path = os.path.join(NETNS_RUN_DIR, netns)
    try:
        target = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ConfigError(
            f"network namespace {netns!r} cannot be opened ({path}: {exc.strerror}); "
            "create it (ip netns add) or fix netns in host.conf"
        ) from exc
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(target)
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def async_iproute(netns: str | None, **kw: object) -> object:
    """``AsyncIPRoute`` on a socket opened in ``netns``."""
    from pyroute2 import AsyncIPRoute

    return AsyncIPRoute(fileno=netlink_socket(netns).detach(), **kw)


def iproute(netns: str | None) -> object:
    """Synchronous ``IPRoute`` on a socket opened in ``netns``."""
    from pyroute2 import IPRoute

    return IPRoute(fileno=netlink_socket(netns).detach())
