"""The doctor's findings as a table for a terminal."""

from __future__ import annotations

from collections.abc import Sequence

from sriov.common import schemas as m


def summary(findings: Sequence[m.Finding]) -> str:
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("error", "warning")}
    return f"{len(findings)} checks: {counts['error']} errors, {counts['warning']} warnings"


def render(findings: Sequence[m.Finding]) -> str:
    """A readable table for a terminal (severity, check, device, message, fix)."""
    rows = [("SEVERITY", "CHECK", "DEVICE", "FINDING / FIX")]
    order = {"error": 0, "warning": 1, "info": 2, "ok": 3}
    for f in sorted(findings, key=lambda f: order.get(f.severity, 9)):
        text = f.message + (f"\n  fix: {f.fix}" if f.fix and f.severity != "ok" else "")
        if f.evidence and f.severity != "ok":
            text += "\n  seen: " + f.evidence.replace("\n", "\n        ")
        rows.append((f.severity.upper(), f.check, f.device or "-", text))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for r in rows:
        first, *rest = r[3].split("\n")
        lines.append("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + first)
        pad = " " * (sum(widths) + 6)
        lines.extend(pad + x for x in rest)
    return "\n".join(lines) + "\n" + summary(findings)
