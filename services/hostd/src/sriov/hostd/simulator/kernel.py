"""The simulated kernel's reaction to a ``sriov_numvfs`` write.

On a real host writing N to ``sriov_numvfs`` makes the kernel create N VFs (PCI functions,
``virtfn`` links, netdevs). On a simulated tree nothing would happen, so hostd's numvfs
writer calls :func:`apply_numvfs` after writing: it rewrites the PF's VFs in the tree and,
if the host has a namespace, creates or deletes their veths, so hostd then sees real
netlink events, as it would on hardware.
"""

from __future__ import annotations

from pathlib import Path

from sriov.common.errors import ConfigError
from sriov.hostd.simulator import netdevs
from sriov.hostd.simulator.spec import ports_of
from sriov.hostd.simulator.tree import (
    TreeWriter,
    is_simulated,
    load_state,
    save_state,
    state_lock,
)


def apply_numvfs(root: str | Path, pf_address: str, num: int) -> None:
    with state_lock(root):
        state = load_state(root)
        writer = TreeWriter(root, state)
        rec = writer._pf_record(pf_address)
        card = state.spec.cards[rec.card]
        port = ports_of(state.spec, card)[rec.port]
        if card.ports is None:  # materialise default ports so the count can be recorded
            card.ports = ports_of(state.spec, card)
            port = card.ports[rec.port]
        gone = writer.remove_vfs(pf_address)
        if state.netns and gone:
            netdevs.delete([d.ifname for d in gone], state.netns)
        port.num_vfs = num
        state.vf_table.pop(pf_address, None)  # the PF driver forgets its VFs' settings
        before = {d.ifname for d in state.netdevs}
        if num:
            writer.write_vfs(pf_address, num)
        save_state(root, state)
    if state.netns:
        new = [d for d in state.netdevs if d.ifname not in before]
        if new:
            netdevs.create(new, state.netns)


def attach_netns(root: str | Path, ns: str | None) -> None:
    if not is_simulated(root):
        raise ConfigError(f"{root} is not a simulated sysfs tree")
    with state_lock(root):
        state = load_state(root)
        state.netns = ns
        save_state(root, state)
