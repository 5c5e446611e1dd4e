-- pgdurable catalog: the engine's own functions, called on its admin connection: load and
-- apply a plan, retention, and the triggers that forget a deleted instance's engine rows
-- (the scheduler's pass is poll.sql's). Times are clock_timestamp(): these run at the end of a step's transaction,
-- whose start may be long before the step finished.

-- Whom an instance's steps run as: the owner fixed when the instance was first loaded (the
-- first plan applied writes it on the instance's first execution, and each execution
-- hands it to the next), never df.instances.submitted_by read again, which an
-- administrator may rewrite while the instance runs (as pg_durable, which loads the graph
-- with its owner once); for an instance not loaded yet, its submitted_by. An OID: a role
-- dropped and created again under the same name is another role.
CREATE OR REPLACE FUNCTION df._instance_owner(p_instance text)
RETURNS regrole LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce((SELECT e.submitted_by FROM df._executions e
                     WHERE e.instance_id = p_instance
                     ORDER BY e.execution_id DESC LIMIT 1),
                    (SELECT i.submitted_by FROM df.instances i WHERE i.id = p_instance));
END
$$;
REVOKE EXECUTE ON FUNCTION df._instance_owner(text) FROM PUBLIC;

-- The state to plan from, with the keys of the _advance rows it takes (locked until the
-- plan is applied); NULL when another transaction holds the instance or nothing is due.
CREATE OR REPLACE FUNCTION df._load_for_advance(p_instance text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    keys text[];
BEGIN
    PERFORM 1 FROM df.instances i WHERE i.id = p_instance FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(a.node_id) INTO keys
    FROM (SELECT a.node_id FROM df._advance a WHERE a.instance_id = p_instance
          FOR UPDATE SKIP LOCKED) a;
    IF keys IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN df._instance_state(p_instance) || jsonb_build_object('advance_keys', to_jsonb(keys));
END
$$;
REVOKE EXECUTE ON FUNCTION df._load_for_advance(text) FROM PUBLIC;

-- Write what the planner decided, in the same transaction as the load. A consumed signal is
-- deleted (one signal satisfies one wait), and an instance's signals go when it ends; a
-- loop keeps its latest 100 executions.
--
-- The plan updates a few nodes of one instance from a JSON list. The planner, which guesses
-- 100 list entries and one node per instance, would hash all the instance's nodes (every
-- node of a 10,000-node graph, at every step) where a lookup per entry is what is wanted:
-- hence the SET clauses.
CREATE OR REPLACE FUNCTION df._apply_plan(p_instance text, plan jsonb)
RETURNS void LANGUAGE plpgsql SET enable_hashjoin = off SET enable_mergejoin = off AS $$
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
            -- a reset node counts again from 0 (a loop in a loop's body: a new scope)
            iteration = CASE WHEN excluded.iteration > 0 THEN excluded.iteration
                             WHEN EXISTS (SELECT 1 FROM jsonb_to_recordset(nodes)
                                                        AS r(id text, reset boolean)
                                          WHERE r.id = excluded.node_id AND r.reset)
                             THEN 0 ELSE s.iteration END,
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

    -- one signal satisfies one wait: a consumed signal goes
    IF jsonb_array_length(coalesce(plan -> 'consumed_signals', '[]')) > 0 THEN
        DELETE FROM df._signals g
        USING jsonb_to_recordset(plan -> 'consumed_signals') AS c(id bigint, node_id text)
        WHERE g.id = c.id AND g.instance_id = p_instance;
    END IF;

    IF plan ->> 'continued_from' IS NOT NULL THEN
        UPDATE df._executions
        SET status = 'ContinuedAsNew', completed_at = clock_timestamp(),
            output = json_build_object('instance_id', p_instance,
                                       'loop_iteration', (plan ->> 'execution_id')::int - 1)::text
        WHERE instance_id = p_instance AND execution_id = (plan ->> 'continued_from')::bigint;
        -- a loop keeps its latest executions, not one row per iteration forever
        DELETE FROM df._executions
        WHERE instance_id = p_instance
          AND execution_id <= (plan ->> 'execution_id')::bigint - 100;
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
        WHERE id = p_instance AND status NOT IN ('completed', 'failed', 'cancelled', 'compensated');
    END IF;

    UPDATE df._executions e
    SET status = coalesce(final_status, 'Running'), event_count = (plan ->> 'events')::bigint,
        output = coalesce(plan ->> 'output', e.output),
        completed_at = coalesce(CASE WHEN final_status IN ('Completed', 'Failed')
                                     THEN clock_timestamp() END, e.completed_at),
        version = coalesce((plan ->> 'version')::bigint, e.version + 1)
    WHERE e.instance_id = p_instance AND e.execution_id = (plan ->> 'execution_id')::bigint;
    IF NOT FOUND THEN
        -- the owner is fixed by the first execution and carried to the next ones
        INSERT INTO df._executions (instance_id, execution_id, submitted_by, status,
                                    event_count, output, completed_at, version)
        SELECT p_instance, (plan ->> 'execution_id')::bigint, df._instance_owner(p_instance),
               coalesce(final_status, 'Running'), (plan ->> 'events')::bigint,
               plan ->> 'output',
               CASE WHEN final_status IN ('Completed', 'Failed') THEN clock_timestamp() END,
               coalesce((plan ->> 'version')::bigint, 1)
        FROM df.instances i WHERE i.id = p_instance;
    END IF;

    IF final_status IN ('Completed', 'Failed') THEN  -- signals nobody can wait for any more
        DELETE FROM df._signals g WHERE g.instance_id = p_instance;
    END IF;

    IF coalesce((plan ->> 'held')::boolean, false) THEN
        NULL;  -- planned from held state: it took no _advance row
    ELSIF plan ? 'advance_keys' THEN  -- the rows its state was loaded with, no others
        DELETE FROM df._advance a
        WHERE a.instance_id = p_instance
          AND a.node_id IN (SELECT jsonb_array_elements_text(plan -> 'advance_keys'));
    ELSE
        DELETE FROM df._advance WHERE instance_id = p_instance;
    END IF;
    IF plan ->> 'wake_at' IS NOT NULL THEN
        INSERT INTO df._advance AS a (instance_id, requested_at)
        VALUES (p_instance, to_timestamp((plan ->> 'wake_at')::double precision))
        ON CONFLICT (instance_id, node_id) DO UPDATE SET requested_at = least(a.requested_at, excluded.requested_at);
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION df._apply_plan(text, jsonb) FROM PUBLIC;

-- The document df._load_for_advance returns, without taking any lock; plus 'version'.
CREATE OR REPLACE FUNCTION df._instance_state(p_instance text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    inst record;
    ex record;
    owner record;
BEGIN
    SELECT i.* INTO inst FROM df.instances i WHERE i.id = p_instance;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT e.execution_id, e.event_count, e.version, e.submitted_by INTO ex
    FROM df._executions e WHERE e.instance_id = p_instance
    ORDER BY e.execution_id DESC LIMIT 1;
    -- the owner fixed when the instance was first loaded (df._instance_owner)
    SELECT coalesce(ex.submitted_by, inst.submitted_by)::oid AS oid, r.rolname, r.rolsuper,
           r.rolcanlogin
    INTO owner
    FROM (SELECT) AS one LEFT JOIN pg_roles r ON r.oid = coalesce(ex.submitted_by, inst.submitted_by);
    RETURN jsonb_build_object(
        'now', extract(epoch FROM clock_timestamp()),
        'id', inst.id, 'label', inst.label, 'root', inst.root_node, 'status', inst.status,
        'created', extract(epoch FROM inst.created_at),
        'owner', owner.rolname, 'owner_oid', owner.oid, 'superuser', owner.rolsuper,
        'can_login', owner.rolcanlogin, 'database', inst.database,
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
                      'raw', CASE WHEN s.raw_result IS NULL AND s.result_columns IS NOT NULL
                                       AND n.status = 'completed'
                                  THEN df._rows_text(n.result, s.result_columns)
                                  ELSE s.raw_result END,
                      'error', CASE WHEN n.status = 'failed' THEN n.result #>> '{}' END,
                      'iteration', coalesce(s.iteration, 0),
                      'iteration_started', extract(epoch FROM s.iteration_started_at)))
                  FROM df.nodes n LEFT JOIN df._node_state s
                       ON s.instance_id = n.instance_id AND s.node_id = n.id
                  WHERE n.instance_id = p_instance));
END
$$;
REVOKE EXECUTE ON FUNCTION df._instance_state(text) FROM PUBLIC;

-- df._tasks and df._node_state have no foreign key to df.instances (each insert would look
-- the instance up again under a share lock): these triggers (at the end of this file)
-- remove an instance's rows with it, on an administrator's DELETE or TRUNCATE ... CASCADE
-- (users cannot delete instances).
CREATE OR REPLACE FUNCTION df._forget_deleted_instances()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM df._tasks t USING gone g WHERE t.instance_id = g.id;
    DELETE FROM df._node_state s USING gone g WHERE s.instance_id = g.id;
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION df._forget_deleted_instances() FROM PUBLIC;

CREATE OR REPLACE FUNCTION df._forget_truncated_instances()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    TRUNCATE df._tasks, df._node_state;
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION df._forget_truncated_instances() FROM PUBLIC;

-- Retention (pg_durable 0.2.4's reconciliation pass), one short batch per call: at most
-- p_batch finished instances (completed, failed, cancelled; never pending or running), the
-- oldest first, that are older than p_older_than or beyond the newest p_keep finished ones
-- (0: no cap). Age is completed_at, else created_at (pg_durable: never updated_at, which
-- owners may write). Their nodes go here, their engine rows with them (foreign keys
-- ON DELETE CASCADE and the triggers above). An instance another transaction holds (a
-- step, df.cancel, df.signal) is skipped, never waited for: the next pass takes it. Both
-- limits are one key of idx_instances_finished, so a batch reads only what it deletes,
-- plus the p_keep newest keys when capped. No row: another pgdurable process prunes now.
CREATE OR REPLACE FUNCTION df._prune_finished(p_older_than interval, p_keep integer,
                                              p_batch integer)
RETURNS TABLE (by_age integer, by_cap integer)
LANGUAGE plpgsql SET enable_seqscan = off SET jit = off AS $$
DECLARE
    cutoff timestamptz := clock_timestamp() - p_older_than;
    upto_at timestamptz := cutoff;  -- prune keys below (upto_at, upto_id)
    upto_id text := '';
    kept_at timestamptz;
    kept_id text;
    ids text[];
    aged integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(1885824114) THEN  -- ASCII "pgdr"
        RETURN;
    END IF;
    -- The batch's COMMIT does not wait for its WAL to reach the disk: a df.start's commit
    -- then queues behind no flush of ours, and a batch lost in a crash is pruned again.
    PERFORM set_config('synchronous_commit', 'off', true);
    IF p_keep > 0 THEN  -- the oldest of the newest p_keep: older ones are beyond the cap
        SELECT coalesce(i.completed_at, i.created_at), i.id INTO kept_at, kept_id
        FROM df.instances i
        WHERE i.status = ANY ('{completed,failed,cancelled,compensated}'::text[])
        ORDER BY coalesce(i.completed_at, i.created_at) DESC, i.id DESC
        OFFSET p_keep - 1 LIMIT 1;
        IF kept_at IS NOT NULL AND (kept_at, kept_id) > (upto_at, upto_id) THEN
            upto_at := kept_at;
            upto_id := kept_id;
        END IF;
    END IF;
    SELECT array_agg(d.id), count(*) FILTER (WHERE d.at < cutoff) INTO ids, aged
    FROM (SELECT i.id, coalesce(i.completed_at, i.created_at) AS at
          FROM df.instances i
          WHERE i.status = ANY ('{completed,failed,cancelled,compensated}'::text[])
            AND (coalesce(i.completed_at, i.created_at), i.id) < (upto_at, upto_id)
          ORDER BY coalesce(i.completed_at, i.created_at), i.id
          LIMIT p_batch
          FOR UPDATE SKIP LOCKED) d;
    IF ids IS NOT NULL THEN
        DELETE FROM df.nodes n WHERE n.instance_id = ANY (ids);
        DELETE FROM df.instances i WHERE i.id = ANY (ids);
    END IF;
    RETURN QUERY SELECT aged, coalesce(cardinality(ids), 0) - aged;
END
$$;
REVOKE EXECUTE ON FUNCTION df._prune_finished(interval, integer, integer) FROM PUBLIC;

CREATE OR REPLACE TRIGGER instances_forget_step_rows AFTER DELETE ON df.instances
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION df._forget_deleted_instances();
CREATE OR REPLACE TRIGGER instances_truncate_step_rows AFTER TRUNCATE ON df.instances
    FOR EACH STATEMENT EXECUTE FUNCTION df._forget_truncated_instances();
