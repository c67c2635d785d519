-- release, confirm and expiry: the ways a reservation changes after it was made.
-- Lock order everywhere: reservations rows, then vfs rows (no deadlock between them).

-- a: {op: release, request_id, guest_id, fingerprint, device_id (or null: all), trace, source}
-- p_type (here and below): the type tag of the event the function emits, passed by the store;
-- p_desired: see 15_vf_config.sql (a managed VF's desired state becomes clean).
CREATE OR REPLACE FUNCTION scheduler.release(a jsonb, p_type text, p_desired jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_guest  text := a->>'guest_id';
    v_device text := a->>'device_id';
    v_reply  jsonb;
    v_holder text;
    v_ids    text[];
    v_hosts  text[];
BEGIN
    v_reply := scheduler.begin_request(a);
    IF v_reply IS NOT NULL THEN
        RETURN v_reply;
    END IF;
    IF v_device IS NOT NULL THEN
        SELECT held_by INTO v_holder FROM scheduler.vfs WHERE device_id = v_device;
        IF v_holder IS NOT NULL AND v_holder <> v_guest THEN
            PERFORM scheduler.fail('invalid_request', format(
                'VF %s is reserved by guest %s, not by %s: nothing to release for this guest',
                v_device, v_holder, v_guest), jsonb_build_object('field', 'device_id'));
        END IF;
    END IF;
    WITH ended AS (
        UPDATE scheduler.reservations SET ended_at = now(), end_reason = 'released'
         WHERE guest_id = v_guest AND ended_at IS NULL
           AND (v_device IS NULL OR device_id = v_device)
        RETURNING device_id, host_id)
    SELECT coalesce(array_agg(device_id ORDER BY device_id), '{}'), array_agg(DISTINCT host_id)
      INTO v_ids, v_hosts FROM ended;
    IF cardinality(v_ids) > 0 THEN
        PERFORM scheduler.vacate(v_ids, array_fill(v_guest, ARRAY[cardinality(v_ids)]),
                                 p_desired, a);
        PERFORM scheduler.emit(v_guest, 'released', p_type,
            jsonb_build_object('request_id', a->>'request_id', 'device_ids', to_jsonb(v_ids)), a);
    END IF;
    RETURN scheduler.finish_request(a, jsonb_build_object(
        'host_id', v_hosts[1], 'assignments', '[]'::jsonb, 'released', to_jsonb(v_ids)));
END $$;

-- a: {op: confirm, request_id, guest_id, fingerprint, trace, source}
-- The guest really started: its reservations no longer expire.
CREATE OR REPLACE FUNCTION scheduler.confirm(a jsonb, p_type text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_guest text := a->>'guest_id';
    v_reply jsonb;
    v_ids   text[];
BEGIN
    v_reply := scheduler.begin_request(a);
    IF v_reply IS NOT NULL THEN
        RETURN v_reply;
    END IF;
    WITH done AS (
        UPDATE scheduler.reservations SET state = 'confirmed', expires_at = NULL
         WHERE guest_id = v_guest AND ended_at IS NULL AND state = 'reserved'
        RETURNING device_id)
    SELECT coalesce(array_agg(device_id ORDER BY device_id), '{}') INTO v_ids FROM done;
    v_reply := scheduler.guest_assignments(v_guest);
    IF jsonb_array_length(v_reply->'assignments') = 0 THEN
        PERFORM scheduler.fail('not_found', format(
            'guest %s holds no reservation to confirm: it expired, was released or never '
            'existed (place it again)', v_guest), jsonb_build_object('guest_id', v_guest));
    END IF;
    IF cardinality(v_ids) > 0 THEN
        PERFORM scheduler.emit(v_guest, 'confirmed', p_type,
            jsonb_build_object('request_id', a->>'request_id', 'device_ids', to_jsonb(v_ids)), a);
    END IF;
    RETURN scheduler.finish_request(a, v_reply);
END $$;

-- End unconfirmed reservations whose TTL passed at p_now: one Expired event per guest and
-- request. Several replicas may sweep at once: SKIP LOCKED splits the work. The due rows are
-- picked once (an init plan) and updated by key: as a join with the picking query, the update
-- was planned as a nested loop over every reservation when the statistics said none existed.
CREATE OR REPLACE FUNCTION scheduler.expire(
    p_limit integer, p_now timestamptz, a jsonb, p_type text, p_desired jsonb)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_n      integer;
    v_events integer;
    v_ids    text[];
    v_guests text[];
BEGIN
    WITH ended AS (
        UPDATE scheduler.reservations r SET ended_at = now(), end_reason = 'expired'
         WHERE r.id = ANY (ARRAY(
               SELECT id FROM scheduler.reservations
                WHERE ended_at IS NULL AND state = 'reserved' AND expires_at <= p_now
                ORDER BY expires_at LIMIT p_limit
                FOR UPDATE SKIP LOCKED))
        RETURNING r.device_id, r.guest_id, r.request_id),
    events AS MATERIALIZED (  -- read below: a SELECT in WITH runs only if it is read
        SELECT scheduler.emit(e.guest_id, 'expired', p_type, jsonb_build_object(
                   'request_id', e.request_id,
                   'device_ids', jsonb_agg(e.device_id ORDER BY e.device_id)), a)
        FROM ended e GROUP BY e.guest_id, e.request_id)
    SELECT (SELECT count(*) FROM ended), (SELECT count(*) FROM events),
           (SELECT array_agg(device_id ORDER BY device_id) FROM ended),
           (SELECT array_agg(guest_id ORDER BY device_id) FROM ended)
      INTO v_n, v_events, v_ids, v_guests;
    IF v_n > 0 THEN
        PERFORM scheduler.vacate(v_ids, v_guests, p_desired, a);
    END IF;
    RETURN v_n;
END $$;
