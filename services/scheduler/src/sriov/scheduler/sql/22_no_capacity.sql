-- place and attach, when they cannot be satisfied: what was short and why.

-- Why a placement cannot be satisfied: what was short, where the nearest capacity is, and
-- why the matching VFs of the fleet are not free. Always raises.
CREATE OR REPLACE FUNCTION scheduler.no_capacity(a jsonb, p_host text, p_numa_req integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    grp      record;
    best     record;
    here     numeric;
    fleet    record;
    wanted   text := '';
    sep      text := '';
    numa     text := '';
    why      text;
    nearest  text;
    v_models text[] := ARRAY(SELECT n->>'value' FROM jsonb_array_elements(a->'nets') n
                             WHERE n->>'kind' = 'model');
    v_sels   text[] := ARRAY(SELECT n->>'selector' FROM jsonb_array_elements(a->'nets') n
                             WHERE n->>'kind' = 'model' AND n->>'selector' IS NOT NULL);
    v_unselected boolean := EXISTS (SELECT 1 FROM jsonb_array_elements(a->'nets') n
                                    WHERE n->>'kind' = 'model' AND n->>'selector' IS NULL);
BEGIN
    -- An unknown model is a typo, not a capacity problem.
    FOR grp IN
        SELECT DISTINCT n->>'value' AS model FROM jsonb_array_elements(a->'nets') n
        WHERE n->>'kind' = 'model'
          AND NOT EXISTS (SELECT 1 FROM scheduler.vfs v WHERE v.model = n->>'value' AND NOT v.removed)
    LOOP
        PERFORM scheduler.fail('unknown_model', format(
            'no VF of model %s is known to the scheduler; known models: %s',
            quote_literal(grp.model),
            coalesce((SELECT string_agg(quote_literal(model), ', ' ORDER BY model)
                      FROM scheduler.known_models() AS model),
                     'none (no device state received yet)')),
            jsonb_build_object('model', grp.model));
    END LOOP;

    FOR grp IN SELECT n->>'desc' AS descr, count(*) AS need
                 FROM jsonb_array_elements(a->'nets') n GROUP BY 1 ORDER BY 1 LOOP
        wanted := wanted || sep || grp.need || ' x ' || quote_literal(grp.descr);
        sep := ' + ';
    END LOOP;
    IF p_numa_req IS NOT NULL THEN
        numa := format(' on NUMA node %s', p_numa_req);
    END IF;

    -- Per online host: how many of the wanted VFs it could give (capped by each net's need).
    CREATE TEMP TABLE IF NOT EXISTS capacity_now (host_id text, score numeric, free numeric)
        ON COMMIT DROP;
    DELETE FROM capacity_now;
    INSERT INTO capacity_now
    SELECT per.host_id, sum(least(per.free, per.need)), sum(per.free)
    FROM (
        SELECT f.host_id, g.descr, g.need, count(*) AS free
        FROM (SELECT n AS net, n->>'desc' AS descr, count(*) AS need, n->>'kind' AS kind,
                     n->>'value' AS value, n->>'selector' AS sel,
                     coalesce(n->'needs' ? 'lifecycle', false) AS managed
                FROM jsonb_array_elements(a->'nets') n GROUP BY 1) g
        -- one branch runs per net, reading the index the walk reads (pick_host): the net's
        -- wire and network, or the managed VFs, or the model's; a VF by id
        CROSS JOIN LATERAL (
            SELECT v.host_id FROM scheduler.vfs v
            WHERE g.kind = 'model' AND v.model = g.value AND g.sel IS NULL AND NOT g.managed
              AND v.held_by IS NULL AND v.lifecycle = 'free' AND v.present AND v.link_up
              AND NOT v.removed AND scheduler.fits(v, g.net, p_numa_req)
            UNION ALL
            SELECT v.host_id FROM scheduler.vfs v
            WHERE g.kind = 'model' AND v.model = g.value AND g.sel IS NULL AND g.managed
              AND v.held_by IS NULL AND v.lifecycle = 'free' AND v.present AND v.link_up
              AND NOT v.removed AND v.managed AND scheduler.fits(v, g.net, p_numa_req)
            UNION ALL
            SELECT v.host_id FROM scheduler.vfs v
            WHERE g.kind = 'model' AND v.model = g.value AND v.wire = g.sel
              AND v.held_by IS NULL AND v.lifecycle = 'free' AND v.present AND v.link_up
              AND NOT v.removed AND (v.managed OR NOT g.managed)
              AND scheduler.fits(v, g.net, p_numa_req)
            UNION ALL
            SELECT v.host_id FROM scheduler.vfs v  -- counted once when wire and network match
            WHERE g.kind = 'model' AND v.model = g.value AND v.network = g.sel
              AND v.wire IS DISTINCT FROM g.sel
              AND v.held_by IS NULL AND v.lifecycle = 'free' AND v.present AND v.link_up
              AND NOT v.removed AND (v.managed OR NOT g.managed)
              AND scheduler.fits(v, g.net, p_numa_req)
            UNION ALL
            SELECT v.host_id FROM scheduler.vfs v
            WHERE g.kind = 'id' AND v.device_id = g.value
              AND v.held_by IS NULL AND v.lifecycle = 'free' AND v.present AND v.link_up
              AND NOT v.removed AND scheduler.fits(v, g.net, p_numa_req)) f
        JOIN scheduler.hosts h ON h.host_id = f.host_id AND h.status = 'online'
                              AND NOT h.cordoned
        GROUP BY f.host_id, g.descr, g.need) per
    GROUP BY per.host_id;
    SELECT * INTO best FROM capacity_now c
     WHERE p_host IS NULL OR c.host_id <> p_host
     ORDER BY c.score DESC, c.free DESC, c.host_id LIMIT 1;
    SELECT coalesce(max(score), 0) INTO here FROM capacity_now WHERE host_id = p_host;

    -- Why the fleet's matching VFs are not free: one pass counting them per PF (its VFs share
    -- model, what it cannot apply and driver), then each host's status and each PF class's
    -- ability once (asked per VF, a refusal took 1.2-1.8 s at 64,000 VFs).
    WITH per AS MATERIALIZED (
        SELECT v.host_id, min(v.model) AS model, min(v.cannot) AS cannot,
               min(v.vf_driver) AS vf_driver, count(*) AS total,
               count(*) FILTER (WHERE v.held_by IS NOT NULL) AS reserved,
               count(*) FILTER (WHERE NOT v.link_up) AS link_down,
               count(*) FILTER (WHERE NOT v.present) AS absent,
               count(*) FILTER (WHERE v.held_by IS NULL AND v.lifecycle = 'cleaning') AS cleaning,
               count(*) FILTER (WHERE v.lifecycle = 'quarantined') AS quarantined
        FROM scheduler.vfs v
        WHERE NOT v.removed AND (p_numa_req IS NULL OR v.numa_node = p_numa_req)
          AND v.model = ANY (v_models)  -- a net naming a VF was refused earlier, and why
          AND (v_unselected OR v.wire = ANY (v_sels) OR v.network = ANY (v_sels))
        GROUP BY v.host_id, v.pf_pci_address),
    classes AS (
        SELECT c.model, c.cannot, c.vf_driver,
               NOT EXISTS (SELECT 1 FROM jsonb_array_elements(a->'nets') x
                           WHERE x->>'value' = c.model
                             AND scheduler.can_serve(c.cannot, c.vf_driver, x)) AS unable
        FROM (SELECT DISTINCT model, cannot, vf_driver FROM per) c)
    SELECT coalesce(sum(p.total), 0) AS total, coalesce(sum(p.reserved), 0) AS reserved,
           coalesce(sum(p.total) FILTER (WHERE h.status IS DISTINCT FROM 'online'), 0) AS offline,
           coalesce(sum(p.link_down), 0) AS link_down, coalesce(sum(p.absent), 0) AS absent,
           coalesce(sum(p.total) FILTER (WHERE h.cordoned), 0) AS cordoned,
           coalesce(sum(p.cleaning), 0) AS cleaning,
           coalesce(sum(p.quarantined), 0) AS quarantined,
           coalesce(sum(p.total) FILTER (WHERE c.unable), 0) AS unable,
           (SELECT string_agg(DISTINCT scheduler.lacking(k.cannot, k.vf_driver, x), '; ')
              FROM classes k, jsonb_array_elements(a->'nets') x
             WHERE x->>'value' = k.model
               AND NOT scheduler.can_serve(k.cannot, k.vf_driver, x)) AS lacking
      INTO fleet
    FROM per p
    JOIN classes c ON c.model = p.model AND c.cannot IS NOT DISTINCT FROM p.cannot
                  AND c.vf_driver IS NOT DISTINCT FROM p.vf_driver
    LEFT JOIN scheduler.hosts h ON h.host_id = p.host_id;
    why := format('the fleet has %s matching VF(s)%s: %s reserved, %s on hosts not online, '
                  '%s with PF link down, %s absent', fleet.total, numa, fleet.reserved,
                  fleet.offline, fleet.link_down, fleet.absent)
        || CASE WHEN fleet.cordoned > 0
                THEN format(', %s on cordoned hosts', fleet.cordoned) ELSE '' END
        || CASE WHEN fleet.cleaning > 0
                THEN format(', %s being cleaned after their last guest', fleet.cleaning)
                ELSE '' END
        || CASE WHEN fleet.quarantined > 0
                THEN format(', %s quarantined', fleet.quarantined) ELSE '' END
        || CASE WHEN fleet.unable > 0
                THEN format(', %s%s whose PF cannot apply what the net asks (%s)',
                            CASE WHEN fleet.unable = fleet.total THEN 'none: all ' ELSE '' END,
                            fleet.unable, fleet.lacking) ELSE '' END;
    nearest := CASE WHEN best.host_id IS NULL THEN 'nearest capacity: none'
                    ELSE format('nearest capacity: host %s has %s of the %s VF(s)', best.host_id,
                                best.score, jsonb_array_length(a->'nets')) END;

    IF p_host IS NOT NULL THEN
        PERFORM scheduler.fail('no_capacity', format(
            'no capacity on host %s: need %s%s, it has %s of them free; %s elsewhere (%s)',
            p_host, wanted, numa, here, nearest, why),
            jsonb_build_object('wanted', wanted, 'host_id', p_host, 'host_has', here,
                               'nearest_host', best.host_id, 'nearest_host_has', best.score,
                               'matching', fleet.total, 'reserved', fleet.reserved));
    END IF;
    PERFORM scheduler.fail('no_capacity', format(
        'no capacity: need %s%s on one online host, but no host has them free; %s (%s)',
        wanted, numa, nearest, why),
        jsonb_build_object('wanted', wanted, 'nearest_host', best.host_id,
                           'nearest_host_has', best.score, 'matching', fleet.total,
                           'reserved', fleet.reserved));
END $$;
