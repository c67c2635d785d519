-- The free VFs of each wire and of each network, in the walk's order. A net naming a wire or
-- network (`sriov-nic-model=...:wire`) walks these instead of skipping the VFs of every other
-- wire one by one: with hosts spread over many wires, each placement read the VFs of all the
-- hosts before one on the net's wire (and every VF of the model when none had a free one).
CREATE INDEX IF NOT EXISTS vfs_free_by_wire ON scheduler.vfs (model, wire, host_key, host_id)
    WHERE held_by IS NULL AND lifecycle = 'free' AND present AND link_up AND NOT removed
      AND wire IS NOT NULL;
CREATE INDEX IF NOT EXISTS vfs_free_by_network
    ON scheduler.vfs (model, network, host_key, host_id)
    WHERE held_by IS NULL AND lifecycle = 'free' AND present AND link_up AND NOT removed
      AND network IS NOT NULL;
