"""The embedded servers' helpers."""

from __future__ import annotations

import socket

from sriov.devtools import embedded


def test_free_port_is_outside_the_ephemeral_range_and_can_be_listened_on() -> None:
    """Outgoing connections take their local ports from the ephemeral range, so a port from
    it could be taken between the check and the server binding it (it happened)."""
    lo, hi = embedded._ephemeral_range()
    for _ in range(200):
        port = embedded.free_port()
        assert not lo <= port <= hi and port >= 1024
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        assert not embedded.port_free(port)  # and a port in use is not offered as free
