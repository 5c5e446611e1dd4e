-- pgdurable catalog: monitoring (§3.6): df.list_instances (both overloads),
-- df.instance_info, df.instance_executions, df.metrics; and inspection (§5.5, §7): the
-- read-time inferred status of every node and df.instance_nodes (both overloads).
-- Everything is SECURITY INVOKER and reads through row-level security, so users only ever
-- see their own instances.

CREATE OR REPLACE FUNCTION df._function_name()
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT 'pg_durable::orchestration::execute-function-graph'::text
$$;

-- The page-size cap in force for this call (pg_durable.list_instances_max_limit, SUSET in
-- pg_durable): the session's value, which pgdurable sets at login to the server's and a
-- superuser (or a role granted SET ON PARAMETER) may SET. Anyone may SET a placeholder, so
-- for other callers it can only lower the server's value (published by the engine in
-- df._settings), never raise it.
CREATE OR REPLACE FUNCTION df._list_limit_max()
RETURNS integer LANGUAGE plpgsql STABLE AS $$
DECLARE
    server_max integer := df._setting('list_instances_max_limit', '1000')::integer;
    session_value text := current_setting('pg_durable.list_instances_max_limit', true);
    session_max integer;
BEGIN
    IF session_value IS NULL OR session_value = '' THEN
        RETURN server_max;
    END IF;
    IF session_value !~ '^\s*[+-]?\d{1,10}\s*$' THEN
        RAISE EXCEPTION 'invalid value for parameter "pg_durable.list_instances_max_limit": "%"',
            session_value USING ERRCODE = '22023';
    END IF;
    session_max := session_value::bigint;
    IF session_max NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION '% is outside the valid range for parameter "pg_durable.list_instances_max_limit" (1 .. 1000000)',
            session_max USING ERRCODE = '22023';
    END IF;
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        RETURN session_max;
    END IF;
    -- pg_durable: a superuser may delegate it with GRANT SET ON PARAMETER (PostgreSQL 15+;
    -- the function is only planned when this branch runs)
    IF current_setting('server_version_num')::integer >= 150000 THEN
        IF has_parameter_privilege('pg_durable.list_instances_max_limit', 'SET') THEN
            RETURN session_max;
        END IF;
    END IF;
    RETURN least(session_max, server_max);
END
$$;

CREATE OR REPLACE FUNCTION df._check_list_limit(limit_count integer)
RETURNS void LANGUAGE plpgsql STABLE AS $$
DECLARE
    max_limit integer := df._list_limit_max();
BEGIN
    IF limit_count IS NULL OR limit_count < 1 THEN
        RAISE EXCEPTION 'limit_count must be at least 1' USING ERRCODE = '22023';
    END IF;
    IF limit_count > max_limit THEN
        RAISE EXCEPTION 'df.list_instances: limit_count (%) exceeds pg_durable.list_instances_max_limit (%); request fewer rows, or use the paginated df.list_instances overload (after_cursor/next_cursor) for large result sets',
            limit_count, max_limit USING ERRCODE = '22023';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION df.list_instances(status_filter text DEFAULT NULL, limit_count integer DEFAULT 100)
RETURNS TABLE (instance_id text, label text, function_name text, status text,
               execution_count bigint, output text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM df._check_list_limit(limit_count);
    RETURN QUERY
    SELECT o.id::text, o.label, df._function_name(), o.status, o.execution_count, o.output
    FROM df._instance_overview o
    WHERE status_filter IS NULL OR o.status = status_filter
    ORDER BY o.created_at DESC, o.id
    LIMIT limit_count;
END
$$;

CREATE OR REPLACE FUNCTION df._encode_cursor(created timestamptz, id text)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT encode(convert_to('v1|' || to_char(created, 'YYYY-MM-DD"T"HH24:MI:SS.USOF') || '|' || id,
                             'UTF8'), 'hex')
$$;

CREATE OR REPLACE FUNCTION df._decode_cursor(cursor_text text, OUT created timestamptz, OUT id text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    decoded text;
    parts text[];
BEGIN
    IF cursor_text = '' OR length(cursor_text) > 512 OR length(cursor_text) % 2 = 1
       OR cursor_text !~ '^[0-9a-fA-F]+$' THEN
        RAISE EXCEPTION 'df.list_instances: invalid after_cursor' USING ERRCODE = '22023';
    END IF;
    BEGIN
        decoded := convert_from(decode(cursor_text, 'hex'), 'UTF8');
    EXCEPTION WHEN others THEN
        RAISE EXCEPTION 'df.list_instances: invalid after_cursor' USING ERRCODE = '22023';
    END;
    parts := string_to_array(decoded, '|');
    IF array_length(parts, 1) <> 3 OR parts[1] <> 'v1' OR parts[2] = '' OR parts[3] = ''
       OR parts[2] !~ '^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}[+-]\d{2}(:?\d{2})?$' THEN
        RAISE EXCEPTION 'df.list_instances: invalid after_cursor' USING ERRCODE = '22023';
    END IF;
    created := parts[2]::timestamptz;
    id := parts[3];
END
$$;

CREATE OR REPLACE FUNCTION df.list_instances(status_filter text, limit_count integer, label_filter text,
                                  after_cursor text DEFAULT NULL)
RETURNS TABLE (instance_id text, label text, function_name text, status text,
               execution_count bigint, output text, created_at timestamptz,
               completed_at timestamptz, next_cursor text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    after_created timestamptz;
    after_id text;
BEGIN
    PERFORM df._check_list_limit(limit_count);
    IF after_cursor IS NOT NULL THEN
        SELECT c.created, c.id INTO after_created, after_id FROM df._decode_cursor(after_cursor) c;
    END IF;
    RETURN QUERY
    WITH page AS (
        SELECT o.*, row_number() OVER (ORDER BY o.created_at DESC, o.id) AS rn
        FROM df._instance_overview o
        WHERE o.created_at IS NOT NULL
          AND (status_filter IS NULL OR o.status = status_filter)
          AND (label_filter IS NULL OR o.label = label_filter)
          AND (after_cursor IS NULL OR o.created_at < after_created
               OR (o.created_at = after_created AND o.id > after_id))
        ORDER BY o.created_at DESC, o.id
        LIMIT limit_count + 1
    ), edge AS (
        SELECT p.created_at, p.id FROM page p WHERE p.rn = limit_count
    ), more AS (
        SELECT count(*) > limit_count AS has_more FROM page
    )
    SELECT p.id::text, p.label, df._function_name(), p.status, p.execution_count, p.output,
           p.created_at, p.completed_at,
           CASE WHEN more.has_more THEN df._encode_cursor(edge.created_at, edge.id) END
    FROM page p CROSS JOIN more LEFT JOIN edge ON true
    WHERE p.rn <= limit_count
    ORDER BY p.rn;
END
$$;

CREATE OR REPLACE FUNCTION df.instance_info(instance_id text)
RETURNS TABLE (instance_id text, label text, function_name text, function_version text,
               current_execution_id bigint, status text, output text)
LANGUAGE sql VOLATILE STRICT AS $$
    SELECT o.id::text, o.label, df._function_name(), '1.0.0'::text, o.execution_count,
           o.status, o.output
    FROM df._instance_overview o WHERE o.id = instance_info.instance_id
$$;

CREATE OR REPLACE FUNCTION df.instance_executions(instance_id text, limit_count integer DEFAULT 5)
RETURNS TABLE (execution_id bigint, status text, event_count bigint, duration_ms bigint,
               output text)
LANGUAGE plpgsql VOLATILE STRICT AS $$
BEGIN
    IF limit_count < 1 THEN
        RAISE EXCEPTION 'limit_count must be at least 1' USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    SELECT e.execution_id, e.status, e.event_count,
           CASE WHEN e.completed_at IS NULL THEN 0::bigint
                ELSE (extract(epoch FROM e.completed_at - e.started_at) * 1000)::bigint END,
           df._output_text(e, (SELECT i.root_node FROM df.instances i
                               WHERE i.id = e.instance_id))
    FROM df._executions e
    WHERE e.instance_id = instance_executions.instance_id
    ORDER BY e.execution_id DESC
    LIMIT least(limit_count, 10000);
END
$$;

CREATE OR REPLACE FUNCTION df.metrics()
RETURNS TABLE (total_instances bigint, running_instances bigint, completed_instances bigint,
               failed_instances bigint, total_executions bigint, total_events bigint)
LANGUAGE sql VOLATILE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT (SELECT count(*) FROM df.instances),
           (SELECT count(*) FROM df.instances WHERE status IN ('pending', 'running', 'paused')),
           (SELECT count(*) FROM df.instances WHERE status = 'completed'),
           (SELECT count(*) FROM df.instances WHERE status IN ('failed', 'cancelled', 'compensated')),
           (SELECT count(*) FROM df._executions),
           (SELECT coalesce(sum(event_count), 0)::bigint FROM df._executions)
$$;
REVOKE EXECUTE ON FUNCTION df.metrics() FROM PUBLIC;

-- `value` as jsonb, or NULL when it is not JSON (node configs written by hand may not be).
-- Configs are JSON objects, so other text skips the exception block (a subtransaction).
CREATE OR REPLACE FUNCTION df._inspect_jsonb(value text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
BEGIN
    IF value !~ '^[[:space:]]*\{' THEN
        RETURN NULL;
    END IF;
    BEGIN
        RETURN value::jsonb;
    EXCEPTION WHEN data_exception THEN
        RETURN NULL;
    END;
END;
$$;

-- =======================================================================================
-- The stored graph of an instance, as a tree
-- =======================================================================================

-- Every node row of an instance with its children by role (§5.2). A child is kept only if
-- it exists, is not the root and has exactly one parent, so that hand-written rows forming
-- a cycle or a DAG still give a finite tree (the rest counts as unreachable).
CREATE OR REPLACE FUNCTION df._inspect_graph(p_instance text)
RETURNS TABLE (node_id text, node_type text, query text, result_name text, status text,
               stamp text, is_root boolean, left_child text, right_child text,
               cond_child text, extra_children text[])
LANGUAGE sql STABLE
AS $$
    WITH n AS MATERIALIZED (
        SELECT n.id::text AS id, n.node_type, n.query, n.result_name, n.status,
               n.status_details ->> 'execution_id' AS stamp,
               n.left_node::text AS l, n.right_node::text AS r, c.config ->> 'condition_node' AS c,
               CASE WHEN jsonb_typeof(c.config -> 'extra_nodes') = 'array' THEN ARRAY(
                   SELECT jsonb_array_elements_text(c.config -> 'extra_nodes')) END AS x
        FROM df.nodes n
        CROSS JOIN LATERAL (SELECT CASE WHEN n.node_type IN ('IF', 'LOOP', 'JOIN')
                                        THEN df._inspect_jsonb(n.query) END AS config) c
        WHERE n.instance_id = p_instance
    ), root AS (
        SELECT i.root_node::text AS id FROM df.instances i WHERE i.id = p_instance
    ), tree_child AS (
        SELECT e.child
        FROM n, unnest(ARRAY[n.l, n.r, n.c] || coalesce(n.x, '{}')) AS e(child)
        WHERE e.child IN (SELECT id FROM n) AND e.child NOT IN (SELECT id FROM root)
        GROUP BY e.child HAVING count(*) = 1
    )
    SELECT n.id, n.node_type, n.query, n.result_name, n.status, n.stamp,
           n.id IN (SELECT id FROM root),
           CASE WHEN n.l IN (SELECT child FROM tree_child) THEN n.l END,
           CASE WHEN n.r IN (SELECT child FROM tree_child) THEN n.r END,
           CASE WHEN n.c IN (SELECT child FROM tree_child) THEN n.c END,
           ARRAY(SELECT u.x FROM unnest(n.x) WITH ORDINALITY AS u(x, ord)
                 WHERE u.x IN (SELECT child FROM tree_child) ORDER BY u.ord)
    FROM n
$$;

-- The levels of an execution stamp (§5.4): '<inst>::<g0>::<node1>::<g1>...' gives
-- (1, '<inst>', g0), (2, '<inst>::<g0>::<node1>', g1), ... A malformed stamp gives nothing.
CREATE OR REPLACE FUNCTION df._stamp_levels(stamp text)
RETURNS TABLE (level integer, orchestration text, generation bigint)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT k, array_to_string(p.parts[1:2 * k - 1], '::'), p.parts[2 * k]::bigint
    FROM (SELECT string_to_array(stamp, '::') AS parts) p,
         generate_series(1, cardinality(p.parts) / 2) AS k
    WHERE stamp ~ '^[^:]+::[0-9]{1,18}(::[^:]+::[0-9]{1,18})*$'
$$;

-- §5.5: each node's status as the user should read it. A node is superseded when, at some
-- level of its stamp, a later generation of that orchestration exists. The walk from the
-- root carries the nearest current terminal ancestor and the latest-stamped ancestor.
CREATE OR REPLACE FUNCTION df._inferred_statuses(instance_id text)
RETURNS TABLE (node_id text, inferred_status text, inferred_status_from_ancestor_id text)
LANGUAGE sql STABLE
AS $$
    WITH RECURSIVE g AS MATERIALIZED (
        SELECT * FROM df._inspect_graph(_inferred_statuses.instance_id)
    ), lv AS MATERIALIZED (
        SELECT g.node_id, l.level, l.orchestration, l.generation
        FROM g, df._stamp_levels(g.stamp) l
    ), latest AS (
        SELECT orchestration, max(generation) AS generation FROM lv GROUP BY orchestration
    ), stamped AS (
        SELECT lv.node_id, array_agg(lv.generation ORDER BY lv.level) AS gens,
               bool_or(lv.generation < latest.generation) AS superseded
        FROM lv JOIN latest USING (orchestration) GROUP BY lv.node_id
    ), info AS MATERIALIZED (
        SELECT g.*, s.gens, coalesce(s.superseded, false) AS superseded,
               g.status IN ('completed', 'failed') AS terminal
        FROM g LEFT JOIN stamped s USING (node_id)
    ), walk(node_id, term_id, best_id, best_gens) AS (
        SELECT i.node_id, NULL::text, NULL::text, NULL::bigint[] FROM info i WHERE i.is_root
      UNION ALL
        SELECT c.child,
               -- an undo that started (planner/compensate.py) runs after its instance's failure:
               -- nothing above it makes it skipped
               CASE WHEN p.node_type = 'COMPENSATED' AND c.child = p.right_child
                         AND c.child IN (SELECT u.node_id FROM info u WHERE u.status <> 'pending')
                    THEN NULL
                    WHEN p.terminal AND NOT p.superseded THEN p.node_id ELSE w.term_id END,
               CASE WHEN p.gens > w.best_gens OR w.best_gens IS NULL AND p.gens IS NOT NULL
                    THEN p.node_id ELSE w.best_id END,
               CASE WHEN p.gens > w.best_gens OR w.best_gens IS NULL AND p.gens IS NOT NULL
                    THEN p.gens ELSE w.best_gens END
        FROM walk w
        JOIN info p ON p.node_id = w.node_id
        CROSS JOIN LATERAL unnest(ARRAY[p.left_child, p.right_child, p.cond_child]
                                  || p.extra_children) AS c(child)
        WHERE c.child IS NOT NULL
    )
    SELECT i.node_id,
           CASE WHEN w.node_id IS NULL THEN i.status
                WHEN i.terminal AND NOT i.superseded THEN i.status
                WHEN w.term_id IS NOT NULL THEN 'skipped'
                WHEN i.terminal THEN 'pending'
                WHEN i.status = 'running' THEN 'running'
                ELSE 'pending' END,
           CASE WHEN w.node_id IS NULL OR i.terminal AND NOT i.superseded THEN NULL
                WHEN w.term_id IS NOT NULL THEN w.term_id
                WHEN i.terminal THEN w.best_id END
    FROM info i LEFT JOIN walk w USING (node_id)
$$;

-- =======================================================================================
-- df.instance_nodes (§3.6)
-- =======================================================================================

CREATE OR REPLACE FUNCTION df.instance_nodes(instance_id_param text)
RETURNS TABLE (node_id text, node_type text, query text, result_name text, left_node text,
               right_node text, status text, result text, status_details text,
               inferred_status text, inferred_status_from_ancestor_id text,
               updated_at timestamptz)
LANGUAGE sql STABLE STRICT
AS $$
    SELECT n.id::text, n.node_type, n.query, n.result_name, n.left_node::text,
           n.right_node::text, n.status, n.result::text, n.status_details::text,
           s.inferred_status, s.inferred_status_from_ancestor_id, n.updated_at
    FROM df.nodes n
    LEFT JOIN df._inferred_statuses(instance_id_param) s ON s.node_id = n.id
    WHERE n.instance_id = instance_id_param
$$;

-- The legacy overload: a plain projection, execution_id always 1, the count ignored.
CREATE OR REPLACE FUNCTION df.instance_nodes(instance_id_param text, _last_n_executions integer)
RETURNS TABLE (execution_id bigint, node_id text, node_type text, query text,
               result_name text, left_node text, right_node text, status text, result text,
               updated_at timestamptz)
LANGUAGE sql STABLE STRICT
AS $$
    SELECT 1::bigint, n.id::text, n.node_type, n.query, n.result_name, n.left_node::text,
           n.right_node::text, n.status, n.result::text, n.updated_at
    FROM df.nodes n
    WHERE n.instance_id = instance_id_param
$$;

-- An execution's output as stored, or rebuilt from its instance's root node (`root`).
CREATE OR REPLACE FUNCTION df._output_text(e df._executions, root text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN e.output IS NULL AND e.output_columns IS NOT NULL
                THEN df._rows_text((SELECT n.result FROM df.nodes n
                                    WHERE n.instance_id = e.instance_id AND n.id = root),
                                   e.output_columns)
                ELSE e.output END
$$;

-- One row per instance with its latest execution: what df.list_instances pages through.
CREATE OR REPLACE VIEW df._instance_overview WITH (security_invoker = true) AS
SELECT i.id, i.label, i.status, i.created_at, i.completed_at,
       e.execution_id AS execution_count, e.output
FROM df.instances i
JOIN LATERAL (
    SELECT x.execution_id, df._output_text(x, i.root_node) AS output FROM df._executions x
    WHERE x.instance_id = i.id ORDER BY x.execution_id DESC LIMIT 1
) e ON true;
