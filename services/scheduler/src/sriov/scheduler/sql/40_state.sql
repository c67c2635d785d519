-- The projection of inventory's device and host state, and what its changes do to
-- reservations (a reserved VF that disappears, a host that goes offline: Lost events).

-- p_hosts: [{host_id, status, revision}] (revision -1: derived from device states, until the
-- host's own state arrives); p_devices: one row per device with its highest revision of the
-- batch, p_ids their ids. Lower or equal revisions are ignored, so replays and redeliveries
-- are harmless. p_devices is json, not jsonb, and read once: a restart storm sends every VF
-- of the fleet through here, and converting 500 rows to jsonb and reading them twice took
-- 11 ms of the database's CPU, reading the text once 4 ms.
-- p_type: the type tag of the Lost events it emits (the schemas' own, passed by the store).
-- Returns {"devices": rows changed, "lost": reservations ended, "hosts_down": [host ids]}.
-- p_desired: see 15_vf_config.sql (a lost managed VF's desired state becomes clean).
DROP FUNCTION IF EXISTS scheduler.apply_state(jsonb, jsonb, jsonb, text, jsonb);
CREATE OR REPLACE FUNCTION scheduler.apply_state(
    p_devices json, p_ids text[], p_hosts jsonb, a jsonb, p_type text, p_desired jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_gone     text[];
    v_guests   text[];
    v_host_ids text[];
    v_old      jsonb;
    v_down     text[];
    v_ids      text[] := p_ids;
    v_was      jsonb;
    v_changed  integer := 0;
    v_lost     integer := 0;
    v_events   integer;
BEGIN
    IF jsonb_array_length(p_hosts) > 0 THEN
        SELECT array_agg(x.host_id ORDER BY x.host_id) INTO v_host_ids
        FROM jsonb_to_recordset(p_hosts) AS x(host_id text);
        PERFORM 1 FROM scheduler.hosts WHERE host_id = ANY (v_host_ids)
         ORDER BY host_id FOR UPDATE;
        SELECT coalesce(jsonb_object_agg(host_id, status), '{}') INTO v_old
        FROM scheduler.hosts WHERE host_id = ANY (v_host_ids);
        WITH up AS (
            INSERT INTO scheduler.hosts AS h (host_id, status, revision)
            SELECT x.host_id, x.status, x.revision
            FROM jsonb_to_recordset(p_hosts) AS x(host_id text, status text, revision bigint)
            ORDER BY x.host_id
            ON CONFLICT (host_id) DO UPDATE
               SET status = EXCLUDED.status, revision = EXCLUDED.revision, updated_at = now()
             WHERE h.revision < EXCLUDED.revision OR (h.revision < 0 AND EXCLUDED.revision < 0)
            RETURNING h.host_id, h.status)
        SELECT array_agg(host_id) INTO v_down FROM up
        WHERE status <> 'online' AND v_old->>host_id = 'online';

        -- A host that went offline: its guests are told. Their VFs stay reserved (the guest
        -- may still run there), so nobody else gets them until they are released. Only then:
        -- planned while reservations were few, this join walked every active one to find
        -- none, for each host state (inventory announces a host whose free count moved).
        IF v_down IS NOT NULL THEN
            PERFORM scheduler.emit(r.guest_id, 'lost', p_type, jsonb_build_object(
                        'request_id', r.request_id,
                        'device_ids', jsonb_agg(r.device_id ORDER BY r.device_id),
                        'reason', 'host_offline', 'host_id', r.host_id,
                        'still_reserved', true), a)
            FROM scheduler.vfs v
            JOIN scheduler.reservations r ON r.device_id = v.device_id AND r.ended_at IS NULL
            WHERE v.host_id = ANY (v_down) AND v.held_by IS NOT NULL
            GROUP BY r.guest_id, r.request_id, r.host_id;
        END IF;
    END IF;

    IF cardinality(v_ids) > 0 THEN
        -- Lock order reservations -> vfs, as release and expire do.
        PERFORM 1 FROM scheduler.reservations
         WHERE device_id = ANY (v_ids) AND ended_at IS NULL ORDER BY id FOR UPDATE;
        -- the incarnations before this batch: a reserved VF that changed one is lost
        SELECT coalesce(jsonb_object_agg(device_id, incarnation), '{}') INTO v_was
          FROM scheduler.vfs WHERE device_id = ANY (v_ids);

        INSERT INTO scheduler.vfs AS v (
            device_id, host_id, host_key, pci_address, addr, model, vendor_device_id,
            pf_pci_address, pf_ifname, vf_index, numa_node, wire, network, link_up, present,
            removed, incarnation, revision, managed, cannot, vf_driver)
        SELECT d.id, d.host_id, hashtext(d.host_id), d.pci_address, d.addr, d.model,
               d.vendor_device_id, d.pf_pci_address, d.pf_ifname, d.vf_index, d.numa_node,
               d.wire, d.network, d.link_up, d.present, d.removed, d.incarnation, d.revision,
               d.managed, d.cannot, d.vf_driver
        FROM json_to_recordset(p_devices) AS d(
            id text, host_id text, pci_address text, addr text, model text,
            vendor_device_id text, pf_pci_address text, pf_ifname text, vf_index integer,
            numa_node integer,
            wire text, network text, link_up boolean, present boolean, removed boolean,
            incarnation bigint, revision bigint, managed boolean, cannot text[], vf_driver text)
        ORDER BY d.host_id, d.pci_address  -- a host's VFs together on disk; one lock order
        ON CONFLICT (device_id) DO UPDATE SET
            host_id = EXCLUDED.host_id, host_key = EXCLUDED.host_key,
            pci_address = EXCLUDED.pci_address, addr = EXCLUDED.addr, model = EXCLUDED.model,
            vendor_device_id = EXCLUDED.vendor_device_id,
            pf_pci_address = EXCLUDED.pf_pci_address, pf_ifname = EXCLUDED.pf_ifname,
            vf_index = EXCLUDED.vf_index,
            numa_node = EXCLUDED.numa_node, wire = EXCLUDED.wire, network = EXCLUDED.network,
            link_up = EXCLUDED.link_up, present = EXCLUDED.present, removed = EXCLUDED.removed,
            incarnation = EXCLUDED.incarnation,
            revision = EXCLUDED.revision, managed = EXCLUDED.managed,
            cannot = EXCLUDED.cannot, vf_driver = EXCLUDED.vf_driver,
            -- a hostd that no longer runs the lifecycle will never report this VF clean
            lifecycle = CASE WHEN NOT EXCLUDED.managed AND v.lifecycle = 'cleaning'
                             THEN 'free' ELSE v.lifecycle END,
            updated_at = now()
        WHERE v.revision < EXCLUDED.revision;
        GET DIAGNOSTICS v_changed = ROW_COUNT;

        -- A reserved VF that disappeared, or came back as another (its absence and return
        -- can reach us as one state): the reservation ends and the guest is told.
        WITH gone AS (
            UPDATE scheduler.reservations r SET ended_at = now(), end_reason = 'lost'
              FROM scheduler.vfs v
             WHERE v.device_id = r.device_id AND r.device_id = ANY (v_ids)
               AND r.ended_at IS NULL
               AND (v.removed OR NOT v.present
                    OR v.incarnation <> coalesce((v_was->>v.device_id)::bigint, v.incarnation))
            RETURNING r.device_id, r.guest_id, r.request_id, r.host_id),
        events AS MATERIALIZED (  -- read below: a SELECT in WITH runs only if it is read
            SELECT scheduler.emit(g.guest_id, 'lost', p_type, jsonb_build_object(
                       'request_id', g.request_id,
                       'device_ids', jsonb_agg(g.device_id ORDER BY g.device_id),
                       'reason', 'vf_removed', 'host_id', g.host_id, 'still_reserved', false), a)
            FROM gone g GROUP BY g.guest_id, g.request_id, g.host_id)
        SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM events),
               (SELECT array_agg(device_id ORDER BY device_id) FROM gone),
               (SELECT array_agg(guest_id ORDER BY device_id) FROM gone)
          INTO v_lost, v_events, v_gone, v_guests;
        IF v_lost > 0 THEN  -- a managed VF is cleaned by its hostd if it ever comes back
            PERFORM scheduler.vacate(v_gone, v_guests, p_desired, a);
        END IF;
    END IF;
    RETURN jsonb_build_object('devices', v_changed, 'lost', v_lost,
                              'hosts_down', to_jsonb(coalesce(v_down, '{}')));
END $$;
