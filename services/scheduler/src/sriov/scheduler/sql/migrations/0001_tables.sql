-- The scheduler's own schema: its projection of schedulable VFs, reservations, idempotency
-- keys and the event outbox. Migration 1, applied once (sriov.common.migrations); the
-- functions in ../*.sql are re-created at every start. IF NOT EXISTS throughout, so a
-- database created before migrations were versioned is adopted as it is.

CREATE SCHEMA IF NOT EXISTS scheduler;

CREATE TABLE IF NOT EXISTS scheduler.meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
-- Identifies this database: the state consumer's durable is named after it, so a fresh
-- database replays the whole device state instead of resuming an old cursor.
INSERT INTO scheduler.meta (key, value) VALUES ('epoch', replace(gen_random_uuid()::text, '-', ''))
ON CONFLICT (key) DO NOTHING;

-- Host status from inventory's HostState (revision >= 0), or derived from the device states
-- (revision -1) until the host's own state arrives.
CREATE TABLE IF NOT EXISTS scheduler.hosts (
    host_id    text PRIMARY KEY,
    status     text NOT NULL,
    revision   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per VF inventory ever reported; tombstones stay (removed) so a stale revision can
-- never resurrect a VF. held_by mirrors the active reservation, so the free VFs have an index.
CREATE TABLE IF NOT EXISTS scheduler.vfs (
    device_id        text PRIMARY KEY,
    host_id          text NOT NULL,
    host_key         integer NOT NULL,  -- hashtext(host_id): where a spread scan starts
    pci_address      text NOT NULL,
    addr             text NOT NULL,
    model            text NOT NULL,
    vendor_device_id text NOT NULL,
    pf_pci_address   text NOT NULL,
    pf_ifname        text,
    vf_index         integer NOT NULL,
    numa_node        integer NOT NULL,
    wire             text,
    network          text,
    link_up          boolean NOT NULL,
    present          boolean NOT NULL,
    removed          boolean NOT NULL,
    revision         bigint NOT NULL,
    held_by          text,
    updated_at       timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.02,
       autovacuum_analyze_scale_factor = 0.05);
-- fillfactor: room on each page, so a reservation's new row version stays beside the other
-- VFs of its host (rows are inserted host by host) and a host's free VFs stay a few pages.
-- The placement path walks only these partial indexes of free VFs, LIMIT 1 at a time:
-- hosts by model (from a start key), then on one host in spread or pack order.
CREATE INDEX IF NOT EXISTS vfs_free_by_model ON scheduler.vfs (model, host_key, host_id)
    WHERE held_by IS NULL AND present AND link_up AND NOT removed;
CREATE INDEX IF NOT EXISTS vfs_free_spread ON scheduler.vfs (host_id, model, vf_index, pf_pci_address)
    WHERE held_by IS NULL AND present AND link_up AND NOT removed;
CREATE INDEX IF NOT EXISTS vfs_free_pack ON scheduler.vfs (host_id, model, pf_pci_address, vf_index)
    WHERE held_by IS NULL AND present AND link_up AND NOT removed;
CREATE INDEX IF NOT EXISTS vfs_by_model ON scheduler.vfs (model);
CREATE INDEX IF NOT EXISTS vfs_held_by_host ON scheduler.vfs (host_id) WHERE held_by IS NOT NULL;

CREATE TABLE IF NOT EXISTS scheduler.reservations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   text NOT NULL REFERENCES scheduler.vfs (device_id),
    guest_id    text NOT NULL,
    host_id     text NOT NULL,
    request_id  text NOT NULL,
    net         text NOT NULL,
    state       text NOT NULL DEFAULT 'reserved' CHECK (state IN ('reserved', 'confirmed')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    ended_at    timestamptz,
    end_reason  text CHECK (end_reason IN ('released', 'expired', 'lost')),
    CHECK ((ended_at IS NULL) = (end_reason IS NULL))
) WITH (autovacuum_vacuum_scale_factor = 0.02);
-- The last guard: a VF has at most one active reservation, whatever the code above does.
CREATE UNIQUE INDEX IF NOT EXISTS reservations_one_active_per_device
    ON scheduler.reservations (device_id) WHERE ended_at IS NULL;
CREATE INDEX IF NOT EXISTS reservations_active_by_guest
    ON scheduler.reservations (guest_id) WHERE ended_at IS NULL;
CREATE INDEX IF NOT EXISTS reservations_expiring
    ON scheduler.reservations (expires_at) WHERE ended_at IS NULL AND state = 'reserved';

-- Idempotency keys: a retried request gets the stored reply.
CREATE TABLE IF NOT EXISTS scheduler.requests (
    request_id  text PRIMARY KEY,
    op          text NOT NULL,
    guest_id    text NOT NULL,
    fingerprint text NOT NULL,
    reply       jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_vacuum_scale_factor = 0.02);
CREATE INDEX IF NOT EXISTS requests_by_age ON scheduler.requests (created_at);

-- Events written in the same transaction as the change they announce; a relay publishes them
-- (event_id = Nats-Msg-Id, so a replay after a crash is dropped by JetStream) and deletes them.
CREATE TABLE IF NOT EXISTS scheduler.outbox (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   uuid NOT NULL,
    guest_id   text NOT NULL,
    verb       text NOT NULL,
    type       text NOT NULL,
    payload    text NOT NULL,
    trace      jsonb NOT NULL DEFAULT '{}',
    source     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000);
-- (a queue: rows come and go at the placement rate, so vacuum it by count, not by size)

