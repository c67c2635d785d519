-- List devices by model, then host, then address descending (the guide's order within a
-- host). Grouping a host's VFs lets a page be located from the per-host counts, so no
-- page scan ever skips more than one host's devices, however deep the page.

DROP INDEX inventory.devices_listing;
CREATE INDEX devices_listing ON inventory.devices (model, host_id, pci_address DESC, id)
    INCLUDE (dev_type, vendor_device_id, guest_id) WHERE NOT removed;

DROP INDEX inventory.devices_guest;
CREATE INDEX devices_guest ON inventory.devices (guest_id, model, host_id, pci_address DESC)
    WHERE guest_id IS NOT NULL AND NOT removed;
