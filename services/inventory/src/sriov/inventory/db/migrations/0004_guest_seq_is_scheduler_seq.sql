-- guest_seq now holds the scheduler's commit sequence of the placement event that last set or
-- cleared guest_id (the event's ``seq``), not its SRIOV_PLACEMENT stream sequence: the stream
-- can hold a republished batch out of order, the scheduler's sequence cannot. The two count
-- differently, so the stored stream sequences are reset; guest_id itself is kept.

UPDATE inventory.devices SET guest_seq = 0 WHERE guest_seq <> 0;
COMMENT ON COLUMN inventory.devices.guest_seq IS
    'seq of the placement event that last set or cleared guest_id (scheduler commit order)';
