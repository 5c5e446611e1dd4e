-- pgdurable catalog, version 6: inspection (spec §3.6, §5.5, §7): the read-time inferred
-- status of every node, df.instance_nodes (both overloads) and df.explain (dry-run of a
-- graph, or a live instance). Everything is SECURITY INVOKER and reads through row-level
-- security, so users only ever inspect their own instances.

-- =======================================================================================
-- Small helpers
-- =======================================================================================

-- `value` as jsonb, or NULL when it is not JSON (node configs written by hand may not be).
-- Configs are JSON objects, so other text skips the exception block (a subtransaction).
CREATE FUNCTION df._inspect_jsonb(value text) RETURNS jsonb
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

-- pg_durable's byte-based truncation: longer than max_bytes -> the first keep_bytes (cut
-- back to a character boundary) followed by '...'.
CREATE FUNCTION df._explain_truncate(value text, max_bytes integer, keep_bytes integer)
RETURNS text LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    n integer := keep_bytes;
BEGIN
    IF octet_length(value) <= max_bytes THEN
        RETURN value;
    END IF;
    WHILE octet_length(left(value, n)) > keep_bytes LOOP
        n := n - 1;
    END LOOP;
    RETURN left(value, n) || '...';
END;
$$;

-- =======================================================================================
-- The stored graph of an instance, as a tree
-- =======================================================================================

-- Every node row of an instance with its children by role (§5.2). A child is kept only if
-- it exists, is not the root and has exactly one parent, so that hand-written rows forming
-- a cycle or a DAG still give a finite tree (the rest counts as unreachable).
CREATE FUNCTION df._inspect_graph(p_instance text)
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
CREATE FUNCTION df._stamp_levels(stamp text)
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
CREATE FUNCTION df._inferred_statuses(instance_id text)
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
               CASE WHEN p.terminal AND NOT p.superseded THEN p.node_id ELSE w.term_id END,
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

CREATE FUNCTION df.instance_nodes(instance_id_param text)
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
CREATE FUNCTION df.instance_nodes(instance_id_param text, _last_n_executions integer)
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

-- =======================================================================================
-- df.explain rendering (§7)
-- =======================================================================================
-- Both modes render a "plan map": a jsonb object key -> {type, query, name, left, right,
-- cond, extras[], status}, where children are keys of the same map. Dry-run keys are the
-- graph paths of df._graph_walk; live keys are node ids, with the inferred status.

-- One pending piece of output of the renderer's explicit stack: a node to render, or a
-- ready-made section header line (connector NULL, the line in prefix).
CREATE TYPE df._explain_item AS (key text, prefix text, connector text, child_prefix text);

-- The one-line label of a node, with its capture name (never shown on THEN nodes).
CREATE FUNCTION df._explain_label(node jsonb) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT coalesce(CASE node ->> 'type'
               WHEN 'SQL' THEN 'SQL: ' || df._explain_truncate(q.query, 50, 47)
               WHEN 'SLEEP' THEN 'SLEEP ' || q.query || 's'
               WHEN 'WAIT_SCHEDULE' THEN format('WAIT ''%s''', c.config ->> 'cron_expr')
               WHEN 'HTTP' THEN format('HTTP %s %s', c.config ->> 'method', c.url)
               WHEN 'HTTP_MULTIPART'
                   THEN format('HTTP_MULTIPART %s %s', c.config ->> 'method', c.url)
               WHEN 'SIGNAL' THEN format('SIGNAL ''%s''', c.config ->> 'signal_name')
                   || coalesce(' (' || (c.config ->> 'timeout_seconds') || 's)', '')
               WHEN 'LOOP'
                   THEN CASE WHEN node ? 'cond' THEN 'LOOP (while)' ELSE 'LOOP (infinite)' END
               WHEN 'BREAK' THEN 'BREAK' || coalesce(
                   ' ''' || df._explain_truncate(c.config ->> 'break_value', 20, 17) || '''', '')
               WHEN 'JOIN'
                   THEN format('JOIN (%s)', 2 + coalesce(jsonb_array_length(node -> 'extras'), 0))
           END, node ->> 'type')
           || CASE WHEN node ->> 'type' <> 'THEN' AND node ? 'name'
                   THEN format(' |=> ''%s''', node ->> 'name') ELSE '' END
    FROM (SELECT node ->> 'query' AS query) q
    CROSS JOIN LATERAL (
        SELECT cfg.config,
               CASE WHEN char_length(cfg.config ->> 'url') > 40
                    THEN left(cfg.config ->> 'url', 37) || '...'
                    ELSE cfg.config ->> 'url' END AS url
        FROM (SELECT CASE WHEN node ->> 'type' IN ('WAIT_SCHEDULE', 'HTTP', 'HTTP_MULTIPART',
                                                   'SIGNAL', 'BREAK')
                          THEN df._inspect_jsonb(q.query) END AS config) cfg
    ) c
$$;

-- The live-mode marker of an inferred status (nothing in dry-run mode).
CREATE FUNCTION df._explain_marker(status text) RETURNS text
LANGUAGE sql IMMUTABLE
RETURN coalesce((jsonb_build_object('completed', ' ✓', 'failed', ' ✗', 'running', ' ⏳',
                                    'pending', ' ○', 'skipped', ' ⊘') ->> status), '');

-- The child sections of a node in display order: IF and LOOP from a registry, JOIN/RACE
-- one per branch. IF/LOOP children are always drawn as last children.
CREATE FUNCTION df._explain_sections(node jsonb)
RETURNS TABLE (ord bigint, header text, child text, connector text)
LANGUAGE sql IMMUTABLE
AS $$
    WITH branches AS (
        SELECT b.ord, b.key
        FROM unnest(ARRAY[node ->> 'left', node ->> 'right']
                    || ARRAY(SELECT jsonb_array_elements_text(coalesce(node -> 'extras', '[]'))))
             WITH ORDINALITY AS b(key, ord)
        WHERE node ->> 'type' IN ('JOIN', 'RACE') AND b.key IS NOT NULL
    )
    SELECT s.ord, s.header, node ->> s.field, '└─'
    FROM (VALUES ('IF', 1, '? condition:', 'cond'), ('IF', 2, '✓ then:', 'left'),
                 ('IF', 3, '✗ else:', 'right'), ('LOOP', 1, '↻ body:', 'left'),
                 ('LOOP', 2, '? while:', 'cond')) AS s(node_type, ord, header, field)
    WHERE s.node_type = node ->> 'type' AND node ? s.field
  UNION ALL
    SELECT b.ord, format('║ branch %s:', b.ord), b.key,
           CASE WHEN b.ord = (SELECT max(ord) FROM branches) THEN '└─' ELSE '├─' END
    FROM branches b
$$;

-- The unpadded lines of the tree rooted at `root`. Iterative (an explicit stack) so that
-- deep graphs do not recurse. THEN chains become one sequence: the first element takes the
-- incoming connector, the others '→ ', and their children are indented by prefix + 4.
CREATE FUNCTION df._explain_tree(plan jsonb, root text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    stack df._explain_item[] := ARRAY[ROW(root, '', '', '    ')::df._explain_item];
    top integer := 1;
    item df._explain_item;
    node jsonb;
    s record;
    lines text[] := '{}';
    n integer := 0;
BEGIN
    WHILE top > 0 LOOP
        item := stack[top];
        top := top - 1;
        node := plan -> item.key;
        IF item.connector IS NULL THEN
            n := n + 1;
            lines[n] := item.prefix;
        ELSIF node ->> 'type' = 'THEN' THEN
            stack[top + 1] := ROW(node ->> 'right', item.prefix, '→ ', item.prefix || '    ');
            stack[top + 2] := ROW(node ->> 'left', item.prefix, item.connector,
                                  item.prefix || '    ');
            top := top + 2;
        ELSIF node IS NOT NULL THEN
            n := n + 1;
            lines[n] := item.prefix || item.connector || df._explain_label(node)
                        || df._explain_marker(node ->> 'status');
            FOR s IN SELECT * FROM df._explain_sections(node) ORDER BY ord DESC LOOP
                stack[top + 1] := ROW(s.child, item.child_prefix || '  ', s.connector,
                                      item.child_prefix || '  '
                                      || CASE s.connector WHEN '└─' THEN '    ' ELSE '│   ' END);
                stack[top + 2] := ROW(NULL, item.child_prefix || s.header, NULL, NULL);
                top := top + 2;
            END LOOP;
        END IF;
    END LOOP;
    RETURN lines;
END;
$$;

-- Every line right-padded to the longest line + 4 characters; no trailing newline.
CREATE FUNCTION df._explain_pad(lines text[]) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT coalesce(string_agg(rpad(l.line, w.width, ' '), E'\n' ORDER BY l.ord), '')
    FROM unnest(lines) WITH ORDINALITY AS l(line, ord),
         (SELECT max(char_length(x)) + 4 AS width FROM unnest(lines) AS x) w
$$;

-- =======================================================================================
-- df.explain modes
-- =======================================================================================

-- Dry-run of a parsed Durofut: the validation error text, or the padded tree.
CREATE FUNCTION df._explain_plan(root jsonb) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    plan jsonb;
BEGIN
    BEGIN
        PERFORM df._validate_graph(root);
    EXCEPTION WHEN invalid_parameter_value OR program_limit_exceeded
                   OR statement_too_complex THEN
        RETURN SQLERRM;
    END;
    SELECT jsonb_object_agg(w.path, jsonb_strip_nulls(jsonb_build_object(
               'type', w.node ->> 'node_type', 'query', w.node ->> 'query',
               'name', w.node ->> 'result_name',
               'left', CASE WHEN w.node ? 'left_node' THEN w.path || '.left' END,
               'right', CASE WHEN w.node ? 'right_node' THEN w.path || '.right' END,
               'cond', CASE WHEN w.node ? 'condition_node' THEN w.path || '.condition_node' END,
               'extras', (SELECT jsonb_agg(w.path || '.extra_nodes[' || (i - 1) || ']' ORDER BY i)
                          FROM generate_series(1, jsonb_array_length(w.node -> 'extra_nodes')) i))))
    INTO plan
    FROM df._graph_walk(root) w;
    RETURN df._explain_pad(df._explain_tree(plan, 'root'));
END;
$$;

-- A text as a Durofut (pg_durable's serde model, df._durofut_node), or the reason why not.
CREATE FUNCTION df._explain_parse(input text, OUT graph jsonb, OUT problem text)
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    parsed jsonb;
BEGIN
    BEGIN
        parsed := input::jsonb;
    EXCEPTION WHEN data_exception THEN
        problem := SQLERRM;
        RETURN;
    END;
    IF jsonb_typeof(parsed) <> 'object' THEN
        problem := format('invalid type: %s, expected struct Durofut',
                          df._serde_unexpected(parsed));
        RETURN;
    END IF;
    BEGIN
        graph := df._durofut_node(parsed);
    EXCEPTION WHEN invalid_text_representation THEN
        problem := regexp_replace(SQLERRM,
                                  '^Invalid Durofut JSON: failed to deserialize workflow step: ', '');
    END;
END;
$$;

-- Mode 4: evaluate `SELECT <input>` as the caller and explain the Durofut it returns.
CREATE FUNCTION df._explain_expression(expression text) RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    value text;
    parsed record;
BEGIN
    BEGIN
        EXECUTE 'SELECT ' || expression INTO value;
    EXCEPTION WHEN others THEN
        RETURN 'Failed to evaluate expression: ' || SQLERRM;
    END;
    IF value IS NULL THEN
        RETURN 'Expression returned NULL';
    END IF;
    parsed := df._explain_parse(value);
    IF parsed.problem IS NOT NULL THEN
        RETURN 'Failed to parse Durofut JSON: ' || parsed.problem;
    END IF;
    RETURN df._explain_plan(parsed.graph);
END;
$$;

-- Live mode: header from df.instances and the latest execution, then the stored graph with
-- each node's inferred-status marker.
CREATE FUNCTION df._explain_live(p_instance text) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    inst record;
    run record;
    plan jsonb;
    shown text;
BEGIN
    SELECT i.label, i.status, i.root_node::text AS root INTO inst
    FROM df.instances i WHERE i.id = p_instance;
    IF NOT FOUND THEN
        RETURN format('Instance ''%s'' not found', p_instance);
    END IF;
    SELECT jsonb_object_agg(g.node_id, jsonb_strip_nulls(jsonb_build_object(
               'type', g.node_type, 'query', g.query, 'name', g.result_name,
               'left', g.left_child, 'right', g.right_child, 'cond', g.cond_child,
               'extras', to_jsonb(nullif(g.extra_children, '{}')), 'status', s.inferred_status)))
    INTO plan
    FROM df._inspect_graph(p_instance) g
    LEFT JOIN df._inferred_statuses(p_instance) s USING (node_id);
    IF plan IS NULL THEN
        RETURN format('No nodes found for instance ''%s''', p_instance);
    END IF;
    SELECT e.status, e.output INTO run FROM df._executions e
    WHERE e.instance_id = p_instance ORDER BY e.execution_id DESC LIMIT 1;
    shown := coalesce(run.status, inst.status);
    RETURN 'Instance: ' || p_instance || coalesce(' (' || inst.label || ')', '')
        || E'\nStatus:   ' || CASE
               WHEN lower(shown) IN ('completed', 'continuedasnew') THEN '✓'
               WHEN lower(shown) IN ('failed', 'canceled', 'cancelled') THEN '✗'
               WHEN lower(shown) = 'running' THEN '⏳'
               ELSE '○' END || ' ' || shown
        || coalesce(E'\nOutput:   ' || df._explain_truncate(run.output, 60, 57), '')
        || E'\n\n' || df._explain_pad(df._explain_tree(plan, inst.root));
END;
$$;

-- §7: the four-way mode selection on the trimmed input.
CREATE FUNCTION df.explain(input text) RETURNS text
LANGUAGE plpgsql VOLATILE STRICT
AS $$
DECLARE
    trimmed text := btrim(input, E' \t\n\r\f\v');
    parsed record;
BEGIN
    IF trimmed ~ '^[0-9A-Fa-f]{8}$' THEN
        RETURN df._explain_live(trimmed);
    END IF;
    parsed := df._explain_parse(trimmed);
    IF parsed.graph IS NOT NULL THEN
        RETURN df._explain_plan(parsed.graph);
    END IF;
    IF trimmed ~ '(~>|\|=>|\?>|!>|@>|df\.)' THEN
        RETURN df._explain_expression(trimmed);
    END IF;
    IF upper(trimmed) ~ ('^(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|CALL|DO|'
                         'TRUNCATE|GRANT|REVOKE|EXPLAIN) ')
       OR upper(trimmed) ~ '^(SELECT|INSERT|UPDATE|DELETE|WITH)\n' THEN
        RETURN df._explain_plan(jsonb_build_object('node_type', 'SQL', 'query', trimmed));
    END IF;
    RETURN 'Cannot explain input: not a valid Durofut JSON, instance ID, SQL statement, or '
        'DSL expression.'
        || E'\nHint: DSL expressions use df.*() functions and operators like ~>, |=>, &, |.';
END;
$$;
