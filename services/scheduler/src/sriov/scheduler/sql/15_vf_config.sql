-- The VF lifecycle's helpers: which VFs can serve a net's settings, the configuration a VF is
-- prepared with, and its desired state for hostd (written with the change that causes it).
-- p_desired (here and in the operations): {type: VfDesired's type tag, clean: the clean
-- baseline}, both from the schemas, passed by the store (never spliced into this text).

-- Can a VF apply what net n asks? n->'needs' lists the settings the net sets away from the
-- baseline ('lifecycle' when it sets anything, which an unmanaged VF never can), p_cannot
-- (vfs.cannot) those its PF cannot apply; n->>'driver' a netdev driver the VF must have
-- (NULL: any), p_driver (vfs.vf_driver) the one it has. Of the columns, not the row: every VF
-- of a PF gives the same answer, so a refusal's explanation asks once per PF class.
DROP FUNCTION IF EXISTS scheduler.can_serve(scheduler.vfs, jsonb);
DROP FUNCTION IF EXISTS scheduler.lacking(scheduler.vfs, jsonb);
CREATE OR REPLACE FUNCTION scheduler.can_serve(p_cannot text[], p_driver text, n jsonb)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT NOT coalesce(n->'needs' ?| p_cannot, false)
       AND (n->>'driver' IS NULL OR p_driver = n->>'driver')
$$;

-- A MAC for a reservation that names none: locally administered unicast (02:), one octet of
-- the database's epoch, then 32 bits of a sequence, so unique across the fleet and stable for
-- the reservation (stored with it); the partial unique index guards a wrap.
CREATE OR REPLACE FUNCTION scheduler.next_mac()
RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT '02:' || substr(e.value, 1, 2) || ':' || regexp_replace(
               lpad(to_hex(nextval('scheduler.mac_seq')), 8, '0'), '(..)(..)(..)(..)',
               '\1:\2:\3:\4')
    FROM scheduler.meta e WHERE e.key = 'epoch'
$$;

-- The configuration managed VF v is prepared with for net n: the net's (n->'config', the
-- defaults filled in by Python), a generated MAC when it names none and the PF sets MACs, and
-- the VF's own netdev driver when the net asks for it (driver null).
CREATE OR REPLACE FUNCTION scheduler.vf_config(v scheduler.vfs, n jsonb)
RETURNS jsonb LANGUAGE sql VOLATILE AS $$
    SELECT n->'config'
        || CASE WHEN n->'config'->>'mac' IS NULL AND NOT ('mac' = ANY (v.cannot))
                THEN jsonb_build_object('mac', scheduler.next_mac()) ELSE '{}' END
        || CASE WHEN n->'config'->>'driver' IS NULL
                THEN jsonb_build_object('driver', v.vf_driver) ELSE '{}' END
$$;

-- Publish VF p_device's desired state: the desired row and an outbox row on the VF's subject
-- (last value per VF). The VF's row is locked first, so revisions of one VF are allocated in
-- the order their transactions commit; the revision is the outbox row's id (its commit seq),
-- which the relay publishes in order (Store.claim). Returns the revision.
CREATE OR REPLACE FUNCTION scheduler.emit_desired(
    p_device text, p_state text, p_guest text, p_config jsonb, p_reset boolean,
    p_desired jsonb, a jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v     scheduler.vfs;
    v_rev bigint;
BEGIN
    SELECT * INTO v FROM scheduler.vfs WHERE device_id = p_device FOR UPDATE;
    v_rev := nextval(pg_get_serial_sequence('scheduler.outbox', 'id'));
    INSERT INTO scheduler.desired AS d (
        device_id, host_id, pci_address, revision, state, guest_id, config, reset)
    VALUES (v.device_id, v.host_id, v.pci_address, v_rev, p_state, p_guest, p_config, p_reset)
    ON CONFLICT (device_id) DO UPDATE SET
        host_id = EXCLUDED.host_id, pci_address = EXCLUDED.pci_address,
        revision = EXCLUDED.revision, state = EXCLUDED.state, guest_id = EXCLUDED.guest_id,
        config = EXCLUDED.config, reset = EXCLUDED.reset, outcome = NULL, actual = NULL,
        error = NULL, updated_at = now();
    INSERT INTO scheduler.outbox (
        id, event_id, guest_id, verb, type, payload, trace, source, vf_host, vf_pci)
    OVERRIDING SYSTEM VALUE
    VALUES (v_rev, gen_random_uuid(), coalesce(p_guest, ''), 'desired', p_desired->>'type',
            jsonb_build_object(
                'type', p_desired->>'type', 'host_id', v.host_id,
                'pci_address', v.pci_address, 'device_id', v.device_id, 'revision', v_rev,
                'state', p_state, 'guest_id', p_guest, 'config', p_config,
                'reset', p_reset)::text,
            coalesce(a->'trace', '{}'), coalesce(a->>'source', 'sriov/scheduler'),
            v.host_id, v.pci_address);
    RETURN v_rev;
END $$;

-- The VFs of reservations that just ended (p_ids[i] held by p_guests[i]): an unmanaged VF is
-- free at once; a managed one is cleaned by its hostd first (desired clean), and offered again
-- only once hostd reported it clean.
CREATE OR REPLACE FUNCTION scheduler.vacate(
    p_ids text[], p_guests text[], p_desired jsonb, a jsonb)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    d record;
    n integer := 0;
BEGIN
    FOR d IN SELECT v.device_id, v.managed
               FROM unnest(p_ids, p_guests) AS e(id, guest)
               JOIN scheduler.vfs v ON v.device_id = e.id AND v.held_by = e.guest
              ORDER BY v.device_id FOR UPDATE OF v LOOP
        UPDATE scheduler.vfs
           SET held_by = NULL, lifecycle = CASE WHEN d.managed THEN 'cleaning' ELSE 'free' END
         WHERE device_id = d.device_id;
        IF d.managed THEN
            PERFORM scheduler.emit_desired(d.device_id, 'clean', NULL, p_desired->'clean',
                                           false, p_desired, a);
        END IF;
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

-- What a VF lacks to serve net n (as can_serve), in the netdesc's spelling ("min-rate,
-- trust"), for errors.
CREATE OR REPLACE FUNCTION scheduler.lacking(p_cannot text[], p_driver text, n jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT concat_ws(', ',
        (SELECT string_agg(CASE WHEN s = 'lifecycle'
                                THEN 'VF settings (its hostd has no VF lifecycle)'
                                ELSE replace(replace(s, '_tx_rate', '-rate'), '_', '-') END,
                           ', ' ORDER BY s)
           FROM jsonb_array_elements_text(n->'needs') s WHERE s = ANY (p_cannot)),
        CASE WHEN n->>'driver' IS NOT NULL AND p_driver IS DISTINCT FROM n->>'driver'
             THEN format('driver %s (its VFs use %s)', n->>'driver',
                         coalesce(p_driver, 'another driver')) END)
$$;
