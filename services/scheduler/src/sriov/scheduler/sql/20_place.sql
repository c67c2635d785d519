-- place and attach: one VF per net for a guest, all on one host, in one transaction, or none.
-- "Free" everywhere means: held_by IS NULL AND lifecycle = 'free' AND present AND link_up AND
-- NOT removed (spelled out in each query so the planner can use the partial indexes on exactly
-- that predicate), and the VF must fit the net (scheduler.fits: settings, wire, NUMA).

-- One free VF of net n on host p_host, locked FOR UPDATE SKIP LOCKED (concurrent placements
-- never wait for each other and never get the same VF), or NULL. Each query is a LIMIT 1 walk
-- of a partial index of free VFs, so its cost does not grow with the host's size:
--   spread: round-robin over PFs, the free VF with the lowest VF index (every PF gives its
--           first VF before any gives its second), avoiding PFs in p_pfs (the guest's);
--   pack:   first fit, the PF with the lowest address that has a free VF, preferring PFs in
--           p_pfs (the guest's), so a PF is filled before the next is touched.
-- The walks are ordered index scans whatever the statistics say (WALK_PLAN): a generic plan
-- that estimated the filters as very selective read every free VF of the model through a
-- bitmap and sorted them (2.9 ms instead of 0.1 at 8,000 VFs, growing with the fleet).
-- A free VF of the right model fits net n when its PF can apply the net's settings, it is on
-- the wire or network the net selects, and on the NUMA node required (inlined by the planner).
CREATE OR REPLACE FUNCTION scheduler.fits(v scheduler.vfs, n jsonb, p_numa integer)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT scheduler.can_serve(v.cannot, v.vf_driver, n)
       AND (n->>'selector' IS NULL OR v.wire = n->>'selector' OR v.network = n->>'selector')
       AND (p_numa IS NULL OR v.numa_node = p_numa)
$$;

CREATE OR REPLACE FUNCTION scheduler.pick_vf(
    p_host text, n jsonb, p_numa integer, p_pack boolean, p_pfs text[], p_exclude text[],
    OUT device_id text, OUT pf text)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off  -- WALK_PLAN
AS $$
DECLARE
    v_model text := n->>'value';
BEGIN
    IF p_pack THEN
        SELECT v.device_id, v.pf_pci_address INTO device_id, pf
        FROM scheduler.vfs v
        WHERE v.host_id = p_host AND v.model = v_model
          AND v.held_by IS NULL AND v.lifecycle = 'free' AND v.present AND v.link_up
          AND NOT v.removed AND scheduler.fits(v, n, p_numa)
          AND (p_pfs IS NULL OR v.pf_pci_address = ANY (p_pfs))
          AND v.device_id <> ALL (p_exclude)
        ORDER BY v.host_id, v.model, v.pf_pci_address, v.vf_index
        LIMIT 1 FOR UPDATE SKIP LOCKED;
    ELSE
        SELECT v.device_id, v.pf_pci_address INTO device_id, pf
        FROM scheduler.vfs v
        WHERE v.host_id = p_host AND v.model = v_model
          AND v.held_by IS NULL AND v.lifecycle = 'free' AND v.present AND v.link_up
          AND NOT v.removed AND scheduler.fits(v, n, p_numa)
          AND v.pf_pci_address <> ALL (coalesce(p_pfs, '{}'))
          AND v.device_id <> ALL (p_exclude)
        ORDER BY v.host_id, v.model, v.vf_index, v.pf_pci_address
        LIMIT 1 FOR UPDATE SKIP LOCKED;
    END IF;
END $$;

-- One VF per net on host p_host, all or nothing (NULL when a net cannot be satisfied). Nets
-- naming a VF by id were checked and locked by check_id_net. Preferences are tried in
-- order and dropped one by one: the guest's NUMA node ("preferred"), then the PF preference.
CREATE OR REPLACE FUNCTION scheduler.pick_on_host(
    p_host text, p_nets jsonb, p_numa_req integer, p_numa_pref integer, p_packing text,
    p_used_pfs text[])
RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    n       jsonb;
    chosen  text[] := '{}';
    used    text[] := coalesce(p_used_pfs, '{}');
    pack    boolean := p_packing = 'pack';
    numas   integer[] := CASE WHEN p_numa_pref IS NOT NULL THEN ARRAY[p_numa_pref, NULL]
                              ELSE ARRAY[p_numa_req] END;
    numa    integer;
    got     text;
    got_pf  text;
BEGIN
    FOR n IN SELECT * FROM jsonb_array_elements(p_nets) LOOP
        got := NULL;
        IF n->>'kind' = 'id' THEN
            got := n->>'value';
            SELECT v.pf_pci_address INTO got_pf FROM scheduler.vfs v WHERE v.device_id = got;
        ELSE
            FOREACH numa IN ARRAY numas LOOP
                IF cardinality(used) > 0 THEN  -- spread: avoid used PFs; pack: keep to them
                    SELECT p.device_id, p.pf INTO got, got_pf
                    FROM scheduler.pick_vf(p_host, n, numa, pack, used, chosen) p;
                END IF;
                IF got IS NULL THEN
                    SELECT p.device_id, p.pf INTO got, got_pf
                    FROM scheduler.pick_vf(p_host, n, numa, pack, NULL, chosen) p;
                END IF;
                EXIT WHEN got IS NOT NULL;
            END LOOP;
        END IF;
        IF got IS NULL THEN
            RETURN NULL;
        END IF;
        chosen := chosen || got;
        used := used || got_pf;
    END LOOP;
    RETURN chosen;
END $$;

-- Walk the online hosts with a free VF for net n (one of the request's) in host_key
-- order from p_start (random for spread, lowest for pack), wrapping around once, and return
-- the first host where every net can be satisfied, with the VFs picked there.
CREATE OR REPLACE FUNCTION scheduler.pick_host(
    n jsonb, p_nets jsonb, p_numa_req integer, p_numa_pref integer, p_packing text,
    p_start integer, OUT host_id text, OUT ids text[])
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off  -- WALK_PLAN
AS $$
DECLARE
    v_model text := n->>'value';
    v_key   integer := p_start;
    v_cand  text := '';
    v_stop  integer := 2147483647;
    v_sel   text := n->>'selector';
    -- settings need a hostd running the lifecycle: walk only those VFs (their own index)
    v_managed boolean := coalesce(n->'needs' ? 'lifecycle', false);
BEGIN
    FOR lap IN 1 .. 2 LOOP
        LOOP
            -- an ordered walk of a free-VF index; the host's status is one probe after it.
            -- The narrowest index that holds every VF that can fit: the net's wire and
            -- network (merged: the selector names either), else the managed VFs, else all.
            IF v_sel IS NOT NULL THEN
                SELECT c.host_id, c.host_key INTO v_cand, v_key
                FROM ((SELECT v.host_id, v.host_key FROM scheduler.vfs v
                       WHERE v.model = v_model AND v.wire = v_sel AND v.held_by IS NULL
                         AND v.lifecycle = 'free' AND v.present AND v.link_up AND NOT v.removed
                         AND (v.managed OR NOT v_managed) AND scheduler.fits(v, n, p_numa_req)
                         AND (v.host_key, v.host_id) > (v_key, v_cand) AND v.host_key <= v_stop
                       ORDER BY v.host_key, v.host_id LIMIT 1)
                      UNION ALL
                      (SELECT v.host_id, v.host_key FROM scheduler.vfs v
                       WHERE v.model = v_model AND v.network = v_sel AND v.held_by IS NULL
                         AND v.lifecycle = 'free' AND v.present AND v.link_up AND NOT v.removed
                         AND (v.managed OR NOT v_managed) AND scheduler.fits(v, n, p_numa_req)
                         AND (v.host_key, v.host_id) > (v_key, v_cand) AND v.host_key <= v_stop
                       ORDER BY v.host_key, v.host_id LIMIT 1)) c
                ORDER BY c.host_key, c.host_id
                LIMIT 1;
            ELSIF v_managed THEN
                SELECT v.host_id, v.host_key INTO v_cand, v_key
                FROM scheduler.vfs v
                WHERE v.model = v_model AND v.held_by IS NULL AND v.lifecycle = 'free'
                  AND v.present AND v.link_up AND NOT v.removed AND v.managed
                  AND scheduler.fits(v, n, p_numa_req)
                  AND (v.host_key, v.host_id) > (v_key, v_cand)
                  AND v.host_key <= v_stop
                ORDER BY v.host_key, v.host_id
                LIMIT 1;
            ELSE
                SELECT v.host_id, v.host_key INTO v_cand, v_key
                FROM scheduler.vfs v
                WHERE v.model = v_model AND v.held_by IS NULL AND v.lifecycle = 'free'
                  AND v.present AND v.link_up AND NOT v.removed
                  AND scheduler.fits(v, n, p_numa_req)
                  AND (v.host_key, v.host_id) > (v_key, v_cand)
                  AND v.host_key <= v_stop
                ORDER BY v.host_key, v.host_id
                LIMIT 1;
            END IF;
            EXIT WHEN NOT FOUND;
            -- CORDON_LOCK: held shared until commit, so a cordon waits for this placement
            -- and lists it; a host being cordoned right now is skipped, never waited for
            -- (two cordons and two walks crossing them could otherwise deadlock)
            CONTINUE WHEN NOT pg_try_advisory_xact_lock_shared(
                hashtext('sriov.scheduler.cordon'), hashtext(v_cand));
            CONTINUE WHEN NOT EXISTS (
                SELECT 1 FROM scheduler.hosts h
                 WHERE h.host_id = v_cand AND h.status = 'online' AND NOT h.cordoned);
            ids := scheduler.pick_on_host(v_cand, p_nets, p_numa_req, p_numa_pref, p_packing,
                                          NULL);
            IF ids IS NOT NULL THEN
                host_id := v_cand;
                RETURN;
            END IF;
        END LOOP;
        EXIT WHEN p_start = -2147483648;
        -- second lap: the hosts before the start key
        v_stop := p_start;
        v_key := -2147483648;
        v_cand := '';
    END LOOP;
END $$;

-- Every model of the fleet, by a loose scan of the model index (a few probes, not a scan).
CREATE OR REPLACE FUNCTION scheduler.known_models()
RETURNS SETOF text LANGUAGE sql STABLE AS $$
    WITH RECURSIVE m AS (
        SELECT min(model) AS model FROM scheduler.vfs
        UNION ALL
        SELECT (SELECT min(v.model) FROM scheduler.vfs v WHERE v.model > m.model)
        FROM m WHERE m.model IS NOT NULL)
    SELECT m.model FROM m
    WHERE m.model IS NOT NULL
      AND EXISTS (SELECT 1 FROM scheduler.vfs v WHERE v.model = m.model AND NOT v.removed)
$$;

-- A net naming one VF (sriov-nic-id=...): lock it and say why it cannot be had, or return its
-- host.
CREATE OR REPLACE FUNCTION scheduler.check_id_net(n jsonb, p_guest text, p_numa_req integer)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v      scheduler.vfs;
    status text;
BEGIN
    SELECT * INTO v FROM scheduler.vfs WHERE device_id = n->>'value' FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM scheduler.fail('not_found', format(
            'no VF with id %s is known to the scheduler (list them with sriovctl '
            'isolated-device-list)', n->>'value'), jsonb_build_object('device_id', n->>'value'));
    END IF;
    IF v.removed OR NOT v.present THEN
        PERFORM scheduler.fail('not_found', format(
            'VF %s (%s on host %s) no longer exists: it was removed from the host',
            v.device_id, v.addr, v.host_id), jsonb_build_object('device_id', v.device_id));
    END IF;
    IF v.held_by IS NOT NULL THEN
        PERFORM scheduler.fail('device_busy', format(
            'VF %s (%s on host %s) is already reserved by guest %s%s',
            v.device_id, v.addr, v.host_id, v.held_by,
            CASE WHEN v.held_by = p_guest THEN ' (this guest)'
                 ELSE format(': pick another VF, or ask for any free one with '
                             'sriov-nic-model=%s', v.model) END),
            jsonb_build_object('device_id', v.device_id, 'guest_id', v.held_by));
    END IF;
    IF v.lifecycle IN ('cleaning', 'quarantined') THEN
        PERFORM scheduler.fail('no_capacity', format(
            'VF %s (%s on host %s) cannot be reserved: it is %s%s', v.device_id, v.addr,
            v.host_id, v.lifecycle,
            CASE WHEN v.lifecycle = 'cleaning' THEN ' (its host restores it after its last guest)'
                 ELSE ' (its restore failed: an operator must reset it with vf-reset)' END),
            jsonb_build_object('device_id', v.device_id, 'reason', v.lifecycle));
    END IF;
    IF NOT scheduler.can_serve(v.cannot, v.vf_driver, n) THEN
        PERFORM scheduler.fail('no_capacity', format(
            'VF %s (%s on host %s) cannot apply what the net asks: its PF lacks %s',
            v.device_id, v.addr, v.host_id, scheduler.lacking(v.cannot, v.vf_driver, n)),
            jsonb_build_object('device_id', v.device_id, 'reason', 'capabilities'));
    END IF;
    SELECT h.status INTO status FROM scheduler.hosts h WHERE h.host_id = v.host_id;
    IF status IS DISTINCT FROM 'online' THEN
        PERFORM scheduler.fail('host_offline', format(
            'VF %s is on host %s, which is %s: it cannot be reserved until the host is online',
            v.device_id, v.host_id, coalesce(status, 'unknown')),
            jsonb_build_object('host_id', v.host_id, 'device_id', v.device_id));
    END IF;
    IF NOT v.link_up THEN
        PERFORM scheduler.fail('no_capacity', format(
            'VF %s (%s on host %s) cannot be reserved: the link of its PF %s is down',
            v.device_id, v.addr, v.host_id, coalesce(v.pf_ifname, v.pf_pci_address)),
            jsonb_build_object('device_id', v.device_id, 'reason', 'link_down'));
    END IF;
    IF n->>'selector' IS NOT NULL AND v.wire IS DISTINCT FROM n->>'selector'
       AND v.network IS DISTINCT FROM n->>'selector' THEN
        PERFORM scheduler.fail('no_capacity', format(
            'VF %s is on wire %s (network %s), not on %s', v.device_id,
            coalesce(v.wire, 'none'), coalesce(v.network, 'none'), n->>'selector'),
            jsonb_build_object('device_id', v.device_id, 'reason', 'wire_mismatch'));
    END IF;
    IF p_numa_req IS NOT NULL AND v.numa_node <> p_numa_req THEN
        PERFORM scheduler.fail('no_capacity', format(
            'VF %s is on NUMA node %s, but the guest requires NUMA node %s', v.device_id,
            v.numa_node, p_numa_req),
            jsonb_build_object('device_id', v.device_id, 'reason', 'numa_mismatch'));
    END IF;
    RETURN v.host_id;
END $$;

-- a: {op: place|attach, request_id, guest_id, fingerprint,
--     nets: [{desc, kind: model|id, value, selector}], host_id, numa_policy, numa_node,
--     packing, ttl_s, start_key, trace, source}; each net also {config, needs, driver}
-- p_type: the type tag of the Reserved event it emits (the schemas' own, passed by the store);
-- p_desired: see 15_vf_config.sql. A managed VF is reserved 'preparing', with its desired
-- state (the net's configuration) published in this transaction; an unmanaged one 'ready'.
-- Returns {host_id, assignments, released: []}; raises SRV01 with the reason otherwise.
CREATE OR REPLACE FUNCTION scheduler.place(a jsonb, p_type text, p_desired jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_guest     text := a->>'guest_id';
    v_host      text := a->>'host_id';
    v_numa_req  integer := CASE WHEN a->>'numa_policy' = 'required' THEN (a->>'numa_node')::integer END;
    v_numa_pref integer := CASE WHEN a->>'numa_policy' = 'preferred' THEN (a->>'numa_node')::integer END;
    v_nets      jsonb := a->'nets';
    v_lead      jsonb;
    v_reply     jsonb;
    v_held      text[];
    v_used_pfs  text[];
    v_id_host   text;
    v_status    text;
    v_ids       text[];
    v_assign    jsonb;
    v_expires   timestamptz;
    v_cfgs      jsonb;
    v_dup       record;
    n           jsonb;
BEGIN
    v_reply := scheduler.begin_request(a);
    IF v_reply IS NOT NULL THEN
        RETURN v_reply;
    END IF;

    -- A MAC the request names must not be another active reservation's.
    SELECT x.ord, r.guest_id, r.device_id, r.mac INTO v_dup
    FROM jsonb_array_elements(v_nets) WITH ORDINALITY AS x(n, ord)
    JOIN scheduler.reservations r ON r.mac = x.n->'config'->>'mac' AND r.ended_at IS NULL
    LIMIT 1;
    IF FOUND THEN
        PERFORM scheduler.fail('invalid_request', format(
            '%s.mac: %s is the MAC of VF %s, held by guest %s: a MAC is unique across the '
            'fleet (leave mac out and the scheduler generates one)',
            CASE WHEN a->>'op' = 'attach' THEN 'net' ELSE format('nets[%s]', v_dup.ord - 1) END,
            v_dup.mac, v_dup.device_id, v_dup.guest_id),
            jsonb_build_object('field', CASE WHEN a->>'op' = 'attach' THEN 'net.mac'
                                             ELSE format('nets[%s].mac', v_dup.ord - 1) END,
                               'key', 'mac'));
    END IF;

    IF a->>'op' = 'attach' OR EXISTS (
            SELECT 1 FROM scheduler.reservations WHERE guest_id = v_guest AND ended_at IS NULL) THEN
        SELECT array_agg(DISTINCT r.host_id), array_agg(DISTINCT v.pf_pci_address)
          INTO v_held, v_used_pfs
        FROM scheduler.reservations r JOIN scheduler.vfs v USING (device_id)
        WHERE r.id = ANY (ARRAY(SELECT id FROM scheduler.reservations  -- GUEST_ROWS
                                 WHERE guest_id = v_guest AND ended_at IS NULL));
    END IF;
    IF a->>'op' = 'place' AND v_held IS NOT NULL THEN
        PERFORM scheduler.fail('invalid_request', format(
            'guest %s already holds VFs on host %s: attach another one with server-attach-network, '
            'or release them first', v_guest, array_to_string(v_held, ', ')),
            jsonb_build_object('field', 'guest_id'));
    END IF;
    IF a->>'op' = 'attach' THEN
        IF v_held IS NULL AND v_host IS NULL THEN
            PERFORM scheduler.fail('invalid_request', format(
                'guest %s holds no VF, so its host is unknown: give host_id', v_guest),
                jsonb_build_object('field', 'host_id'));
        END IF;
        IF v_held IS NOT NULL THEN
            IF v_host IS NOT NULL AND v_host <> v_held[1] THEN
                PERFORM scheduler.fail('invalid_request', format(
                    'guest %s runs on host %s, not on %s', v_guest, v_held[1], v_host),
                    jsonb_build_object('field', 'host_id'));
            END IF;
            v_host := v_held[1];
        END IF;
    END IF;

    -- Nets naming a VF fix the host (locked in device id order: no deadlock between requests).
    FOR n IN SELECT x FROM jsonb_array_elements(v_nets) x
             WHERE x->>'kind' = 'id' ORDER BY x->>'value' LOOP
        v_id_host := scheduler.check_id_net(n, v_guest, v_numa_req);
        IF v_host IS NOT NULL AND v_host <> v_id_host THEN
            PERFORM scheduler.fail('invalid_request', format(
                'VF %s is on host %s, but this request is for host %s: all VFs of one request '
                'must be on one host', n->>'value', v_id_host, v_host),
                jsonb_build_object('field', 'nets'));
        END IF;
        v_host := v_id_host;
    END LOOP;

    IF v_host IS NOT NULL THEN
        -- CORDON_LOCK (see pick_host); one host only, so waiting for a cordon cannot deadlock
        PERFORM pg_advisory_xact_lock_shared(hashtext('sriov.scheduler.cordon'), hashtext(v_host));
        SELECT status INTO v_status FROM scheduler.hosts WHERE host_id = v_host;
        IF v_status IS NULL THEN
            PERFORM scheduler.fail('not_found', format(
                'host %s is not known to the scheduler: no VF of it was ever reported', v_host),
                jsonb_build_object('host_id', v_host));
        ELSIF v_status <> 'online' THEN
            PERFORM scheduler.fail('host_offline', format(
                'host %s is %s: no VF can be reserved on it until it is online again',
                v_host, v_status), jsonb_build_object('host_id', v_host));
        END IF;
        SELECT cordon_reason INTO v_status FROM scheduler.hosts
         WHERE host_id = v_host AND cordoned;
        IF FOUND THEN
            PERFORM scheduler.fail('no_capacity', format(
                'no capacity on host %s: it is cordoned%s, so it takes no new placements '
                '(sriovctl host-uncordon %s ends that)', v_host,
                CASE WHEN v_status <> '' THEN format(' (%s)', v_status) ELSE '' END, v_host),
                jsonb_build_object('host_id', v_host, 'reason', 'cordoned'));
        END IF;
        v_ids := scheduler.pick_on_host(v_host, v_nets, v_numa_req, v_numa_pref,
                                        a->>'packing', v_used_pfs);
    ELSE
        -- Every net must be met on the host found, so the walk may follow any of them: a net
        -- with settings if there is one (it walks only the hosts running the lifecycle).
        v_lead := v_nets->0;
        IF jsonb_array_length(v_nets) > 1 AND NOT coalesce(v_lead->'needs' ? 'lifecycle', false)
        THEN  -- a query only when there is a choice (most requests have one net)
            v_lead := coalesce((SELECT x.n FROM jsonb_array_elements(v_nets) WITH ORDINALITY x(n, i)
                                 WHERE x.n->'needs' ? 'lifecycle' ORDER BY x.i LIMIT 1), v_lead);
        END IF;
        -- "preferred": first only hosts with a free VF on the guest's NUMA node, then any.
        SELECT p.host_id, p.ids INTO v_host, v_ids
        FROM scheduler.pick_host(v_lead, v_nets, coalesce(v_numa_req, v_numa_pref),
                                 v_numa_pref, a->>'packing', (a->>'start_key')::integer) p;
        IF v_ids IS NULL AND v_numa_pref IS NOT NULL THEN
            SELECT p.host_id, p.ids INTO v_host, v_ids
            FROM scheduler.pick_host(v_lead, v_nets, NULL, v_numa_pref, a->>'packing',
                                     (a->>'start_key')::integer) p;
        END IF;
    END IF;
    IF v_ids IS NULL THEN
        PERFORM scheduler.no_capacity(a, v_host, v_numa_req);
    END IF;

    v_expires := now() + make_interval(secs => (a->>'ttl_s')::float8);
    UPDATE scheduler.vfs SET held_by = v_guest,
           lifecycle = CASE WHEN managed THEN 'preparing' ELSE 'ready' END
     WHERE device_id = ANY (v_ids);
    SELECT jsonb_object_agg(v.device_id, scheduler.vf_config(
               v, v_nets->(array_position(v_ids, v.device_id) - 1)))
      INTO v_cfgs
    FROM scheduler.vfs v WHERE v.device_id = ANY (v_ids) AND v.managed;
    INSERT INTO scheduler.reservations (
        device_id, guest_id, host_id, request_id, net, expires_at, config, mac)
    SELECT d.id, v_guest, v_host, a->>'request_id', v_nets->(d.ord::integer - 1)->>'desc',
           v_expires, v_cfgs->d.id, v_cfgs->d.id->>'mac'
    FROM unnest(v_ids) WITH ORDINALITY AS d(id, ord);
    PERFORM scheduler.emit_desired(c.key, 'assigned', v_guest, c.value, false, p_desired, a)
    FROM jsonb_each(coalesce(v_cfgs, '{}')) c ORDER BY c.key;

    SELECT jsonb_agg(scheduler.assignment(v, r) ORDER BY array_position(v_ids, v.device_id))
      INTO v_assign
    FROM scheduler.reservations r
    JOIN scheduler.vfs v ON v.device_id = r.device_id
    WHERE r.id = ANY (ARRAY(SELECT id FROM scheduler.reservations  -- GUEST_ROWS
                             WHERE guest_id = v_guest AND ended_at IS NULL))
      AND r.device_id = ANY (v_ids);

    PERFORM scheduler.emit(v_guest, 'reserved', p_type,
        jsonb_build_object('request_id', a->>'request_id', 'host_id', v_host,
                           'assignments', v_assign), a);
    RETURN scheduler.finish_request(a, jsonb_build_object(
        'host_id', v_host, 'assignments', v_assign, 'released', '[]'::jsonb));
END $$;

-- Several place/attach requests in one transaction (one commit, one round trip), each in its
-- own subtransaction: a refused or failed request leaves no trace and does not touch the
-- others. Returns one element per request, in order: {"ok": reply}, {"refused": {code,
-- message, details}} (SRV01, as scheduler.fail raised it) or {"failed": {sqlstate, message}}
-- (the caller retries a deadlock, a serialization failure or a unique violation alone).
CREATE OR REPLACE FUNCTION scheduler.place_many(p_args jsonb, p_type text, p_desired jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    a   jsonb;
    out jsonb := '[]';
BEGIN
    FOR a IN SELECT x FROM jsonb_array_elements(p_args) x LOOP
        BEGIN
            out := out || jsonb_build_array(jsonb_build_object(
                'ok', scheduler.place(a, p_type, p_desired)));
        EXCEPTION
            WHEN SQLSTATE 'SRV01' THEN
                out := out || jsonb_build_array(jsonb_build_object('refused', SQLERRM::jsonb));
            WHEN OTHERS THEN
                out := out || jsonb_build_array(jsonb_build_object(
                    'failed', jsonb_build_object('sqlstate', SQLSTATE, 'message', SQLERRM)));
        END;
    END LOOP;
    RETURN out;
END $$;
