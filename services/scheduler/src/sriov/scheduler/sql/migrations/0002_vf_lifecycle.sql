-- The VF lifecycle (issue 12): what each VF's PF can apply, where each VF is between guests,
-- its desired state for hostd, cordoned hosts and the MAC of each reservation.

-- managed: the VF's hostd runs the lifecycle (its PF published capabilities); an unmanaged
-- VF is ready as soon as it is reserved and free as soon as it is released, as before.
-- cannot: the settings its PF cannot apply ('lifecycle' for an unmanaged VF: only a net
-- asking for nothing but the defaults fits it); vf_driver: the VF's own netdev driver.
-- lifecycle: free -> preparing (reserved) -> ready -> cleaning (released) -> free, or
-- quarantined (a restore failed) until an operator resets it. Only 'free' is offered.
ALTER TABLE scheduler.vfs
    ADD COLUMN IF NOT EXISTS managed   boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS cannot    text[] NOT NULL DEFAULT '{lifecycle}',
    ADD COLUMN IF NOT EXISTS vf_driver text,
    ADD COLUMN IF NOT EXISTS lifecycle text NOT NULL DEFAULT 'free'
        CHECK (lifecycle IN ('free', 'preparing', 'ready', 'cleaning', 'quarantined'));
UPDATE scheduler.vfs SET lifecycle = 'ready' WHERE held_by IS NOT NULL;

-- The free-VF indexes now also require lifecycle = 'free'.
DROP INDEX IF EXISTS scheduler.vfs_free_by_model;
DROP INDEX IF EXISTS scheduler.vfs_free_spread;
DROP INDEX IF EXISTS scheduler.vfs_free_pack;
CREATE INDEX vfs_free_by_model ON scheduler.vfs (model, host_key, host_id)
    WHERE held_by IS NULL AND lifecycle = 'free' AND present AND link_up AND NOT removed;
CREATE INDEX vfs_free_spread ON scheduler.vfs (host_id, model, vf_index, pf_pci_address)
    WHERE held_by IS NULL AND lifecycle = 'free' AND present AND link_up AND NOT removed;
CREATE INDEX vfs_free_pack ON scheduler.vfs (host_id, model, pf_pci_address, vf_index)
    WHERE held_by IS NULL AND lifecycle = 'free' AND present AND link_up AND NOT removed;
CREATE INDEX IF NOT EXISTS vfs_quarantined ON scheduler.vfs (host_id)
    WHERE lifecycle = 'quarantined';

-- A cordoned host gets no new placements (its guests keep theirs).
ALTER TABLE scheduler.hosts
    ADD COLUMN IF NOT EXISTS cordoned      boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS cordon_reason text NOT NULL DEFAULT '';

-- The VF configuration a reservation asked for (NULL on an unmanaged VF) and its MAC, unique
-- among active reservations: the last guard against two guests with one MAC.
ALTER TABLE scheduler.reservations
    ADD COLUMN IF NOT EXISTS config jsonb,
    ADD COLUMN IF NOT EXISTS mac    text;
ALTER TABLE scheduler.reservations DROP CONSTRAINT IF EXISTS reservations_end_reason_check;
ALTER TABLE scheduler.reservations ADD CONSTRAINT reservations_end_reason_check
    CHECK (end_reason IN ('released', 'expired', 'lost', 'failed'));
CREATE UNIQUE INDEX IF NOT EXISTS reservations_one_active_per_mac
    ON scheduler.reservations (mac) WHERE ended_at IS NULL AND mac IS NOT NULL;

-- Scheduler-generated MACs: locally administered unicast, from this sequence (never reused
-- before 2^32 reservations; the unique index above guards the wrap).
CREATE SEQUENCE IF NOT EXISTS scheduler.mac_seq AS bigint MINVALUE 1 MAXVALUE 4294967295 CYCLE;

-- The current desired state of each managed VF (the last VfDesired published for it) and
-- what hostd last reported for that revision.
CREATE TABLE IF NOT EXISTS scheduler.desired (
    device_id   text PRIMARY KEY REFERENCES scheduler.vfs (device_id),
    host_id     text NOT NULL,
    pci_address text NOT NULL,
    revision    bigint NOT NULL,
    state       text NOT NULL CHECK (state IN ('assigned', 'clean')),
    guest_id    text,
    config      jsonb NOT NULL,
    reset       boolean NOT NULL DEFAULT false,
    outcome     text,
    actual      jsonb,
    error       text,
    iommu_group integer,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Desired-state rows of the outbox: subject sriov.v1.desired.<host>.<pci>.vf.updated, last
-- value per VF (guest_id '' and verb 'desired' for them).
ALTER TABLE scheduler.outbox
    ADD COLUMN IF NOT EXISTS vf_host text,
    ADD COLUMN IF NOT EXISTS vf_pci  text;

-- The operations now take the type tag of VfDesired too: drop the old signatures.
DROP FUNCTION IF EXISTS scheduler.place(jsonb, text);
DROP FUNCTION IF EXISTS scheduler.release(jsonb, text);
DROP FUNCTION IF EXISTS scheduler.expire(integer, timestamptz, jsonb, text);
DROP FUNCTION IF EXISTS scheduler.apply_state(jsonb, jsonb, jsonb, text);
