-- Helpers shared by the operations. Anything on the placement path is PL/pgSQL (its plans are
-- cached per connection) or a one-expression SQL function (inlined into the caller's query).
-- Message type tags come from the schemas as parameters (p_type), never spliced into this text.
-- The JSON arguments' keys are the fields of the structs sriov.scheduler.validation sends
-- (tests/test_sql_boundary.py checks every a->>'key' read here against them).
-- GUEST_ROWS: a guest's reservations joined with their VFs are picked through the guest index
-- first (= ANY (ARRAY(...))), then read by key. Joined directly, the join on device_id lets
-- the planner read every active reservation through the device index instead, which a plan
-- made before the table was analyzed costs the same (migration 0006 says why no other index
-- is a candidate for the picking).

-- Raise one of our errors: SQLSTATE SRV01, the message a JSON {code, message, details} that
-- sriov.scheduler.store turns back into the matching SriovError.
CREATE OR REPLACE FUNCTION scheduler.fail(p_code text, p_message text, p_details jsonb DEFAULT '{}')
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'SRV01', MESSAGE = jsonb_build_object(
        'code', p_code, 'message', p_message, 'details', p_details)::text;
END $$;

-- One Assignment (the wire schema's field names) from a VF and its reservation. PL/pgSQL, so
-- its plan is cached: as a SQL function it was not inlined (pg_stat_user_functions counted a
-- call per placement), and PostgreSQL 16 plans such a function's body at every call.
CREATE OR REPLACE FUNCTION scheduler.assignment(v scheduler.vfs, r scheduler.reservations)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN jsonb_build_object(
        'device_id', v.device_id, 'host_id', v.host_id, 'pci_address', v.pci_address,
        'addr', v.addr, 'model', v.model, 'vendor_device_id', v.vendor_device_id,
        'pf_pci_address', v.pf_pci_address, 'pf_ifname', v.pf_ifname,
        'numa_node', v.numa_node, 'wire', v.wire, 'net', r.net, 'state', r.state,
        'expires_at', r.expires_at, 'config', r.config,
        -- a managed VF (its reservation has a config) is preparing until hostd reads it back
        'prepared', CASE WHEN r.config IS NULL THEN NULL
                         WHEN v.lifecycle = 'ready' THEN 'ready' ELSE 'preparing' END,
        'iommu_group', (SELECT d.iommu_group FROM scheduler.desired d
                        WHERE d.device_id = v.device_id));
END $$;

-- Does VF v satisfy net n = {kind: model|id, value, selector: wire or network or null}?
CREATE OR REPLACE FUNCTION scheduler.matches(v scheduler.vfs, n jsonb)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT (CASE WHEN n->>'kind' = 'id' THEN v.device_id = n->>'value'
                 ELSE v.model = n->>'value' END)
       AND (n->>'selector' IS NULL OR v.wire = n->>'selector' OR v.network = n->>'selector')
$$;

-- Queue one event in the outbox (same transaction as the change it announces).
CREATE OR REPLACE FUNCTION scheduler.emit(
    p_guest text, p_verb text, p_type text, p_payload jsonb, a jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO scheduler.outbox (event_id, guest_id, verb, type, payload, trace, source)
    VALUES (gen_random_uuid(), p_guest, p_verb, p_type,
            (jsonb_build_object('type', p_type, 'guest_id', p_guest, 'ts', now()) || p_payload)::text,
            coalesce(a->'trace', '{}'), coalesce(a->>'source', 'sriov/scheduler'));
END $$;

-- Serialise the operations on one guest across replicas, then look the idempotency key up.
-- Returns NULL when the key is new, else the stored reply of the first attempt (a retry of
-- the same request waits on the guest's lock until that attempt committed or rolled back).
-- The same key with a different request is a `conflict` (409): the key is taken, the request
-- itself may be fine under a new key.
CREATE OR REPLACE FUNCTION scheduler.begin_request(a jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    prev scheduler.requests;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('sriov.scheduler.guest'), hashtext(a->>'guest_id'));
    SELECT * INTO prev FROM scheduler.requests WHERE request_id = a->>'request_id';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF prev.fingerprint <> a->>'fingerprint' THEN
        PERFORM scheduler.fail('conflict', format(
            'request_id %s was already used for a different request (%s for guest %s): '
            'use a new request_id for a new request', prev.request_id, prev.op, prev.guest_id),
            jsonb_build_object('field', 'request_id'));
    END IF;
    RETURN prev.reply;
END $$;

-- Remember the reply under the request's key, in the transaction that made it. A conflict
-- here is the same key used at the same moment for another guest (whose lock we do not hold).
CREATE OR REPLACE FUNCTION scheduler.finish_request(a jsonb, p_reply jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO scheduler.requests (request_id, op, guest_id, fingerprint, reply)
    VALUES (a->>'request_id', a->>'op', a->>'guest_id', a->>'fingerprint', p_reply)
    ON CONFLICT (request_id) DO NOTHING;
    IF NOT FOUND THEN
        PERFORM scheduler.fail('conflict', format(
            'request_id %s is being used for another request at the same time: use a new '
            'request_id for a new request', a->>'request_id'),
            jsonb_build_object('field', 'request_id'));
    END IF;
    RETURN p_reply;
END $$;

-- A guest's active reservations as a reply: {host_id, assignments, released: []}.
CREATE OR REPLACE FUNCTION scheduler.guest_assignments(p_guest text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    out jsonb;
BEGIN
    SELECT jsonb_build_object(
        'host_id', min(r.host_id),
        'assignments', coalesce(jsonb_agg(scheduler.assignment(v, r) ORDER BY r.id), '[]'),
        'released', '[]'::jsonb)
      INTO out
    FROM scheduler.reservations r JOIN scheduler.vfs v USING (device_id)
    WHERE r.id = ANY (ARRAY(SELECT id FROM scheduler.reservations  -- GUEST_ROWS
                             WHERE guest_id = p_guest AND ended_at IS NULL));
    RETURN out;
END $$;
