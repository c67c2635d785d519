"""Where a VF is in its lifecycle, from the scheduler's placement events and hostd's outcomes.

The two arrive on different streams, through different consumers, in any order. Both are
numbered from one sequence, the scheduler's commit order: a placement event by its ``seq``,
an outcome by the ``revision`` of the desired state it answers. A desired state is written
in the same transaction as the placement event that caused it, so their numbers are close
but either may be the lower. What is certain is that everything of a later transaction is
numbered above everything of an earlier one, so:

* an ``assigned`` outcome (ready, failed) belongs to the current reservation when it is
  above the last event that ended a reservation (``end_seq``);
* a ``clean`` outcome (clean, quarantined) belongs to the current release when it is above
  the last reservation (``hold_seq``, the last Reserved: a Confirmed starts nothing);
* a placement Ready belongs to the current reservation when it is above ``hold_seq``.

Rather than move from state to state (which would depend on arrival order), the state is
computed from these stored facts every time one of them changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sriov.common import schemas as m

ASSIGNED_OUTCOMES = ("ready", "failed")
CLEAN_OUTCOMES = ("clean", "quarantined")


@dataclass
class Stamps:
    """The facts the lifecycle state is derived from (mirrored in ``inventory.devices``)."""

    hold_seq: int = 0
    """Seq of the last Reserved applied (the start of the current or last reservation)."""
    end_seq: int = 0
    """Seq of the last Released/Expired/Lost/Failed(prepare) applied."""
    ready_seq: int = 0
    """Seq of the last placement Ready naming the VF."""
    outcome: str | None = None
    """hostd's last outcome (``repaired`` changes no state and is not kept)."""
    outcome_revision: int = 0

    def as_tuple(self) -> tuple[int, int, int, str | None, int]:
        return (self.hold_seq, self.end_seq, self.ready_seq, self.outcome, self.outcome_revision)

    def hostd(self, outcome: str, revision: int) -> bool:
        """Record an outcome; False when it is older than the one kept (or ``repaired``)."""
        if outcome == "repaired" or revision < self.outcome_revision:
            return False
        self.outcome, self.outcome_revision = outcome, revision
        return True


def state(dev: m.Device, st: Stamps) -> m.VfLifecycleState | None:
    """The VF's lifecycle state; None for a VF whose hostd has no lifecycle (no capabilities)."""
    if dev.capabilities is None:
        return None
    outcome, rev = st.outcome, st.outcome_revision
    if dev.guest_id is not None:  # held: being prepared, ready, or failed (ending)
        if st.ready_seq > st.hold_seq:
            return "ready"
        if outcome in ASSIGNED_OUTCOMES and rev > st.end_seq:
            return "ready" if outcome == "ready" else "cleaning"
        return "preparing"
    if outcome in CLEAN_OUTCOMES and rev > st.hold_seq:
        return "free" if outcome == "clean" else "quarantined"
    if st.hold_seq == 0 and st.end_seq == 0:
        return "free"  # never held since the lifecycle began
    return "cleaning"  # released, expired or lost: not offered until hostd says clean
