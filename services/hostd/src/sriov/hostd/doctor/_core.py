"""What the doctor looks at, and the collector its checks add findings to."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sriov.common import schemas as m
from sriov.hostd.discovery import Discovery
from sriov.hostd.hostconf import HostConf
from sriov.hostd.sysfs import Sysfs

Severity = Literal["ok", "info", "warning", "error"]
#: ``ip`` probe: (ifname) -> (exit status, stderr); None when ``ip`` cannot be run.
IpProbe = Callable[[str], tuple[int, str] | None]

GRUB = (
    "/etc/default/grub GRUB_CMDLINE_LINUX, then grub2-mkconfig -o /boot/grub2/grub.cfg and reboot"
)


@dataclass
class DoctorInputs:
    conf: HostConf
    sysfs: Sysfs
    found: Discovery
    cmdline: str | None
    """Kernel command line; None when it could not be read."""
    kernel_log: Sequence[str] | None
    """Kernel log lines (dmesg); None when it could not be read."""
    cpu_vendor: str | None = None
    """``intel`` or ``amd`` (from /proc/cpuinfo), when known."""
    ip_probe: IpProbe | None = None
    quarantined: Mapping[str, str] = field(default_factory=dict)
    """VF address -> why its restore to a clean state failed (hostd's lifecycle)."""


@dataclass
class Out:
    findings: list[m.Finding] = field(default_factory=list)

    def add(
        self,
        check: str,
        severity: Severity,
        message: str,
        *,
        device: str | None = None,
        evidence: str = "",
        fix: str = "",
    ) -> None:
        self.findings.append(
            m.Finding(
                check=check,
                severity=severity,
                message=message,
                device=device,
                evidence=evidence,
                fix=fix,
            )
        )
