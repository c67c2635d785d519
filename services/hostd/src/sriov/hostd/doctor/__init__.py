"""The doctor: every check of the guide's set-up steps and Common Questions, with fixes.

Inputs (sysfs root, kernel cmdline, kernel log, CPU vendor, an ``ip`` probe) are passed in
so every finding can be produced on purpose in a test. Each finding carries a severity,
the evidence it saw (a file's content, a kernel log line, an ``lspci -v`` capability line)
and the fix the guide gives.
"""

from __future__ import annotations

from sriov.common import schemas as m
from sriov.hostd.doctor import device_checks, host_checks
from sriov.hostd.doctor._core import DoctorInputs, IpProbe, Out, Severity
from sriov.hostd.doctor.inputs import ip_probe, read_cmdline, read_cpu_vendor, read_kernel_log
from sriov.hostd.doctor.render import render, summary


def run(inp: DoctorInputs) -> list[m.Finding]:
    """Run every check; never raises for what it finds on the host."""
    out = Out()
    host_checks.hostconf(inp, out)
    host_checks.iommu(inp, out)
    host_checks.kernel_log(inp, out)
    host_checks.vfio(inp, out)
    for pf in inp.found.pfs:
        device_checks.pf(inp, out, pf)
    device_checks.vfs(inp, out)
    device_checks.infiniband(inp, out)
    device_checks.offload(inp, out)
    return out.findings


__all__ = [
    "DoctorInputs",
    "IpProbe",
    "Severity",
    "ip_probe",
    "read_cmdline",
    "read_cpu_vendor",
    "read_kernel_log",
    "render",
    "run",
    "summary",
]
