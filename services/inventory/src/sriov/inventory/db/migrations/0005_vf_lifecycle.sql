-- The VF lifecycle (issue 12): what each VF's PF can apply (from hostd), the configuration
-- hostd read back, and where the VF is between reservation and a clean release.
--
-- ``lifecycle`` is derived from two ordered sources that the ingest keeps apart:
-- the scheduler's placement events (hold_seq, end_seq, ready_seq: its commit order) and
-- hostd's outcomes (outcome, outcome_revision: the revision of the desired state they
-- answer, from the same scheduler sequence). Either may arrive first; see lifecycle.py.

ALTER TABLE inventory.devices
    ADD COLUMN capabilities     jsonb,   -- schemas.PfCapabilities of the VF's PF
    ADD COLUMN lifecycle        text CHECK (lifecycle IN
                                    ('free', 'preparing', 'ready', 'cleaning', 'quarantined')),
    ADD COLUMN actual           jsonb,   -- schemas.VfConfig hostd last read back
    ADD COLUMN hold_seq         bigint NOT NULL DEFAULT 0,  -- last Reserved
    ADD COLUMN end_seq          bigint NOT NULL DEFAULT 0,  -- last Released/Expired/Lost/Failed
    ADD COLUMN ready_seq        bigint NOT NULL DEFAULT 0,  -- last placement Ready
    ADD COLUMN outcome          text,    -- hostd's last outcome other than "repaired"
    ADD COLUMN outcome_revision bigint NOT NULL DEFAULT 0;

-- `isolated-device-list --lifecycle quarantined`: few rows, found without a scan.
CREATE INDEX devices_lifecycle ON inventory.devices (lifecycle, model, host_id, pci_address DESC)
    WHERE lifecycle IS NOT NULL AND NOT removed;
