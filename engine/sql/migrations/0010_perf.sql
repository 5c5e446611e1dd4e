-- pgdurable catalog, version 10: the same functions, cheaper on the hot path.
--
-- On PostgreSQL before 18 a LANGUAGE sql function that is not inlined (a SECURITY DEFINER
-- one, one returning a composite, one called from PL/pgSQL as a scalar) is planned again at
-- every call; PL/pgSQL keeps its plans for the session. The functions below are the ones a
-- workflow calls every time, rewritten in PL/pgSQL with the same results and errors.

-- ---------------------------------------------------------------------------------------
-- df.start
-- ---------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION df._walk_of(root jsonb)
RETURNS df._walk LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    result df._walk;
BEGIN
    SELECT array_agg(w.path ORDER BY w.sort_key), array_agg(w.node ORDER BY w.sort_key),
           max(w.depth)
    INTO result.paths, result.nodes, result.deepest
    FROM df._graph_walk(root) w;
    RETURN result;
END
$$;

CREATE OR REPLACE FUNCTION df._acting_owner(target text)
RETURNS regrole LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT i.submitted_by FROM df.instances i
            WHERE i.id = target AND pg_has_role(session_user, i.submitted_by, 'MEMBER'));
END
$$;

-- A leaf root (the usual one-step workflow) needs no walk: its only path is 'root', its
-- only problem is its own, and its flattened row is itself. Anything with children takes
-- the general path (walk, check, flatten), unchanged.
CREATE OR REPLACE FUNCTION df.start(fut text, label text DEFAULT NULL, database text DEFAULT NULL,
                                    transaction_mode text DEFAULT 'caller')
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    mode text := lower(coalesce(transaction_mode, 'caller'));
    root jsonb;
    instance_id text;
    me regrole := quote_ident(current_user)::regrole;
    walk df._walk;
    problem text;
    ids text[];
    types text[];
    queries text[];
    names text[];
    lefts text[];
    rights text[];
    attempt integer;
BEGIN
    IF mode NOT IN ('caller', 'new') THEN
        RAISE EXCEPTION 'invalid transaction_mode "%" for df.start(): expected ''caller'' or ''new''',
            transaction_mode USING ERRCODE = '22023';
    END IF;
    IF mode = 'new' THEN
        RETURN df._start_new(fut, label, database);
    END IF;
    IF fut IS NULL THEN
        RAISE EXCEPTION 'Invalid durable function: fut cannot be NULL' USING ERRCODE = '22004';
    END IF;
    root := df._parse_strict(fut);
    IF database IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_database d WHERE d.datname = start.database) THEN
        RAISE EXCEPTION 'database "%" does not exist', database USING ERRCODE = '3D000';
    END IF;
    PERFORM df._check_submitter(current_user);
    IF jsonb_typeof(root) = 'object' AND NOT (root ?| ARRAY['left_node', 'right_node',
                                                           'condition_node', 'extra_nodes']) THEN
        problem := df._node_problem(root);
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'Invalid durable function graph: root: %', problem
                USING ERRCODE = '22023';
        END IF;
        -- no children and no problem: a leaf type, whose flattened query is its own
        ids := ARRAY[right(gen_random_uuid()::text, 8)];
        types := ARRAY[root ->> 'node_type'];
        queries := ARRAY[root ->> 'query'];
        names := ARRAY[root ->> 'result_name'];
        lefts := ARRAY[NULL::text];
        rights := ARRAY[NULL::text];
    ELSE
        walk := df._walk_of(root);  -- one walk of the graph serves checking and flattening
        PERFORM df._check_walk(walk);
        SELECT array_agg(f.id ORDER BY f.ord), array_agg(f.node_type ORDER BY f.ord),
               array_agg(f.query ORDER BY f.ord), array_agg(f.result_name ORDER BY f.ord),
               array_agg(f.left_node ORDER BY f.ord), array_agg(f.right_node ORDER BY f.ord)
        INTO ids, types, queries, names, lefts, rights
        FROM df._flatten(walk) f;  -- pre-order: the root comes first
    END IF;
    FOR attempt IN 1..10 LOOP
        instance_id := right(gen_random_uuid()::text, 8);
        INSERT INTO df.instances (id, label, root_node, submitted_by, database)
        VALUES (instance_id, label, ids[1], me, start.database)
        ON CONFLICT (id) DO NOTHING;
        IF FOUND THEN
            INSERT INTO df.nodes (id, instance_id, node_type, query, result_name, left_node,
                                  right_node, submitted_by, database)
            SELECT u.id, instance_id, u.node_type, u.query, u.result_name, u.left_node,
                   u.right_node, me, start.database
            FROM unnest(ids, types, queries, names, lefts, rights)
                 AS u(id, node_type, query, result_name, left_node, right_node);
            PERFORM df._submit(instance_id);
            RETURN instance_id;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'Failed to create instance: exhausted 10 attempts to generate a collision-free ID'
        USING ERRCODE = '23505';
END
$$;

-- ---------------------------------------------------------------------------------------
-- Monitoring
-- ---------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION df.status(instance_id text)
RETURNS text LANGUAGE plpgsql VOLATILE STRICT AS $$
BEGIN
    RETURN (SELECT i.status FROM df.instances i WHERE i.id = status.instance_id);
END
$$;

-- ---------------------------------------------------------------------------------------
-- The engine's functions
--
-- Every lookup here is by key. A plan cached while a table was nearly empty (a fresh
-- catalog, before autovacuum's first ANALYZE) scans it sequentially for as long as the
-- session lives, at a cost that grows with the table (and with every row-lock lookup its
-- old versions need); the engine's functions therefore plan without sequential scans (and
-- without JIT, which the cost penalty of a scan that has no index path would switch on).
-- ---------------------------------------------------------------------------------------

-- Same document as before; the execution id and its event count come from one lookup.
CREATE OR REPLACE FUNCTION df._load_for_advance(p_instance text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    inst record;
    ex record;
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
    SELECT e.execution_id, e.event_count INTO ex
    FROM df._executions e WHERE e.instance_id = p_instance
    ORDER BY e.execution_id DESC LIMIT 1;
    RETURN jsonb_build_object(
        'now', extract(epoch FROM clock_timestamp()),
        'id', inst.id, 'label', inst.label, 'root', inst.root_node, 'status', inst.status,
        'owner', inst.rolname, 'owner_oid', inst.submitted_by::oid, 'superuser', inst.rolsuper,
        'can_login', inst.rolcanlogin, 'database', inst.database,
        'vars', coalesce((SELECT v.vars FROM df._instance_vars v WHERE v.instance_id = p_instance), '{}'),
        'execution_id', ex.execution_id,
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

-- Same effects as before; the statements a plan does not need (no cancelled tasks, no
-- consumed signal, no new task) are skipped, and the execution row, which exists after the
-- first advance, is updated in place.
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

        INSERT INTO df._node_state AS s (instance_id, node_id, raw_result, iteration,
                                         iteration_started_at)
        SELECT p_instance, u.id, u.raw, coalesce(u.iteration, 0), to_timestamp(u.iteration_started)
        FROM jsonb_to_recordset(nodes)
             AS u(id text, raw text, reset boolean, iteration integer,
                  iteration_started double precision)
        WHERE u.raw IS NOT NULL OR u.reset OR u.iteration IS NOT NULL
              OR u.iteration_started IS NOT NULL
        ON CONFLICT (instance_id, node_id) DO UPDATE
        SET raw_result = CASE WHEN excluded.raw_result IS NOT NULL OR EXISTS (
                                  SELECT 1 FROM jsonb_to_recordset(nodes)
                                                AS r(id text, reset boolean)
                                  WHERE r.id = excluded.node_id AND r.reset)
                              THEN excluded.raw_result ELSE s.raw_result END,
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
                                     THEN clock_timestamp() END, e.completed_at)
    WHERE e.instance_id = p_instance AND e.execution_id = (plan ->> 'execution_id')::bigint;
    IF NOT FOUND THEN
        INSERT INTO df._executions (instance_id, execution_id, submitted_by, status,
                                    event_count, output, completed_at)
        SELECT p_instance, (plan ->> 'execution_id')::bigint, i.submitted_by,
               coalesce(final_status, 'Running'), (plan ->> 'events')::bigint,
               plan ->> 'output',
               CASE WHEN final_status IN ('Completed', 'Failed') THEN clock_timestamp() END
        FROM df.instances i WHERE i.id = p_instance;
    END IF;

    DELETE FROM df._advance WHERE instance_id = p_instance;
    IF plan ->> 'wake_at' IS NOT NULL THEN
        INSERT INTO df._advance (instance_id, requested_at)
        VALUES (p_instance, to_timestamp((plan ->> 'wake_at')::double precision));
    END IF;
END
$$;

-- Recording a step's result: the same checks and effects as before, one statement fewer
-- (deleting the leased task row is what proves the lease). df._complete_step is the entry
-- point; df._complete_and_load calls the body directly, without a second SECURITY DEFINER
-- frame and its settings.
CREATE FUNCTION df._record_step(p_instance text, p_node text, p_token uuid, p_raw text,
                                p_delivery text)
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
    INSERT INTO df._advance AS a (instance_id) VALUES (p_instance)
    ON CONFLICT (instance_id) DO UPDATE SET requested_at = least(a.requested_at, excluded.requested_at);
END
$$;
REVOKE EXECUTE ON FUNCTION df._record_step(text, text, uuid, text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION df._complete_step(p_instance text, p_node text, p_token uuid,
                                             p_raw text, p_delivery text DEFAULT 'exactly-once')
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM df._record_step(p_instance, p_node, p_token, p_raw, p_delivery);
END
$$;

CREATE OR REPLACE FUNCTION df._complete_and_load(p_instance text, p_node text, p_token uuid,
                                                 p_raw text, p_delivery text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    state jsonb;
    secret uuid := gen_random_uuid();
BEGIN
    PERFORM df._record_step(p_instance, p_node, p_token, p_raw, p_delivery);
    state := df._load_for_advance(p_instance);
    IF state IS NULL THEN
        RETURN NULL;  -- someone else holds the instance: the _advance row is left for them
    END IF;
    INSERT INTO df._apply_grants (txid, secret) VALUES (txid_current(), secret)
    ON CONFLICT (txid) DO UPDATE SET secret = excluded.secret;
    RETURN (state || jsonb_build_object('apply_secret', secret))::text;
END
$$;

-- The engine's own connections plan the same way (they set it at login); these are the
-- entry points a step's transaction, or a user's df.start, calls on other connections.
ALTER FUNCTION df._complete_and_load(text, text, uuid, text, text) SET enable_seqscan = off SET jit = off;
ALTER FUNCTION df._complete_step(text, text, uuid, text, text) SET enable_seqscan = off SET jit = off;
ALTER FUNCTION df._apply_as_step(text, uuid, jsonb) SET enable_seqscan = off SET jit = off;
ALTER FUNCTION df._submit(text) SET enable_seqscan = off SET jit = off;

-- One round trip per scheduler pass instead of three: the instances due for an advance,
-- the due tasks claimed for this engine (at most p_claims; as the named query claim_tasks
-- did), and the seconds until the next timer or paced loop (NULL: nothing scheduled).
CREATE FUNCTION df._poll(p_owner uuid, p_lease_seconds double precision, p_advances integer,
                         p_claims integer)
RETURNS TABLE (kind text, instance_id text, node_id text, node_type text, payload text,
               lease_token uuid, attempts integer, owner name, database text,
               due double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT 'advance', a.instance_id::text, NULL::text, NULL::text, NULL::text, NULL::uuid,
           NULL::integer, NULL::name, NULL::text, NULL::double precision
    FROM df._advance a WHERE a.requested_at <= clock_timestamp()
    ORDER BY a.requested_at LIMIT p_advances;
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
               (SELECT min(a.requested_at) FROM df._advance a),
               (SELECT min(t.due_at) FROM df._tasks t WHERE t.lease_owner IS NULL))
               - clock_timestamp())::double precision;
END
$$;
REVOKE EXECUTE ON FUNCTION df._poll(uuid, double precision, integer, integer) FROM PUBLIC;
