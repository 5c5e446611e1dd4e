-- pgdurable catalog: pause and resume (pgdurable's own; pg_durable has neither): df.pause,
-- df.resume, and a failed instance run again from its failed nodes.

-- Pause and resume (pgdurable; pg_durable has neither). A paused instance starts no new
-- step: steps running finish and record their results, but the engine plans nothing for it
-- (engine/planner/graph.py) and claims none of its tasks (df._poll), so timers that come
-- due wait too. df.resume sets it going again, or runs a failed instance again from its
-- failed nodes (df._resume_failed). Owner-only, as df.cancel: the instance must be visible
-- (row-level security) and the status is written under the caller's privileges.
-- The status of one of the caller's instances (row-level security decides), its row locked
-- against a concurrent pause, resume or cancel; another's or none: 42704, as df.cancel.
CREATE OR REPLACE FUNCTION df._own_status_locked(target text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    current_status text;
BEGIN
    SELECT i.status INTO current_status FROM df.instances i
    WHERE i.id = target FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Instance not found or access denied: %', target
            USING ERRCODE = '42704';
    END IF;
    RETURN current_status;
END
$$;

CREATE OR REPLACE FUNCTION df.pause(instance_id text)
RETURNS text LANGUAGE plpgsql STRICT AS $$
DECLARE
    current_status text;
BEGIN
    current_status := df._own_status_locked(instance_id);
    IF current_status NOT IN ('pending', 'running', 'paused') THEN
        RAISE EXCEPTION 'Cannot pause instance % with status ''%''', instance_id, current_status
            USING ERRCODE = '55000',
                  HINT = 'Only a pending or running instance can be paused.';
    END IF;
    UPDATE df.instances i SET status = 'paused', updated_at = now()
    WHERE i.id = pause.instance_id AND i.status <> 'paused';
    -- a change the engine must see, as df.cancel's: an engine holding the instance's state
    -- in memory (df._complete_held) loads it again, and the advance that plans nothing for a
    -- paused instance drops that copy
    PERFORM df._request_advance(instance_id);
    RETURN format('Instance %s paused', instance_id);
END
$$;

CREATE OR REPLACE FUNCTION df.resume(instance_id text)
RETURNS text LANGUAGE plpgsql STRICT AS $$
DECLARE
    current_status text;
BEGIN
    current_status := df._own_status_locked(instance_id);
    IF current_status = 'failed' THEN
        PERFORM df._resume_failed(instance_id);
    ELSIF current_status = 'paused' THEN
        UPDATE df.instances i SET status = df._resumed_status(i.id), updated_at = now()
        WHERE i.id = resume.instance_id;
    ELSE
        RAISE EXCEPTION 'Cannot resume instance % with status ''%''', instance_id, current_status
            USING ERRCODE = '55000',
                  HINT = 'Only a paused or failed instance can be resumed.';
    END IF;
    PERFORM df._request_advance(instance_id);
    RETURN format('Instance %s resumed', instance_id);
END
$$;

-- The status a resumed instance goes on in: pending while none of its nodes ever started
-- (its first advance checks the owner and starts it), else running.
CREATE OR REPLACE FUNCTION df._resumed_status(target text)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM df.nodes n
                             WHERE n.instance_id = target AND n.status <> 'pending')
                THEN 'running' ELSE 'pending' END
$$;

-- A failed instance runs again: the nodes its failure went through, from the root down
-- (failed nodes, and running ones it left behind, e.g. a RACE's loser, whose tasks are
-- gone) are reset to pending, so that each starts afresh (a TIMEOUT's deadline, a RETRY's
-- attempts, a signal wait's timeout), except a loop, which goes on running in its
-- iteration; completed nodes keep their results and never run again. The instance goes on
-- in a new execution (df.instance_executions), whose stamp the kept nodes take too (they
-- are not superseded, §5.5); the version goes on growing, so no held state
-- (engine/planner/held.py) is taken for the stored one.
CREATE OR REPLACE FUNCTION df._resume_failed(target text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    previous record;
    next_id bigint;
BEGIN
    IF df._acting_owner(target) IS NULL THEN
        RAISE EXCEPTION 'Instance not found or access denied: %', target USING ERRCODE = '42704';
    END IF;
    PERFORM 1 FROM df.instances i WHERE i.id = target AND i.status = 'failed' FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Cannot resume instance %: it is no longer failed', target
            USING ERRCODE = '55000';
    END IF;
    WITH RECURSIVE g AS MATERIALIZED (
        SELECT * FROM df._inspect_graph(target)
    ), walk(node_id) AS (
        SELECT g.node_id FROM g WHERE g.is_root AND g.status IN ('failed', 'running')
      UNION
        SELECT c.node_id
        FROM walk w JOIN g p ON p.node_id = w.node_id
        CROSS JOIN LATERAL unnest(ARRAY[p.left_child, p.right_child, p.cond_child]
                                  || p.extra_children) AS x(child)
        JOIN g c ON c.node_id = x.child
        WHERE c.status IN ('failed', 'running')
    ), reset AS (
        UPDATE df.nodes n
        SET status = CASE WHEN n.node_type = 'LOOP' THEN 'running' ELSE 'pending' END,
            result = NULL,
            status_details = n.status_details
                             - '{attempt,max_attempts,next_attempt_at,last_error}'::text[],
            updated_at = clock_timestamp()
        FROM walk w
        WHERE n.instance_id = target AND n.id = w.node_id
          AND NOT EXISTS (SELECT 1 FROM df._tasks t
                          WHERE t.instance_id = target AND t.node_id = n.id)
        RETURNING n.id, n.node_type
    )
    UPDATE df._node_state s
    SET raw_result = NULL, result_columns = NULL, delivery = NULL,
        iteration = CASE WHEN r.node_type = 'LOOP' THEN s.iteration ELSE 0 END,
        iteration_started_at = CASE WHEN r.node_type = 'LOOP' THEN s.iteration_started_at END
    FROM reset r WHERE s.instance_id = target AND s.node_id = r.id;

    SELECT e.execution_id, e.version, e.submitted_by INTO previous
    FROM df._executions e WHERE e.instance_id = target ORDER BY e.execution_id DESC LIMIT 1;
    next_id := coalesce(previous.execution_id, 0) + 1;
    INSERT INTO df._executions (instance_id, execution_id, submitted_by, status, event_count,
                                version)
    VALUES (target, next_id, coalesce(previous.submitted_by, df._instance_owner(target)),
            'Running', 1, coalesce(previous.version, 0) + 1);
    UPDATE df.nodes n
    SET status_details = jsonb_set(n.status_details, '{execution_id}', to_jsonb(
            regexp_replace(n.status_details ->> 'execution_id',
                           format('^%s::%s(::|$)', target, previous.execution_id),
                           format('%s::%s\1', target, next_id))))
    WHERE n.instance_id = target
      AND n.status_details ->> 'execution_id' ~ format('^%s::%s(::|$)', target, previous.execution_id);
    UPDATE df.instances i
    SET status = df._resumed_status(target), completed_at = NULL, updated_at = clock_timestamp()
    WHERE i.id = target;
END
$$;
