-- Each index of active reservations serves only the lookups it was made for. An index whose
-- predicate is only `ended_at IS NULL` can also be read whole by any query on active
-- reservations, and a generic plan made while the table held a few rows (or was never
-- analyzed) costs that the same as a lookup: apply_state looked reservations up by device by
-- reading every active one through the guest index, and confirm through the expiry index
-- (fleet_scale: 3.4 million entries read in 10 s of placements). With a predicate that only
-- a condition on the key implies (a strict comparison proves `key IS NOT NULL`; the columns
-- are NOT NULL, so the indexes hold the same rows), the planner has nothing else to pick.
-- The guard against two active reservations of a VF is replaced within this transaction,
-- never absent.
CREATE UNIQUE INDEX reservations_one_active_per_device_v2
    ON scheduler.reservations (device_id) WHERE ended_at IS NULL AND device_id IS NOT NULL;
DROP INDEX scheduler.reservations_one_active_per_device;
ALTER INDEX scheduler.reservations_one_active_per_device_v2
    RENAME TO reservations_one_active_per_device;

DROP INDEX scheduler.reservations_active_by_guest;
CREATE INDEX reservations_active_by_guest
    ON scheduler.reservations (guest_id) WHERE ended_at IS NULL AND guest_id IS NOT NULL;

DROP INDEX scheduler.reservations_expiring;
CREATE INDEX reservations_expiring ON scheduler.reservations (expires_at)
    WHERE ended_at IS NULL AND state = 'reserved' AND expires_at IS NOT NULL;
