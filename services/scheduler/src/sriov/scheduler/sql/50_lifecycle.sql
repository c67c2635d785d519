-- The VF lifecycle after a reservation: hostd's outcomes, cordons and operator resets.

-- e: {device_id, host_id, pci_address, revision, outcome, actual, error, iommu_group} (one
-- VfApplied of hostd); p_types: {ready, failed} type tags; p_desired: see 15_vf_config.sql.
-- An outcome for another revision than the VF's current desired one is ignored ('stale').
-- A 'failed' for a VF already ready (hostd re-applying it after drift, or after its restart,
-- and failing) is 'degraded': the guest has been told Ready and has the VF, so its
-- reservation stays (ending it would offer the VF to another guest while the first still has
-- it); the failure is kept on the VF's desired row (outcome, error) for get and the doctor,
-- and the release restores the VF (or quarantines it) as always.
-- Returns what it did: stale, duplicate, ready, failed, degraded, clean, quarantined or
-- repaired.
CREATE OR REPLACE FUNCTION scheduler.vf_applied(e jsonb, a jsonb, p_types jsonb, p_desired jsonb)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    d       scheduler.desired;
    v       scheduler.vfs;
    r       scheduler.reservations;
    v_rev   bigint := (e->>'revision')::bigint;
    v_out   text := e->>'outcome';
    v_ids   jsonb;
    v_asg   jsonb;
    v_devs  text[];
BEGIN
    SELECT * INTO d FROM scheduler.desired WHERE device_id = e->>'device_id';
    IF NOT FOUND OR d.revision <> v_rev THEN
        RETURN 'stale';
    END IF;
    IF v_out = 'repaired' THEN  -- a drift hostd put back: counted, nothing changes
        RETURN 'repaired';
    END IF;
    -- The guest's lock (as its requests take it), so two of its VFs turning ready at once
    -- cannot both miss that the other one is ready; then rows in the usual order.
    IF d.guest_id IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('sriov.scheduler.guest'), hashtext(d.guest_id));
    END IF;
    SELECT * INTO r FROM scheduler.reservations
     WHERE device_id = d.device_id AND ended_at IS NULL FOR UPDATE;
    SELECT * INTO v FROM scheduler.vfs WHERE device_id = d.device_id FOR UPDATE;
    SELECT * INTO d FROM scheduler.desired WHERE device_id = d.device_id FOR UPDATE;
    IF d.revision <> v_rev THEN  -- replaced while we waited
        RETURN 'stale';
    END IF;
    UPDATE scheduler.desired
       SET outcome = v_out, actual = e->'actual', error = e->>'error',
           iommu_group = coalesce((e->>'iommu_group')::integer, iommu_group), updated_at = now()
     WHERE device_id = d.device_id;

    IF d.state = 'assigned' THEN
        IF r.id IS NULL OR r.guest_id IS DISTINCT FROM d.guest_id THEN
            RETURN 'stale';  -- the reservation ended; its clean state is on its way
        END IF;
        IF v_out = 'ready' THEN
            IF v.lifecycle <> 'preparing' THEN
                RETURN 'duplicate';
            END IF;
            UPDATE scheduler.vfs SET lifecycle = 'ready' WHERE device_id = v.device_id;
            IF NOT EXISTS (
                    SELECT 1 FROM scheduler.reservations r2 JOIN scheduler.vfs v2 USING (device_id)
                    WHERE r2.id = ANY (ARRAY(SELECT id FROM scheduler.reservations  -- GUEST_ROWS
                                              WHERE guest_id = r.guest_id AND ended_at IS NULL
                                                AND host_id = r.host_id))
                      AND v2.lifecycle = 'preparing') THEN
                SELECT jsonb_agg(r2.device_id ORDER BY r2.id),
                       jsonb_agg(scheduler.assignment(v2, r2) ORDER BY r2.id)
                  INTO v_ids, v_asg
                FROM scheduler.reservations r2 JOIN scheduler.vfs v2 USING (device_id)
                WHERE r2.id = ANY (ARRAY(SELECT id FROM scheduler.reservations  -- GUEST_ROWS
                                          WHERE guest_id = r.guest_id AND ended_at IS NULL
                                            AND host_id = r.host_id));
                PERFORM scheduler.emit(r.guest_id, 'ready', p_types->>'ready', jsonb_build_object(
                    'request_id', r.request_id, 'host_id', r.host_id, 'device_ids', v_ids,
                    'assignments', v_asg), a);
            END IF;
            RETURN 'ready';
        END IF;
        IF v.lifecycle = 'ready' THEN  -- a re-apply failed: see above
            RETURN 'degraded';
        END IF;
        -- The host cannot prepare it: the whole request fails, not this VF alone (a guest
        -- that asked for two VFs must never see Ready with one). Its reservations end, the
        -- guest is told once, and their VFs are cleaned (this one stays quarantined when
        -- hostd says so). The guest's lock, taken above, keeps its other VFs' outcomes out.
        WITH ended AS (
            UPDATE scheduler.reservations SET ended_at = now(), end_reason = 'failed'
             WHERE guest_id = r.guest_id AND request_id = r.request_id
               AND host_id = r.host_id AND ended_at IS NULL
            RETURNING id, device_id)
        SELECT array_agg(device_id ORDER BY id) INTO v_devs FROM ended;
        PERFORM scheduler.vacate(v_devs, array_fill(r.guest_id, ARRAY[cardinality(v_devs)]),
                                 p_desired, a);
        IF v_out = 'quarantined' THEN
            UPDATE scheduler.vfs SET lifecycle = 'quarantined' WHERE device_id = r.device_id;
        END IF;
        PERFORM scheduler.emit(r.guest_id, 'failed', p_types->>'failed', jsonb_build_object(
            'request_id', r.request_id, 'op', 'prepare',
            'device_ids', to_jsonb(v_devs),
            'error', jsonb_build_object(
                'code', 'prepare_failed',
                'message', format('host %s could not prepare VF %s (%s) for guest %s: %s; the '
                                  'request''s reservations ended', r.host_id, v.pci_address, r.device_id,
                                  r.guest_id, coalesce(e->>'error', v_out)),
                'details', jsonb_build_object('host_id', r.host_id, 'device_id', r.device_id,
                                              'outcome', v_out))), a);
        RETURN 'failed';
    END IF;

    -- Desired clean: the VF is offered again only once hostd read it back clean (a
    -- quarantined VF only after an operator's reset, which makes it 'cleaning' again).
    IF v_out = 'clean' THEN
        IF v.held_by IS NULL AND v.lifecycle = 'cleaning' THEN
            UPDATE scheduler.vfs SET lifecycle = 'free' WHERE device_id = v.device_id;
            RETURN 'clean';
        END IF;
        RETURN 'duplicate';
    END IF;
    IF v.lifecycle = 'quarantined' THEN
        RETURN 'duplicate';
    END IF;
    UPDATE scheduler.vfs SET lifecycle = 'quarantined' WHERE device_id = v.device_id;
    RETURN 'quarantined';
END $$;

-- a: {host_id, cordoned, reason}. A cordoned host takes no new placements; returns
-- {host_id, cordoned, reason, held: [{guest_id, device_id, pci_address}]} (who still holds
-- VFs there, so a drain knows whom it waits for). The host's cordon lock, taken exclusively
-- first, waits for the placements already choosing this host (CORDON_LOCK in 20_place.sql):
-- once a cordon returns, every guest placed there is in its list and no other is placed.
CREATE OR REPLACE FUNCTION scheduler.cordon(a jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    h scheduler.hosts;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('sriov.scheduler.cordon'), hashtext(a->>'host_id'));
    UPDATE scheduler.hosts
       SET cordoned = (a->>'cordoned')::boolean,
           cordon_reason = CASE WHEN (a->>'cordoned')::boolean THEN coalesce(a->>'reason', '')
                                ELSE '' END
     WHERE host_id = a->>'host_id'
    RETURNING * INTO h;
    IF NOT FOUND THEN
        PERFORM scheduler.fail('not_found', format(
            'host %s is not known to the scheduler: no VF of it was ever reported',
            a->>'host_id'), jsonb_build_object('host_id', a->>'host_id'));
    END IF;
    RETURN jsonb_build_object(
        'host_id', h.host_id, 'cordoned', h.cordoned, 'reason', h.cordon_reason,
        'held', coalesce((
            SELECT jsonb_agg(jsonb_build_object('guest_id', r.guest_id,
                                                'device_id', r.device_id,
                                                'pci_address', v.pci_address)
                             ORDER BY r.guest_id, v.pci_address)
            FROM scheduler.reservations r JOIN scheduler.vfs v USING (device_id)
            -- the host's held VFs first (vfs_held_by_host), then their reservations by key:
            -- reservations have no host index, and filtered by host they were read whole
            WHERE r.device_id = ANY (ARRAY(SELECT device_id FROM scheduler.vfs
                                            WHERE host_id = h.host_id AND held_by IS NOT NULL))
              AND r.ended_at IS NULL), '[]'));
END $$;

-- a: {op: vf-reset, request_id, guest_id (the VF's lock key), fingerprint, host_id,
-- pci_address, device_id, trace, source}. Only a quarantined VF: its desired state is clean
-- again with reset, hostd restores it once more, and it is offered once reported clean.
-- Returns {host_id, pci_address, device_id, state, revision}.
CREATE OR REPLACE FUNCTION scheduler.vf_reset(a jsonb, p_desired jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v       scheduler.vfs;
    v_reply jsonb;
    v_rev   bigint;
BEGIN
    v_reply := scheduler.begin_request(a);
    IF v_reply IS NOT NULL THEN
        RETURN v_reply;
    END IF;
    SELECT * INTO v FROM scheduler.vfs WHERE device_id = a->>'device_id' FOR UPDATE;
    IF NOT FOUND OR v.removed THEN
        PERFORM scheduler.fail('not_found', format(
            'no VF %s on host %s is known to the scheduler', a->>'pci_address', a->>'host_id'),
            jsonb_build_object('host_id', a->>'host_id', 'pci_address', a->>'pci_address'));
    END IF;
    IF v.lifecycle <> 'quarantined' THEN
        PERFORM scheduler.fail('conflict', format(
            'VF %s on host %s is %s, not quarantined: only a quarantined VF is reset',
            v.pci_address, v.host_id, v.lifecycle),
            jsonb_build_object('device_id', v.device_id, 'state', v.lifecycle));
    END IF;
    UPDATE scheduler.vfs SET lifecycle = 'cleaning' WHERE device_id = v.device_id;
    v_rev := scheduler.emit_desired(v.device_id, 'clean', NULL, p_desired->'clean', true,
                                    p_desired, a);
    RETURN scheduler.finish_request(a, jsonb_build_object(
        'host_id', v.host_id, 'pci_address', v.pci_address, 'device_id', v.device_id,
        'state', 'cleaning', 'revision', v_rev));
END $$;
