-- pgdurable catalog, version 7: the engine's own functions. The engine (table owner) calls
-- _load_for_advance and _apply_plan on its admin connection; _complete_step runs inside a
-- workflow step's transaction, on the owner's connection, guarded by the lease token.
-- Times are clock_timestamp(), not clock_timestamp(): these run at the end of a step's transaction,
-- whose start (clock_timestamp()) may be long before the step finished.

-- Everything needed to advance one instance, or NULL when another engine (or a user's
-- df.cancel still in flight) holds it. Lock order: the instance row, then its _advance row,
-- as df.cancel takes them; both with SKIP LOCKED, so an advance never waits in a cycle.
-- NO KEY UPDATE: steps inserting rows that reference the instance need not wait for it.
CREATE FUNCTION df._load_for_advance(p_instance text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    inst record;
BEGIN
    SELECT i.*, r.rolname, r.rolsuper, r.rolcanlogin INTO inst
    FROM df.instances i LEFT JOIN pg_roles r ON r.oid = i.submitted_by
    WHERE i.id = p_instance FOR NO KEY UPDATE OF i SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM df._advance WHERE instance_id = p_instance FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN jsonb_build_object(
        'now', extract(epoch FROM clock_timestamp()),
        'id', inst.id, 'label', inst.label, 'root', inst.root_node, 'status', inst.status,
        'owner', inst.rolname, 'owner_oid', inst.submitted_by::oid, 'superuser', inst.rolsuper,
        'can_login', inst.rolcanlogin, 'database', inst.database,
        'vars', coalesce((SELECT v.vars FROM df._instance_vars v WHERE v.instance_id = p_instance), '{}'),
        'execution_id', (SELECT max(e.execution_id) FROM df._executions e WHERE e.instance_id = p_instance),
        'signals', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                'id', g.id, 'name', g.signal_name, 'data', g.data) ORDER BY g.id)
                             FROM df._signals g
                             WHERE g.instance_id = p_instance AND g.consumed_by IS NULL), '[]'),
        'events', coalesce((SELECT e.event_count FROM df._executions e WHERE e.instance_id = p_instance
                            ORDER BY e.execution_id DESC LIMIT 1), 0),
        'nodes', (SELECT jsonb_agg(jsonb_build_object(
                      'id', n.id, 'type', n.node_type, 'query', n.query, 'name', n.result_name,
                      'left', n.left_node, 'right', n.right_node, 'status', n.status,
                      'raw', s.raw_result,
                      'error', CASE WHEN n.status = 'failed' THEN n.result #>> '{}' END,
                      'iteration', coalesce(s.iteration, 0),
                      'iteration_started', extract(epoch FROM s.iteration_started_at)))
                  FROM df.nodes n LEFT JOIN df._node_state s
                       ON s.instance_id = n.instance_id AND s.node_id = n.id
                  WHERE n.instance_id = p_instance));
END
$$;

-- Write what the planner decided, in the same transaction as the load.
CREATE FUNCTION df._apply_plan(p_instance text, plan jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE df.nodes n
    SET status = u.status,
        result = CASE WHEN u.status = 'completed' THEN (u.raw)::jsonb
                      WHEN u.status = 'failed' THEN to_jsonb(u.error) END,
        status_details = coalesce(u.details, n.status_details),
        updated_at = clock_timestamp()
    FROM jsonb_to_recordset(coalesce(plan -> 'nodes', '[]'))
         AS u(id text, status text, raw text, error text, details jsonb)
    WHERE n.instance_id = p_instance AND n.id = u.id;

    INSERT INTO df._node_state AS s (instance_id, node_id, raw_result, iteration,
                                     iteration_started_at)
    SELECT p_instance, u.id, u.raw, coalesce(u.iteration, 0), to_timestamp(u.iteration_started)
    FROM jsonb_to_recordset(coalesce(plan -> 'nodes', '[]'))
         AS u(id text, raw text, reset boolean, iteration integer,
              iteration_started double precision)
    WHERE u.raw IS NOT NULL OR u.reset OR u.iteration IS NOT NULL OR u.iteration_started IS NOT NULL
    ON CONFLICT (instance_id, node_id) DO UPDATE
    SET raw_result = CASE WHEN excluded.raw_result IS NOT NULL OR EXISTS (
                              SELECT 1 FROM jsonb_to_recordset(plan -> 'nodes')
                                            AS r(id text, reset boolean)
                              WHERE r.id = excluded.node_id AND r.reset)
                          THEN excluded.raw_result ELSE s.raw_result END,
        iteration = CASE WHEN excluded.iteration > 0 THEN excluded.iteration ELSE s.iteration END,
        iteration_started_at = coalesce(excluded.iteration_started_at, s.iteration_started_at);

    -- Abandoned tasks go, except those a finishing step holds right now (it records its
    -- result and asks for another advance, which finds the decision already made).
    DELETE FROM df._tasks
    WHERE ctid IN (
        SELECT t.ctid FROM df._tasks t
        WHERE t.instance_id = p_instance
          AND ((plan ->> 'drop_all_tasks')::boolean
               OR t.node_id IN (SELECT jsonb_array_elements_text(
                                    coalesce(plan -> 'cancel_nodes', '[]'))))
        FOR UPDATE SKIP LOCKED);

    UPDATE df._signals g SET consumed_by = c.node_id
    FROM jsonb_to_recordset(coalesce(plan -> 'consumed_signals', '[]')) AS c(id bigint, node_id text)
    WHERE g.id = c.id AND g.instance_id = p_instance;

    IF plan ->> 'continued_from' IS NOT NULL THEN
        UPDATE df._executions
        SET status = 'ContinuedAsNew', completed_at = clock_timestamp(),
            output = json_build_object('instance_id', p_instance,
                                       'loop_iteration', (plan ->> 'execution_id')::int - 1)::text
        WHERE instance_id = p_instance AND execution_id = (plan ->> 'continued_from')::bigint;
    END IF;

    INSERT INTO df._tasks (instance_id, node_id, node_type, payload, due_at, lease_owner,
                           lease_token, lease_until)
    SELECT p_instance, t.node_id, t.node_type, t.payload,
           clock_timestamp() + make_interval(secs => coalesce(t.delay, 0)),
           t.lease_owner, t.lease_token,
           CASE WHEN t.lease_owner IS NOT NULL THEN clock_timestamp() + make_interval(secs => t.lease_seconds) END
    FROM jsonb_to_recordset(coalesce(plan -> 'tasks', '[]'))
         AS t(node_id text, node_type text, payload text, delay double precision, lease_owner uuid,
              lease_token uuid, lease_seconds double precision)
    ON CONFLICT (instance_id, node_id) DO NOTHING;

    IF plan ? 'instance_status' THEN
        UPDATE df.instances
        SET status = plan ->> 'instance_status', updated_at = clock_timestamp(),
            completed_at = CASE WHEN plan ->> 'instance_status' = 'completed' THEN clock_timestamp() END
        WHERE id = p_instance AND status NOT IN ('completed', 'failed', 'cancelled');
    END IF;

    INSERT INTO df._executions AS e (instance_id, execution_id, submitted_by, status,
                                     event_count, output, completed_at)
    SELECT p_instance, (plan ->> 'execution_id')::bigint, i.submitted_by,
           coalesce(plan ->> 'execution_status', 'Running'), (plan ->> 'events')::bigint,
           plan ->> 'output',
           CASE WHEN plan ->> 'execution_status' IN ('Completed', 'Failed') THEN clock_timestamp() END
    FROM df.instances i WHERE i.id = p_instance
    ON CONFLICT (instance_id, execution_id) DO UPDATE
    SET status = excluded.status, event_count = excluded.event_count,
        output = coalesce(excluded.output, e.output),
        completed_at = coalesce(excluded.completed_at, e.completed_at);

    DELETE FROM df._advance WHERE instance_id = p_instance;
    IF plan ->> 'wake_at' IS NOT NULL THEN
        INSERT INTO df._advance (instance_id, requested_at)
        VALUES (p_instance, to_timestamp((plan ->> 'wake_at')::double precision));
    END IF;
END
$$;

-- Record a step's result in the step's own transaction: the statement and its record
-- commit together, so a crash before COMMIT loses both and the step runs again.
CREATE FUNCTION df._complete_step(p_instance text, p_node text, p_token uuid, p_raw text,
                                  p_delivery text DEFAULT 'exactly-once')
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM 1 FROM df._tasks
    WHERE instance_id = p_instance AND node_id = p_node AND lease_token = p_token
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgdurable: step %/% is not leased with this token', p_instance, p_node
            USING ERRCODE = '40001';
    END IF;
    -- a step that could not run inside a transaction block says so where users look
    UPDATE df.nodes
    SET status = 'completed', result = p_raw::jsonb, updated_at = clock_timestamp(),
        status_details = CASE WHEN p_delivery = 'exactly-once' THEN status_details
                              ELSE coalesce(status_details, '{}')
                                   || jsonb_build_object('delivery', p_delivery) END
    WHERE instance_id = p_instance AND id = p_node;
    INSERT INTO df._node_state AS s (instance_id, node_id, raw_result, delivery)
    VALUES (p_instance, p_node, p_raw, p_delivery)
    ON CONFLICT (instance_id, node_id)
    DO UPDATE SET raw_result = excluded.raw_result, delivery = excluded.delivery;
    DELETE FROM df._tasks WHERE instance_id = p_instance AND node_id = p_node;
    INSERT INTO df._advance AS a (instance_id) VALUES (p_instance)
    ON CONFLICT (instance_id) DO UPDATE SET requested_at = least(a.requested_at, excluded.requested_at);
END
$$;

-- A step failed (its transaction was rolled back): record the error, if still leased.
CREATE FUNCTION df._fail_step(p_instance text, p_node text, p_token uuid, p_error text,
                              p_delivery text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM df._tasks
    WHERE instance_id = p_instance AND node_id = p_node AND lease_token = p_token;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE df.nodes SET status = 'failed', result = to_jsonb(p_error), updated_at = clock_timestamp()
    WHERE instance_id = p_instance AND id = p_node;
    IF p_delivery IS NOT NULL THEN
        INSERT INTO df._node_state (instance_id, node_id, delivery)
        VALUES (p_instance, p_node, p_delivery)
        ON CONFLICT (instance_id, node_id) DO UPDATE SET delivery = excluded.delivery;
    END IF;
    INSERT INTO df._advance AS a (instance_id) VALUES (p_instance)
    ON CONFLICT (instance_id) DO UPDATE SET requested_at = least(a.requested_at, excluded.requested_at);
    RETURN true;
END
$$;
REVOKE EXECUTE ON FUNCTION df._fail_step(text, text, uuid, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION df._load_for_advance(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION df._apply_plan(text, jsonb) FROM PUBLIC;

-- The fast path: a SQL step's transaction records its result and advances the instance
-- itself, saving a transaction per step. The owner's connection calls these two SECURITY
-- DEFINER functions; a grant row only this transaction can see (written by the first,
-- consumed by the second, both behind the lease token) keeps anyone else from applying a
-- plan.
CREATE TABLE df._apply_grants (
    txid   bigint PRIMARY KEY,
    secret uuid NOT NULL
);

CREATE FUNCTION df._complete_and_load(p_instance text, p_node text, p_token uuid,
                                      p_raw text, p_delivery text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    state jsonb;
    secret uuid := gen_random_uuid();
BEGIN
    PERFORM df._complete_step(p_instance, p_node, p_token, p_raw, p_delivery);
    state := df._load_for_advance(p_instance);
    IF state IS NULL THEN
        RETURN NULL;  -- someone else holds the instance: the _advance row is left for them
    END IF;
    INSERT INTO df._apply_grants (txid, secret) VALUES (txid_current(), secret)
    ON CONFLICT (txid) DO UPDATE SET secret = excluded.secret;
    RETURN (state || jsonb_build_object('apply_secret', secret))::text;
END
$$;

CREATE FUNCTION df._apply_as_step(p_instance text, p_secret uuid, plan jsonb)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM df._apply_grants WHERE txid = txid_current() AND secret = p_secret;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgdurable: no advance was granted to this transaction'
            USING ERRCODE = '42501';
    END IF;
    BEGIN  -- a failing plan must not undo the step: the _advance row stays for a retry
        PERFORM df._apply_plan(p_instance, plan);
    EXCEPTION WHEN others THEN
        RAISE WARNING 'pgdurable: in-step advance of % failed: %', p_instance, SQLERRM;
        INSERT INTO df._advance AS a (instance_id) VALUES (p_instance)
        ON CONFLICT (instance_id) DO UPDATE SET requested_at = least(a.requested_at, excluded.requested_at);
        RETURN false;
    END;
    RETURN true;
END
$$;
REVOKE ALL ON df._apply_grants FROM PUBLIC;
