-- pgdurable catalog, version 18: what an adversarial run found.
--
-- * An in-step advance grant is bound to the instance and node whose lease token earned it
--   (it was bound to the transaction only, so a secret obtained for one's own step applied
--   a plan to any other owner's instance).
-- * The engine takes a new instance's first step only on a session logged in as the
--   instance's owner or the owner's runner: a session that is merely a member of the owner
--   (a superuser is a member of every role) is not the owner's.
-- * df_wake notifications carry nothing: any role may LISTEN, so the payload named other
--   owners' instances and roles; the engine reads what to do from df._advance (df._poll
--   returns new instances with their owner, read from the catalog, never from a payload).
-- * A consumed signal is deleted (one signal satisfies one wait), and an instance's
--   signals go when it ends; a loop keeps its latest 100 executions.
-- * df.vars: users keep SELECT, column INSERT and UPDATE (value), and delete through
--   df.unsetvar/df.clearvars, so no user holds a table-level privilege that lets
--   LOCK TABLE stall everyone else's df.start and df.setvar.
-- * Leaf nodes' configurations are checked at df.start (a SLEEP whose query is not a
--   number of seconds, a SIGNAL or WAIT_SCHEDULE whose query is not its JSON object).

DELETE FROM df._apply_grants;
ALTER TABLE df._apply_grants ADD COLUMN instance_id text NOT NULL,
                             ADD COLUMN node_id text NOT NULL;

-- An instance's _advance rows are keyed by the node that asked ('' for df.start, df.cancel,
-- df.signal and timers): see "Sibling steps do not wait for each other" below.
ALTER TABLE df._advance ADD COLUMN node_id text NOT NULL DEFAULT '';
ALTER TABLE df._advance DROP CONSTRAINT _advance_pkey,
                        ADD CONSTRAINT _advance_pkey PRIMARY KEY (instance_id, node_id);

CREATE OR REPLACE FUNCTION df._complete_and_load(p_instance text, p_node text, p_token uuid,
                                                 p_raw text, p_delivery text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
DECLARE
    state jsonb;
    secret uuid := gen_random_uuid();
BEGIN
    PERFORM df._record_step(p_instance, p_node, p_token, p_raw, p_delivery);
    state := df._load_for_advance(p_instance);
    IF state IS NULL THEN
        RETURN NULL;  -- someone else holds the instance: the _advance row is left for them
    END IF;
    INSERT INTO df._apply_grants (txid, secret, instance_id, node_id)
    VALUES (txid_current(), secret, p_instance, p_node)
    ON CONFLICT (txid) DO UPDATE
    SET secret = excluded.secret, instance_id = excluded.instance_id, node_id = excluded.node_id;
    RETURN (state || jsonb_build_object('apply_secret', secret))::text;
END
$$;

DROP FUNCTION df._apply_as_step(text, uuid, jsonb);
CREATE FUNCTION df._apply_as_step(p_instance text, p_node text, p_secret uuid, plan jsonb)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
BEGIN
    DELETE FROM df._apply_grants g
    WHERE g.txid = txid_current() AND g.secret = p_secret
      AND g.instance_id = p_instance AND g.node_id = p_node;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgdurable: no advance of this instance was granted to this transaction'
            USING ERRCODE = '42501';
    END IF;
    BEGIN  -- a failing plan must not undo the step: the _advance row stays for a retry
        PERFORM df._apply_plan(p_instance, plan);
    EXCEPTION WHEN others THEN
        RAISE WARNING 'pgdurable: in-step advance of % failed: %', p_instance, SQLERRM;
        INSERT INTO df._advance AS a (instance_id) VALUES (p_instance)
        ON CONFLICT (instance_id, node_id) DO UPDATE SET requested_at = least(a.requested_at, excluded.requested_at);
        RETURN false;
    END;
    RETURN true;
END
$$;

-- For the engine's own calls on an owner's step connection: the key must be an engine's
-- epoch id (else 42501); true when the session logged in as the instance's owner, or as
-- the owner's runner. Membership is not enough: a superuser is a member of every role.
CREATE OR REPLACE FUNCTION df._engine_acting_for(p_instance text, p_key uuid)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM df._worker_epoch w WHERE w.epoch_id = p_key) THEN
        RAISE EXCEPTION 'pgdurable: not an engine key' USING ERRCODE = '42501';
    END IF;
    RETURN EXISTS (
        SELECT 1 FROM df.instances i JOIN pg_roles o ON o.oid = i.submitted_by
        WHERE i.id = p_instance
          AND (o.rolname = session_user
               OR EXISTS (SELECT 1 FROM df._runners r
                          WHERE r.owner = o.rolname AND r.runner = session_user)));
END
$$;

CREATE OR REPLACE FUNCTION df._submit(new_instance text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
DECLARE
    owner_role regrole;
BEGIN
    SELECT i.submitted_by INTO owner_role
    FROM df.instances i
    WHERE i.id = new_instance AND pg_has_role(session_user, i.submitted_by, 'MEMBER');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Instance not found or access denied: %', new_instance
            USING ERRCODE = '42501';
    END IF;
    INSERT INTO df._instance_vars (instance_id, vars)  -- none: readers see '{}'
    SELECT new_instance, jsonb_object_agg(v.name, v.value)
    FROM df.vars v WHERE v.owner = owner_role AND v.value IS NOT NULL
    HAVING count(*) > 0
    ON CONFLICT (instance_id) DO NOTHING;
    INSERT INTO df._advance AS a (instance_id) VALUES (new_instance)
    ON CONFLICT (instance_id, node_id) DO UPDATE SET requested_at = least(a.requested_at, excluded.requested_at);
    PERFORM pg_notify('df_wake', '');  -- any role may listen: say nothing
END
$$;

CREATE OR REPLACE FUNCTION df._request_advance(target text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF df._acting_owner(target) IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO df._advance AS a (instance_id) VALUES (target)
    ON CONFLICT (instance_id, node_id) DO UPDATE SET requested_at = least(a.requested_at, excluded.requested_at);
    PERFORM pg_notify('df_wake', '');
END
$$;

-- As in version 10, except that an instance due for its first advance, whose steps run in
-- this database, comes as kind 'new' with its owner and database (the engine may then run
-- its first step in the same transaction as its first advance, on the owner's connection),
-- the first p_documents of them with the state to plan that from (df._first_document),
-- and that the instances in p_busy (first steps this engine is taking now) are left out
-- while they are pending (once promoted or cancelled, their advances are due as any). The
-- next due time leaves out the instances handed out in this pass: the engine is advancing
-- them, and counting them made it poll again at once (twice per df.start).
CREATE FUNCTION df._first_step_busy(p_instance text, p_busy text[])
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT p_instance = ANY (p_busy)
           AND EXISTS (SELECT 1 FROM df.instances i WHERE i.id = p_instance AND i.status = 'pending')
$$;
REVOKE EXECUTE ON FUNCTION df._first_step_busy(text, text[]) FROM PUBLIC;

DROP FUNCTION df._poll(uuid, double precision, integer, integer);
CREATE FUNCTION df._poll(p_owner uuid, p_lease_seconds double precision,
                         p_advances integer, p_claims integer, p_busy text[],
                         p_documents integer)
RETURNS TABLE (kind text, instance_id text, node_id text, node_type text, payload text,
               lease_token uuid, attempts integer, owner name, database text,
               due double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    taken text[];  -- instances handed out now: not due again for the next pass
BEGIN
    SELECT coalesce(array_agg(d.instance_id), '{}') INTO taken
    FROM (SELECT a.instance_id FROM df._advance a
          WHERE a.requested_at <= clock_timestamp() AND NOT df._first_step_busy(a.instance_id, p_busy)
          GROUP BY a.instance_id ORDER BY min(a.requested_at) LIMIT p_advances) d;
    RETURN QUERY
    SELECT x.kind, x.id, NULL::text, NULL::text,
           CASE WHEN x.kind = 'new' AND x.n <= p_documents THEN df._first_document(x.id) END,
           NULL::uuid, NULL::integer, x.rolname, x.database, NULL::double precision
    FROM (SELECT CASE WHEN i.status = 'pending' AND i.database IS NULL
                      THEN 'new' ELSE 'advance' END AS kind,
                 t.id, r.rolname, i.database,
                 row_number() OVER (PARTITION BY i.status = 'pending' AND i.database IS NULL
                                    ORDER BY t.ord) AS n
          FROM unnest(taken) WITH ORDINALITY AS t(id, ord)
               LEFT JOIN df.instances i ON i.id = t.id
               LEFT JOIN pg_roles r ON r.oid = i.submitted_by) x;
    IF p_claims > 0 THEN
        RETURN QUERY
        WITH claimed AS (
            UPDATE df._tasks t
            SET lease_owner = p_owner, lease_token = gen_random_uuid(),
                lease_until = now() + make_interval(secs => p_lease_seconds),
                attempts = t.attempts + 1
            FROM df.instances i
            WHERE i.id = t.instance_id
              AND (t.instance_id, t.node_id) IN (
                  SELECT c.instance_id, c.node_id FROM df._tasks c
                  WHERE c.due_at <= now() AND (c.lease_owner IS NULL OR c.lease_until < now())
                  ORDER BY c.due_at
                  LIMIT p_claims
                  FOR UPDATE SKIP LOCKED)
            RETURNING t.instance_id, t.node_id, t.node_type, t.payload, t.lease_token,
                      t.attempts, i.submitted_by, i.database)
        SELECT 'task', c.instance_id::text, c.node_id::text, c.node_type, c.payload,
               c.lease_token, c.attempts,
               (SELECT r.rolname FROM pg_roles r WHERE r.oid = c.submitted_by), c.database,
               NULL::double precision
        FROM claimed c;
    END IF;
    RETURN QUERY
    SELECT 'due', NULL::text, NULL::text, NULL::text, NULL::text, NULL::uuid, NULL::integer,
           NULL::name, NULL::text,
           extract(epoch FROM least(
               (SELECT min(a.requested_at) FROM df._advance a
                WHERE NOT df._first_step_busy(a.instance_id, p_busy)
                  AND a.instance_id <> ALL (taken)),
               (SELECT min(t.due_at) FROM df._tasks t WHERE t.lease_owner IS NULL))
               - clock_timestamp())::double precision;
END
$$;
REVOKE EXECUTE ON FUNCTION df._poll(uuid, double precision, integer, integer, text[], integer)
    FROM PUBLIC;

-- As in version 16, with the signal and execution changes above.
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

-- Variables: users delete theirs through these functions; the table privileges they keep
-- (SELECT, column INSERT, UPDATE (value)) cannot take a lock that blocks another user.
CREATE FUNCTION df._delete_vars(p_owner regrole, p_name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_has_role(session_user, p_owner, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied for table vars' USING ERRCODE = '42501';
    END IF;
    DELETE FROM df.vars v WHERE v.owner = p_owner AND (p_name IS NULL OR v.name = p_name);
END
$$;

CREATE OR REPLACE FUNCTION df.unsetvar(name text)
RETURNS text LANGUAGE plpgsql STRICT AS $$
BEGIN
    IF df._in_workflow() THEN
        RAISE EXCEPTION 'df.unsetvar() cannot be called inside a workflow - manage variables before starting the workflow'
            USING ERRCODE = '0A000';
    END IF;
    PERFORM df._delete_vars(quote_ident(current_user)::regrole, unsetvar.name);
    PERFORM df._mark_helper_result('df.unsetvar', 'OK');
    RETURN 'OK';
END
$$;

CREATE OR REPLACE FUNCTION df.clearvars()
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF df._in_workflow() THEN
        RAISE EXCEPTION 'df.clearvars() cannot be called inside a workflow - manage variables before starting the workflow'
            USING ERRCODE = '0A000';
    END IF;
    PERFORM df._delete_vars(quote_ident(current_user)::regrole, NULL);
    PERFORM df._mark_helper_result('df.clearvars', 'OK');
    RETURN 'OK';
END
$$;

CREATE OR REPLACE FUNCTION df._grant_usage_privileges(p_role text, include_http boolean DEFAULT false,
                                                      with_grant boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    opt text := CASE WHEN with_grant THEN ' WITH GRANT OPTION' ELSE '' END;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA df TO %I', p_role) || opt;
    IF include_http THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION df.http(text, text, text, jsonb, integer) TO %I', p_role) || opt;
        EXECUTE format('GRANT EXECUTE ON FUNCTION df.http_multipart(text, text, jsonb, jsonb, integer) TO %I', p_role) || opt;
    END IF;
    IF with_grant THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION df.grant_usage(text, boolean, boolean) TO %I', p_role) || opt;
        EXECUTE format('GRANT EXECUTE ON FUNCTION df.revoke_usage(text) TO %I', p_role) || opt;
        EXECUTE format('GRANT EXECUTE ON FUNCTION df.metrics() TO %I', p_role) || opt;
    END IF;
    EXECUTE format('GRANT SELECT ON df.instances TO %I', p_role) || opt;
    EXECUTE format('GRANT UPDATE (status, updated_at) ON df.instances TO %I', p_role) || opt;
    EXECUTE format('GRANT SELECT ON df.nodes TO %I', p_role) || opt;
    EXECUTE format('GRANT INSERT (id, label, root_node, submitted_by, database) ON df.instances TO %I', p_role) || opt;
    EXECUTE format('GRANT INSERT (id, instance_id, node_type, query, result_name, left_node, right_node, submitted_by, database) ON df.nodes TO %I', p_role) || opt;
    EXECUTE format('GRANT SELECT, INSERT (name, value, owner), UPDATE (value) ON df.vars TO %I', p_role) || opt;
    EXECUTE format('GRANT SELECT ON df._executions, df._instance_overview TO %I', p_role) || opt;
    RAISE NOTICE 'pg_durable: granted df usage privileges to "%"', p_role;
END
$$;

-- Roles granted usage before this version keep what they had, less what locks the table.
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT DISTINCT a.grantee::regrole AS grantee, bool_or(a.is_grantable) AS grantable
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'df.vars'::regclass AND a.grantee <> c.relowner AND a.grantee <> 0
          AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE')
        GROUP BY a.grantee
    LOOP
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON df.vars FROM %s CASCADE', g.grantee);
        EXECUTE format('GRANT INSERT (name, value, owner), UPDATE (value) ON df.vars TO %s', g.grantee)
                || CASE WHEN g.grantable THEN ' WITH GRANT OPTION' ELSE '' END;
    END LOOP;
END
$$;

-- What is wrong with a leaf node's configuration, or NULL: what the planner reads from it
-- must be there, of the right kind and in range (a due time PostgreSQL can store).
CREATE FUNCTION df._leaf_config_problem(t text, query text)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    config jsonb;
BEGIN
    IF t = 'SLEEP' THEN
        IF query !~ '^\s*[0-9]{1,10}(\.[0-9]+)?\s*$' THEN
            RETURN format('SLEEP node requires a number of seconds (0 to 9999999999) in query, got ''%s''',
                          left(query, 100));
        END IF;
        RETURN NULL;
    END IF;
    IF t NOT IN ('WAIT_SCHEDULE', 'SIGNAL') THEN
        RETURN NULL;
    END IF;
    BEGIN
        config := query::jsonb;
    EXCEPTION WHEN others THEN
        RETURN format('query in %s must be valid JSON config: %s', t, SQLERRM);
    END;
    IF jsonb_typeof(config) IS DISTINCT FROM 'object' THEN
        RETURN format('query in %s must be a JSON config object', t);
    END IF;
    IF t = 'WAIT_SCHEDULE' AND jsonb_typeof(config -> 'cron_expr') IS DISTINCT FROM 'string' THEN
        RETURN 'WAIT_SCHEDULE node requires a cron_expr string in its config';
    END IF;
    IF t = 'SIGNAL' AND jsonb_typeof(config -> 'signal_name') IS DISTINCT FROM 'string' THEN
        RETURN 'SIGNAL node requires a signal_name string in its config';
    END IF;
    IF t = 'SIGNAL' AND coalesce(jsonb_typeof(config -> 'timeout_seconds'), 'null') <> 'null'
       AND (jsonb_typeof(config -> 'timeout_seconds') <> 'number'
            OR abs((config ->> 'timeout_seconds')::numeric) >= 1e10) THEN
        RETURN 'timeout_seconds of a SIGNAL node must be a number of seconds below 10000000000';
    END IF;
    RETURN NULL;
END
$$;

-- As in version 17, and the leaf's configuration checked.
CREATE OR REPLACE FUNCTION df._node_problem(node jsonb)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    t text := node ->> 'node_type';
    has_left boolean := coalesce(jsonb_typeof(node -> 'left_node') = 'object', false);
    has_right boolean := coalesce(jsonb_typeof(node -> 'right_node') = 'object', false);
    has_condition boolean := coalesce(jsonb_typeof(node -> 'condition_node') = 'object', false);
    extras integer := CASE WHEN jsonb_typeof(node -> 'extra_nodes') = 'array'
                           THEN jsonb_array_length(node -> 'extra_nodes') ELSE 0 END;
    config jsonb;
    problem text;
BEGIN
    IF jsonb_typeof(node -> 'node_type') IS DISTINCT FROM 'string'
       OR NOT (t = ANY (df._node_types())) THEN
        RETURN format('Unknown node_type ''%s''. Valid types: %s',
                      coalesce(t, node ->> 'node_type', 'null'),
                      array_to_string(df._node_types(), ', '));
    END IF;
    IF has_condition AND t NOT IN ('IF', 'LOOP') THEN
        RETURN format('condition_node is not valid for %s nodes', t);
    END IF;
    IF extras > 0 AND t <> 'JOIN' THEN
        RETURN format('extra_nodes is not valid for %s nodes', t);
    END IF;
    IF node ? 'result_name' AND jsonb_typeof(node -> 'result_name') = 'string'
       AND node ->> 'result_name' !~ '^[A-Za-z_][A-Za-z0-9_]*$' THEN
        RETURN format('result_name ''%s'' is not a valid identifier — must match '
                      '[a-zA-Z_][a-zA-Z0-9_]*', node ->> 'result_name');
    END IF;
    IF t IN ('IF', 'JOIN') AND jsonb_typeof(node -> 'query') = 'string' THEN
        BEGIN
            config := (node ->> 'query')::jsonb;
        EXCEPTION WHEN others THEN
            IF t = 'IF' AND NOT has_condition THEN
                RETURN 'query in IF must be valid JSON config: ' || SQLERRM;
            END IF;
        END;
        IF t = 'IF' AND config ? 'condition_node' THEN
            RETURN 'condition_node in IF must be a first-class Durofut field, not embedded in query';
        END IF;
        IF t = 'JOIN' AND config ? 'extra_nodes' THEN
            RETURN 'extra_nodes in JOIN must be a first-class Durofut field, not embedded in query';
        END IF;
        IF t = 'IF' AND NOT has_condition AND jsonb_typeof(config) IS DISTINCT FROM 'object' THEN
            RETURN 'query in IF must be a JSON config object';
        END IF;
    END IF;
    problem := CASE
        WHEN t IN ('THEN', 'JOIN', 'RACE') AND NOT (has_left AND has_right)
            THEN format('%s node requires left_node and right_node', t)
        WHEN t = 'IF' AND NOT (has_left AND has_right)
            THEN 'IF node requires left_node (then) and right_node (else)'
        WHEN t = 'IF' AND NOT has_condition AND jsonb_typeof(node -> 'query') IS DISTINCT FROM 'string'
            THEN 'IF node requires a condition_node or a condition config in query'
        WHEN t = 'LOOP' AND NOT has_left THEN 'LOOP node requires left_node (the body)'
        WHEN t = 'LOOP' AND has_right THEN 'right_node is not valid for LOOP nodes'
        WHEN t NOT IN ('THEN', 'JOIN', 'RACE', 'IF', 'LOOP') AND (has_left OR has_right)
            THEN format('%s nodes cannot have children', t)
        WHEN t NOT IN ('THEN', 'JOIN', 'RACE', 'IF', 'LOOP')
             AND jsonb_typeof(node -> 'query') IS DISTINCT FROM 'string'
            THEN format('%s node requires a query', t)
    END;
    RETURN coalesce(problem, df._leaf_config_problem(t, node ->> 'query'));
END
$$;

-- ---------------------------------------------------------------------------------------
-- Sibling steps do not wait for each other. Every step recorded its result by upserting its
-- instance's one _advance row, so the parallel steps of one instance queued on that row
-- (behind whichever transaction was loading and planning the instance, for a graph of
-- 10,000 nodes a long time). A step now leaves a row of its own, keyed by its node (''
-- for df.start, df.cancel, df.signal and timers); an advance deletes only the rows it
-- loaded (their keys come with the state, as 'advance_keys'), so a row a sibling committed
-- meanwhile stays and brings the next advance. (The table change is at the top.)

CREATE OR REPLACE FUNCTION df._record_step(p_instance text, p_node text, p_token uuid,
                                           p_raw text, p_delivery text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM df._tasks
    WHERE instance_id = p_instance AND node_id = p_node AND lease_token = p_token;
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
    INSERT INTO df._advance AS a (instance_id, node_id) VALUES (p_instance, p_node)
    ON CONFLICT (instance_id, node_id)
    DO UPDATE SET requested_at = least(a.requested_at, excluded.requested_at);
END
$$;

CREATE OR REPLACE FUNCTION df._fail_step(p_instance text, p_node text, p_token uuid, p_error text,
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
    INSERT INTO df._advance AS a (instance_id, node_id) VALUES (p_instance, p_node)
    ON CONFLICT (instance_id, node_id)
    DO UPDATE SET requested_at = least(a.requested_at, excluded.requested_at);
    RETURN true;
END
$$;

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

-- The state of a new instance as df._first_state gave it to the engine's step transaction
-- (df._instance_state plus the version of its '' _advance row as 'advance_xmin'); NULL
-- without that row. df._poll now hands it to the engine with the instance (the engine key
-- and the owner's session are checked where it is applied, in df._apply_first), which
-- spares the step connection a round trip; df._first_state goes.
DROP FUNCTION df._first_state(text, uuid);
CREATE FUNCTION df._first_document(p_instance text)
RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    advance_xmin text;
BEGIN
    SELECT a.xmin::text INTO advance_xmin FROM df._advance a
    WHERE a.instance_id = p_instance AND a.node_id = '';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN (df._instance_state(p_instance)
            || jsonb_build_object('advance_xmin', advance_xmin))::text;
END
$$;
REVOKE EXECUTE ON FUNCTION df._first_document(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION df._first_unchanged(p_instance text, p_advance_xmin text)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM df.instances i
    WHERE i.id = p_instance AND i.status = 'pending' FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND OR EXISTS (SELECT 1 FROM df._executions e WHERE e.instance_id = p_instance) THEN
        RETURN false;
    END IF;
    PERFORM 1 FROM df._advance a
    WHERE a.instance_id = p_instance AND a.node_id = '' AND a.xmin::text = p_advance_xmin
    FOR UPDATE SKIP LOCKED;
    RETURN FOUND;
END
$$;
