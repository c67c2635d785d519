-- The free VFs whose hostd runs the VF lifecycle, in the walk's order. A net with settings can
-- only be served by one of them (an unmanaged VF "cannot" lifecycle), so its walk reads this
-- index instead of skipping the model's unmanaged VFs one by one: a fleet part-way through an
-- upgrade of hostd read every one of them (12,800 index entries, 16-27 ms, for 200 unmanaged
-- hosts before the one managed host; 640,000 at fleet size), and found none when none was free.
CREATE INDEX IF NOT EXISTS vfs_free_managed_by_model ON scheduler.vfs (model, host_key, host_id)
    WHERE held_by IS NULL AND lifecycle = 'free' AND present AND link_up AND NOT removed
      AND managed;
