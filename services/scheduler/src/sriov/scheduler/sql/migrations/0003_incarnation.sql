-- The incarnation of each VF as inventory counts it (schemas.Device.incarnation): a reserved
-- VF whose incarnation moved was destroyed and recreated (a VF count change), so its
-- reservation is lost even if the scheduler never saw it absent.
ALTER TABLE scheduler.vfs ADD COLUMN incarnation bigint NOT NULL DEFAULT 0;
