-- A device's id is derived from its host and PCI address (schemas.device_id, the only way
-- inventory names a device), so the primary key already makes (host_id, pci_address) unique.
-- The second unique index was read by no query (lookups by address compute the id) and was
-- written at every device row change: 640,000 entries in a fleet-wide snapshot storm, and one
-- per placement, as a guest's change of a device is never a HOT update.
ALTER TABLE inventory.devices DROP CONSTRAINT devices_host_id_pci_address_key;
