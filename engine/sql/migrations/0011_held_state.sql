-- pgdurable catalog, version 11: a step's transaction can advance its instance from the
-- state the engine holds in memory, instead of loading it again.
--
-- Every plan applied to an instance bumps a version (on its latest execution row); every
-- other change the planner must see (a step's or timer's result, a failure, a signal, a
-- cancel, a start) leaves an _advance row. An engine that applied version v, holds the
-- leases of the instance's running steps and finds, with the instance row locked, the
-- instance still running (owners may set its status by hand), version v and no _advance
-- row, therefore holds exactly the stored state: it plans from memory
-- and applies the plan in the step's transaction with one call, df._complete_held. In any
-- other case that call does what df._complete_and_load does.

ALTER TABLE df._executions ADD COLUMN version bigint NOT NULL DEFAULT 0;

-- The document df._load_for_advance returns, without taking any lock; plus 'version'.
CREATE FUNCTION df._instance_state(p_instance text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    inst record;
    ex record;
BEGIN
    SELECT i.*, r.rolname, r.rolsuper, r.rolcanlogin INTO inst
    FROM df.instances i LEFT JOIN pg_roles r ON r.oid = i.submitted_by
    WHERE i.id = p_instance;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT e.execution_id, e.event_count, e.version INTO ex
    FROM df._executions e WHERE e.instance_id = p_instance
    ORDER BY e.execution_id DESC LIMIT 1;
    RETURN jsonb_build_object(
        'now', extract(epoch FROM clock_timestamp()),
        'id', inst.id, 'label', inst.label, 'root', inst.root_node, 'status', inst.status,
        'owner', inst.rolname, 'owner_oid', inst.submitted_by::oid, 'superuser', inst.rolsuper,
        'can_login', inst.rolcanlogin, 'database', inst.database,
        'vars', coalesce((SELECT v.vars FROM df._instance_vars v WHERE v.instance_id = p_instance), '{}'),
        'execution_id', ex.execution_id,
        'version', coalesce(ex.version, 0),
        'signals', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                'id', g.id, 'name', g.signal_name, 'data', g.data) ORDER BY g.id)
                             FROM df._signals g
                             WHERE g.instance_id = p_instance AND g.consumed_by IS NULL), '[]'),
        'events', coalesce(ex.event_count, 0),
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
REVOKE EXECUTE ON FUNCTION df._instance_state(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION df._load_for_advance(p_instance text)
RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM df.instances i WHERE i.id = p_instance FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM df._advance WHERE instance_id = p_instance FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN df._instance_state(p_instance);
END
$$;

-- As in version 10, plus: the plan's 'version' is stored on the execution row; a node
-- entry may carry the step's 'delivery'; a 'held' plan (df._complete_held) leaves _advance
-- rows alone, since it never took one: a row there was written after its check.
CREATE OR REPLACE FUNCTION df._apply_plan(p_instance text, plan jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    nodes jsonb := coalesce(plan -> 'nodes', '[]');
    final_status text := plan ->> 'execution_status';
BEGIN
    IF jsonb_array_length(nodes) > 0 THEN
        UPDATE df.nodes n
        SET status = u.status,
            result = CASE WHEN u.status = 'completed' THEN (u.raw)::jsonb
                          WHEN u.status = 'failed' THEN to_jsonb(u.error) END,
            status_details = coalesce(u.details, n.status_details),
            updated_at = clock_timestamp()
        FROM jsonb_to_recordset(nodes)
             AS u(id text, status text, raw text, error text, details jsonb)
        WHERE n.instance_id = p_instance AND n.id = u.id;

        INSERT INTO df._node_state AS s (instance_id, node_id, raw_result, delivery, iteration,
                                         iteration_started_at)
        SELECT p_instance, u.id, u.raw, u.delivery, coalesce(u.iteration, 0),
               to_timestamp(u.iteration_started)
        FROM jsonb_to_recordset(nodes)
             AS u(id text, raw text, delivery text, reset boolean, iteration integer,
                  iteration_started double precision)
        WHERE u.raw IS NOT NULL OR u.reset OR u.iteration IS NOT NULL
              OR u.iteration_started IS NOT NULL OR u.delivery IS NOT NULL
        ON CONFLICT (instance_id, node_id) DO UPDATE
        SET raw_result = CASE WHEN excluded.raw_result IS NOT NULL OR EXISTS (
                                  SELECT 1 FROM jsonb_to_recordset(nodes)
                                                AS r(id text, reset boolean)
                                  WHERE r.id = excluded.node_id AND r.reset)
                              THEN excluded.raw_result ELSE s.raw_result END,
            delivery = coalesce(excluded.delivery, s.delivery),
            iteration = CASE WHEN excluded.iteration > 0 THEN excluded.iteration ELSE s.iteration END,
            iteration_started_at = coalesce(excluded.iteration_started_at, s.iteration_started_at);
    END IF;

    -- Abandoned tasks go, except those a finishing step holds right now (it records its
    -- result and asks for another advance, which finds the decision already made).
    IF coalesce((plan ->> 'drop_all_tasks')::boolean, false)
       OR jsonb_array_length(coalesce(plan -> 'cancel_nodes', '[]')) > 0 THEN
        DELETE FROM df._tasks
        WHERE ctid IN (
            SELECT t.ctid FROM df._tasks t
            WHERE t.instance_id = p_instance
              AND ((plan ->> 'drop_all_tasks')::boolean
                   OR t.node_id IN (SELECT jsonb_array_elements_text(
                                        coalesce(plan -> 'cancel_nodes', '[]'))))
            FOR UPDATE SKIP LOCKED);
    END IF;

    IF jsonb_array_length(coalesce(plan -> 'consumed_signals', '[]')) > 0 THEN
        UPDATE df._signals g SET consumed_by = c.node_id
        FROM jsonb_to_recordset(plan -> 'consumed_signals') AS c(id bigint, node_id text)
        WHERE g.id = c.id AND g.instance_id = p_instance;
    END IF;

    IF plan ->> 'continued_from' IS NOT NULL THEN
        UPDATE df._executions
        SET status = 'ContinuedAsNew', completed_at = clock_timestamp(),
            output = json_build_object('instance_id', p_instance,
                                       'loop_iteration', (plan ->> 'execution_id')::int - 1)::text
        WHERE instance_id = p_instance AND execution_id = (plan ->> 'continued_from')::bigint;
    END IF;

    IF jsonb_array_length(coalesce(plan -> 'tasks', '[]')) > 0 THEN
        -- a task leased to the planning engine is on its first attempt already, so a
        -- claim after that lease expired counts (and is logged) as a recovery
        INSERT INTO df._tasks (instance_id, node_id, node_type, payload, due_at, lease_owner,
                               lease_token, lease_until, attempts)
        SELECT p_instance, t.node_id, t.node_type, t.payload,
               clock_timestamp() + make_interval(secs => coalesce(t.delay, 0)),
               t.lease_owner, t.lease_token,
               CASE WHEN t.lease_owner IS NOT NULL
                    THEN clock_timestamp() + make_interval(secs => t.lease_seconds) END,
               CASE WHEN t.lease_owner IS NOT NULL THEN 1 ELSE 0 END
        FROM jsonb_to_recordset(plan -> 'tasks')
             AS t(node_id text, node_type text, payload text, delay double precision,
                  lease_owner uuid, lease_token uuid, lease_seconds double precision)
        ON CONFLICT (instance_id, node_id) DO NOTHING;
    END IF;

    IF plan ? 'instance_status' THEN
        UPDATE df.instances
        SET status = plan ->> 'instance_status', updated_at = clock_timestamp(),
            completed_at = CASE WHEN plan ->> 'instance_status' = 'completed' THEN clock_timestamp() END
        WHERE id = p_instance AND status NOT IN ('completed', 'failed', 'cancelled');
    END IF;

    UPDATE df._executions e
    SET status = coalesce(final_status, 'Running'), event_count = (plan ->> 'events')::bigint,
        output = coalesce(plan ->> 'output', e.output),
        completed_at = coalesce(CASE WHEN final_status IN ('Completed', 'Failed')
                                     THEN clock_timestamp() END, e.completed_at),
        version = coalesce((plan ->> 'version')::bigint, e.version + 1)
    WHERE e.instance_id = p_instance AND e.execution_id = (plan ->> 'execution_id')::bigint;
    IF NOT FOUND THEN
        INSERT INTO df._executions (instance_id, execution_id, submitted_by, status,
                                    event_count, output, completed_at, version)
        SELECT p_instance, (plan ->> 'execution_id')::bigint, i.submitted_by,
               coalesce(final_status, 'Running'), (plan ->> 'events')::bigint,
               plan ->> 'output',
               CASE WHEN final_status IN ('Completed', 'Failed') THEN clock_timestamp() END,
               coalesce((plan ->> 'version')::bigint, 1)
        FROM df.instances i WHERE i.id = p_instance;
    END IF;

    IF NOT coalesce((plan ->> 'held')::boolean, false) THEN
        DELETE FROM df._advance WHERE instance_id = p_instance;
    END IF;
    IF plan ->> 'wake_at' IS NOT NULL THEN
        INSERT INTO df._advance AS a (instance_id, requested_at)
        VALUES (p_instance, to_timestamp((plan ->> 'wake_at')::double precision))
        ON CONFLICT (instance_id) DO UPDATE SET requested_at = least(a.requested_at, excluded.requested_at);
    END IF;
END
$$;

-- A SQL step's record and its instance's advance, planned from the state the engine holds
-- (version p_version). 'applied' when the plan (which marks this step completed) was
-- applied; otherwise exactly what df._complete_and_load returns: the state to plan from
-- (NULL: someone else holds the instance, and its _advance row is left for them).
CREATE FUNCTION df._complete_held(p_instance text, p_node text, p_token uuid, p_raw text,
                                  p_version bigint, plan jsonb)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- a running instance (users may set df.instances.status themselves), locked as an
    -- advance locks it
    PERFORM 1 FROM df.instances i
    WHERE i.id = p_instance AND i.status = 'running' FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND
       OR EXISTS (SELECT 1 FROM df._advance a WHERE a.instance_id = p_instance)
       OR (SELECT e.version FROM df._executions e WHERE e.instance_id = p_instance
           ORDER BY e.execution_id DESC LIMIT 1) IS DISTINCT FROM p_version THEN
        RETURN df._complete_and_load(p_instance, p_node, p_token, p_raw, 'exactly-once');
    END IF;
    DELETE FROM df._tasks
    WHERE instance_id = p_instance AND node_id = p_node AND lease_token = p_token;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgdurable: step %/% is not leased with this token', p_instance, p_node
            USING ERRCODE = '40001';
    END IF;
    PERFORM df._apply_plan(p_instance, plan || '{"held": true}');
    RETURN 'applied';
END
$$;
ALTER FUNCTION df._complete_held(text, text, uuid, text, bigint, jsonb)
    SET enable_seqscan = off SET jit = off;
