"""Differences between two discoveries, as the events that describe them."""

from __future__ import annotations

from dataclasses import dataclass, field

from sriov.common import schemas as m
from sriov.hostd.discovery import Discovery


@dataclass
class Changes:
    vf_added: list[m.VF] = field(default_factory=list)
    vf_changed: list[m.VF] = field(default_factory=list)
    vf_removed: list[m.VF] = field(default_factory=list)
    pf_changed: list[m.PF] = field(default_factory=list)
    structural: bool = False
    """PFs appeared/disappeared or device errors changed: only a snapshot says that."""

    @property
    def any(self) -> bool:
        return bool(self.vf_added or self.vf_changed or self.vf_removed or self.pf_changed)

    def summary(self) -> str:
        return (
            f"{len(self.vf_added)} VFs discovered, {len(self.vf_changed)} changed, "
            f"{len(self.vf_removed)} removed, {len(self.pf_changed)} PFs changed"
        )


def diff(old: Discovery, new: Discovery) -> Changes:
    ch = Changes()
    old_pfs = {p.pci_address: p for p in old.pfs}
    new_pfs = {p.pci_address: p for p in new.pfs}
    if old_pfs.keys() != new_pfs.keys() or old.errors != new.errors:
        ch.structural = True
    ch.pf_changed = [p for a, p in new_pfs.items() if a in old_pfs and old_pfs[a] != p]
    old_vfs = {v.pci_address: v for v in old.vfs}
    new_vfs = {v.pci_address: v for v in new.vfs}
    ch.vf_added = [v for a, v in new_vfs.items() if a not in old_vfs]
    ch.vf_removed = [v for a, v in old_vfs.items() if a not in new_vfs]
    ch.vf_changed = [v for a, v in new_vfs.items() if a in old_vfs and old_vfs[a] != v]
    return ch
