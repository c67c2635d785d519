-- How many times hostd reported each VF gone (schemas.Device.incarnation): a VF count change
-- destroys and recreates VFs at the same PCI addresses, and the scheduler ends a reservation
-- whose VF changed incarnation even when it never saw the VF absent.
ALTER TABLE inventory.devices ADD COLUMN incarnation bigint NOT NULL DEFAULT 0;
