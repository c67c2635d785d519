"""Regenerate the live userspace-datapath fixtures: ``python capture_fixtures.py``.

Starts an :class:`OvsSandbox`, passes real UDP and TCP traffic between two namespaces
through a ``datapath_type=netdev`` bridge, and saves what ``dpctl/dump-flows`` prints
(before and after hw-offload is switched on) into ``fixtures/``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sriov.offload.testing import OvsSandbox, send_udp

OUT = Path(__file__).parent / "fixtures"
SERVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen()
c, _ = s.accept()
while c.recv(65536):
    pass
c.sendall(b"ok")
c.close()
"""
CLIENT = """
import socket
s = socket.create_connection(("{dst}", 8080), timeout=10)
s.sendall(b"y" * 200000)
s.shutdown(socket.SHUT_WR)
assert s.recv(10) == b"ok"
"""


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ovs-capture-") as tmp:
        sb = OvsSandbox(tmp).start()
        try:
            sb.add_bridge("br0")
            a = sb.add_host_port("br0", "vm1", "10.9.0.1/24")
            b = sb.add_host_port("br0", "vm2", "10.9.0.2/24")
            netns_py = ["ip", "netns", "exec"]
            with subprocess.Popen([*netns_py, b.netns, sys.executable, "-c", SERVER]) as server:
                time.sleep(0.5)
                client = CLIENT.format(dst=b.address)
                subprocess.run([*netns_py, a.netns, sys.executable, "-c", client], check=True)
                server.wait(10)
            send_udp(a.netns, b.address, count=40)
            time.sleep(0.3)
            dp = "netdev@ovs-netdev"
            (OUT / "netdev-m.txt").write_text(sb.appctl("dpctl/dump-flows", "-m", dp))
            (OUT / "netdev.txt").write_text(sb.appctl("dpctl/dump-flows", dp))
            sb.set_other_config("hw-offload", "true")
            time.sleep(0.5)
            send_udp(b.netns, a.address, count=30, size=900)
            time.sleep(0.2)
            on = sb.appctl("dpctl/dump-flows", "-m", dp)
            (OUT / "netdev-hw-offload-on-m.txt").write_text(on)
            offloaded = sb.appctl("dpctl/dump-flows", dp, "type=offloaded")
            (OUT / "netdev-type-offloaded.txt").write_text(offloaded)
        finally:
            sb.stop()


if __name__ == "__main__":
    main()
