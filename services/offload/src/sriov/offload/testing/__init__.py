"""Test harness shared by the offload tests and the lead's end-to-end demo: a real,
private Open vSwitch (:class:`OvsSandbox`) and namespaces passing real traffic."""

from sriov.offload.testing.netns import send_udp
from sriov.offload.testing.sandbox import Endpoint, OvsSandbox, SandboxError, sandbox

__all__ = ["Endpoint", "OvsSandbox", "SandboxError", "sandbox", "send_udp"]
