"""``sriovctl host-doctor``'s table: problems first, and never an empty grid."""

from __future__ import annotations

from sriov.cli.commands.hostd import doctor_table
from sriov.common import schemas as m


def finding(check: str, severity: str) -> m.Finding:
    return m.Finding(check=check, severity=severity, message=f"{check}: {severity}")  # type: ignore[arg-type]


def test_a_healthy_host_lists_what_was_checked_and_passed() -> None:
    findings = [finding("iommu.sysfs", "ok"), finding("sriov.numvfs", "ok")]
    table = doctor_table("h1", findings, verbose=False)
    assert [r[1] for r in table.rows] == ["iommu.sysfs", "sriov.numvfs"]
    assert table.footer == "*** h1: 2 checks, 0 errors, 0 warnings ***"


def test_problems_hide_the_passed_checks_unless_all_is_asked() -> None:
    findings = [finding("iommu.sysfs", "ok"), finding("sriov.numvfs", "warning")]
    table = doctor_table("h1", findings, verbose=False)
    assert [r[1] for r in table.rows] == ["sriov.numvfs"]
    assert table.footer.endswith("1 warnings, 1 passed (--all lists them) ***")
    assert len(doctor_table("h1", findings, verbose=True).rows) == 2
