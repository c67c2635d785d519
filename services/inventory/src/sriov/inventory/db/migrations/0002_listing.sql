-- Fast `devices.list` over a large fleet (p99 < 10 ms over 64,000 VFs):
-- * covering indexes in the listing order, so a page (even a deep one) is found by an
--   index-only scan and only its own rows are read from the table;
-- * per-host counts by the listing filters, kept in the same transaction as the devices,
--   so "Total" is a sum over a few thousand rows instead of a count over the whole table.

DROP INDEX inventory.devices_listing;
DROP INDEX inventory.devices_host_listing;
DROP INDEX inventory.devices_vendor;

CREATE INDEX devices_listing ON inventory.devices (model, pci_address DESC, host_id, id)
    INCLUDE (dev_type, vendor_device_id, guest_id) WHERE NOT removed;
CREATE INDEX devices_host_listing ON inventory.devices (host_id, model, pci_address DESC, id)
    INCLUDE (dev_type, vendor_device_id, guest_id) WHERE NOT removed;

CREATE TABLE inventory.device_counts (
    host_id          text NOT NULL REFERENCES inventory.hosts ON DELETE CASCADE,
    model            text COLLATE "C" NOT NULL,
    dev_type         text NOT NULL,
    vendor_device_id text NOT NULL,
    attached         boolean NOT NULL,
    n                integer NOT NULL CHECK (n > 0),
    PRIMARY KEY (host_id, model, dev_type, vendor_device_id, attached)
);
INSERT INTO inventory.device_counts
    SELECT host_id, model, dev_type, vendor_device_id, guest_id IS NOT NULL, count(*)
    FROM inventory.devices WHERE NOT removed
    GROUP BY host_id, model, dev_type, vendor_device_id, guest_id IS NOT NULL;

-- The table is small and busy: keep its visibility map and statistics fresh so index-only
-- scans stay index-only and plans stay right after a fleet-wide snapshot storm.
ALTER TABLE inventory.devices SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);
