-- Inventory's fleet table: hosts, their PFs, their VFs (devices) and the outbox that
-- announces every change. Written only by sriov-inventory; other services learn the
-- content from the SRIOV_STATE stream, never from these tables.

-- One counter for every device and host revision: monotonic across replicas, restarts
-- and a device's removal and return, so a consumer can always drop an older state.
CREATE SEQUENCE inventory.revision AS bigint;

CREATE TABLE inventory.hosts (
    host_id              text PRIMARY KEY,
    hostname             text NOT NULL DEFAULT '',
    status               text NOT NULL DEFAULT 'unknown'
                         CHECK (status IN ('online', 'offline', 'unknown')),
    -- highest (generation, seq) applied from this host
    generation           bigint NOT NULL DEFAULT -1,
    seq                  bigint NOT NULL DEFAULT -1,
    -- (generation, seq) of the last snapshot applied: per-device events older than it are stale
    snap_generation      bigint NOT NULL DEFAULT -1,
    snap_seq             bigint NOT NULL DEFAULT -1,
    -- set when the host went offline or was first seen without a snapshot; a snapshot clears it
    needs_snapshot       boolean NOT NULL DEFAULT true,
    last_seen            timestamptz,
    heartbeat_interval_s double precision NOT NULL DEFAULT 0,
    errors               integer NOT NULL DEFAULT 0,
    problems             integer NOT NULL DEFAULT 0,
    diagnostics          jsonb,
    pf_count             integer NOT NULL DEFAULT 0,
    vf_count             integer NOT NULL DEFAULT 0,
    vf_free              integer NOT NULL DEFAULT 0,
    revision             bigint NOT NULL DEFAULT 0,
    -- the HostInfo last announced (without last_seen): a new one is published only on change
    announced            bytea,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hosts_liveness ON inventory.hosts (last_seen) WHERE status <> 'offline';

CREATE TABLE inventory.pfs (
    host_id      text NOT NULL REFERENCES inventory.hosts ON DELETE CASCADE,
    pci_address  text NOT NULL,
    generation   bigint NOT NULL,
    seq          bigint NOT NULL,
    data         jsonb NOT NULL,  -- the PF as hostd reported it (schemas.PF)
    PRIMARY KEY (host_id, pci_address)
);

CREATE TABLE inventory.devices (
    id               text PRIMARY KEY,  -- schemas.device_id(host_id, pci_address)
    host_id          text NOT NULL REFERENCES inventory.hosts ON DELETE CASCADE,
    pci_address      text COLLATE "C" NOT NULL,
    addr             text NOT NULL,
    dev_type         text NOT NULL,
    model            text COLLATE "C" NOT NULL,
    vendor_device_id text NOT NULL,
    pf_pci_address   text NOT NULL,
    pf_ifname        text,
    vf_index         integer NOT NULL,
    numa_node        integer NOT NULL,
    iommu_group      integer,
    driver           text,
    ifname           text,
    mac              text,
    wire             text,
    network          text,
    link_state       text NOT NULL,  -- of the parent PF
    vf_link_state    text NOT NULL DEFAULT 'unknown',
    host_status      text NOT NULL,
    present          boolean NOT NULL,  -- false: gone from the host but still held by a guest
    removed          boolean NOT NULL DEFAULT false,  -- tombstone until the next snapshot
    guest_id         text,
    guest_seq        bigint NOT NULL DEFAULT 0,  -- SRIOV_PLACEMENT stream seq that set guest_id
    offload          boolean NOT NULL,
    generation       bigint NOT NULL,
    seq              bigint NOT NULL,
    revision         bigint NOT NULL,
    updated_at       timestamptz NOT NULL,
    UNIQUE (host_id, pci_address)
);
-- the listing order of `isolated-device-list` (model, then address descending), per host too
CREATE INDEX devices_listing ON inventory.devices (model, pci_address DESC, host_id)
    WHERE NOT removed;
CREATE INDEX devices_host_listing ON inventory.devices (host_id, model, pci_address DESC)
    WHERE NOT removed;
CREATE INDEX devices_guest ON inventory.devices (guest_id, model, pci_address DESC)
    WHERE guest_id IS NOT NULL AND NOT removed;
CREATE INDEX devices_vendor ON inventory.devices (vendor_device_id, model, pci_address DESC)
    WHERE NOT removed;

-- Transactional outbox, one row per subject: a newer state of the same device replaces a
-- pending older one, so the relay never publishes a stale state after a newer one.
CREATE SEQUENCE inventory.outbox_seq AS bigint;
CREATE TABLE inventory.outbox (
    subject     text PRIMARY KEY,
    seq         bigint NOT NULL DEFAULT nextval('inventory.outbox_seq'),
    payload     bytea NOT NULL,
    headers     bytea NOT NULL,  -- JSON object: CloudEvents, traceparent, Nats-Msg-Id
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_order ON inventory.outbox (seq);
