-- pgdurable catalog: df.explain (§3.6): a dry run of a graph (checked by df.start's walk,
-- graph.sql), of a DSL expression, or a live instance, drawn as a tree.

-- pg_durable's byte-based truncation: longer than max_bytes -> the first keep_bytes (cut
-- back to a character boundary) followed by '...'.
CREATE OR REPLACE FUNCTION df._explain_truncate(value text, max_bytes integer, keep_bytes integer)
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

-- The one-line label of a node, with its capture name (never shown on THEN nodes).
CREATE OR REPLACE FUNCTION df._explain_label(node jsonb) RETURNS text
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
                   THEN CASE WHEN node ? 'cond' THEN 'LOOP (while' ELSE 'LOOP (infinite' END
                        || CASE WHEN c.config -> 'continue_on_failure' = 'true'::jsonb
                                THEN ', continue on failure)' ELSE ')' END
               WHEN 'BREAK' THEN 'BREAK' || coalesce(
                   ' ''' || df._explain_truncate(c.config ->> 'break_value', 20, 17) || '''', '')
               WHEN 'JOIN'
                   THEN format('JOIN (%s)', 2 + coalesce(jsonb_array_length(node -> 'extras'), 0))
               WHEN 'RETRY' THEN format('RETRY (%s attempts, backoff %ss to %ss)',
                                        c.config ->> 'max_attempts',
                                        c.config ->> 'initial_backoff', c.config ->> 'max_backoff')
               WHEN 'TIMEOUT' THEN format('TIMEOUT %ss', c.config ->> 'seconds')
               WHEN 'COMPENSATED' THEN 'WITH UNDO'
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
                                                   'SIGNAL', 'BREAK', 'LOOP', 'RETRY',
                                                   'TIMEOUT')
                          THEN df._inspect_jsonb(q.query) END AS config) cfg
    ) c
$$;

-- The live-mode marker of an inferred status (nothing in dry-run mode).
CREATE OR REPLACE FUNCTION df._explain_marker(status text) RETURNS text
LANGUAGE sql IMMUTABLE
RETURN coalesce((jsonb_build_object('completed', ' ✓', 'failed', ' ✗', 'running', ' ⏳',
                                    'pending', ' ○', 'skipped', ' ⊘') ->> status), '');

-- The child sections of a node in display order: IF and LOOP from a registry, JOIN/RACE
-- one per branch. IF/LOOP children are always drawn as last children.
CREATE OR REPLACE FUNCTION df._explain_sections(node jsonb)
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
                 ('LOOP', 2, '? while:', 'cond'), ('RETRY', 1, '↻ retried:', 'left'),
                 ('TIMEOUT', 1, '⏱ within:', 'left'), ('COMPENSATED', 1, '→ forward:', 'left'),
                 ('COMPENSATED', 2, '↶ undo:', 'right')) AS s(node_type, ord, header, field)
    WHERE s.node_type = node ->> 'type' AND node ? s.field
  UNION ALL
    SELECT b.ord, format('║ branch %s:', b.ord), b.key,
           CASE WHEN b.ord = (SELECT max(ord) FROM branches) THEN '└─' ELSE '├─' END
    FROM branches b
$$;

-- The unpadded lines of the tree rooted at `root`. Iterative (an explicit stack) so that
-- deep graphs do not recurse. THEN chains become one sequence: the first element takes the
-- incoming connector, the others '→ ', and their children are indented by prefix + 4.
CREATE OR REPLACE FUNCTION df._explain_tree(plan jsonb, root text) RETURNS text[]
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
                        || coalesce(' (' || (node ->> 'attempt') || ')', '')
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
CREATE OR REPLACE FUNCTION df._explain_pad(lines text[]) RETURNS text
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
CREATE OR REPLACE FUNCTION df._explain_plan(root jsonb) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    walk record;
    plan jsonb;
BEGIN
    BEGIN
        walk := df._graph_walk(root);  -- df.start's walk: the same checks and errors
    EXCEPTION WHEN invalid_parameter_value OR program_limit_exceeded
                   OR statement_too_complex THEN
        RETURN SQLERRM;
    END;
    -- The plan's keys are the nodes' pre-order positions (the root is '1').
    WITH children AS (
        SELECT c.parent,
               min(c.position) FILTER (WHERE c.slot = 1) AS left_key,
               min(c.position) FILTER (WHERE c.slot = 2) AS right_key,
               min(c.position) FILTER (WHERE c.slot = 3) AS cond_key,
               jsonb_agg(c.position::text ORDER BY c.slot) FILTER (WHERE c.slot > 3) AS extras
        FROM unnest(walk.parents, walk.slots) WITH ORDINALITY AS c(parent, slot, position)
        GROUP BY c.parent
    )
    SELECT jsonb_object_agg(n.position, jsonb_strip_nulls(jsonb_build_object(
               'type', n.node ->> 'node_type', 'query', n.node ->> 'query',
               'name', n.node ->> 'result_name', 'left', c.left_key::text,
               'right', c.right_key::text, 'cond', c.cond_key::text, 'extras', c.extras)))
    INTO plan
    FROM unnest(walk.nodes) WITH ORDINALITY AS n(node, position)
    LEFT JOIN children c ON c.parent = n.position;
    RETURN df._explain_pad(df._explain_tree(plan, '1'));
END;
$$;

-- A text as a Durofut (pg_durable's serde model), or the reason why not. Only the root's own
-- fields are deserialized here; the graph walk deserializes its children (as df.start).
CREATE OR REPLACE FUNCTION df._explain_parse(input text, OUT graph jsonb, OUT problem text)
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
    problem := df._durofut_level_problem(parsed);
    IF problem IS NULL THEN
        graph := parsed;
    END IF;
END;
$$;

-- Mode 4: evaluate `SELECT <input>` as the caller and explain the Durofut it returns.
CREATE OR REPLACE FUNCTION df._explain_expression(expression text) RETURNS text
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
CREATE OR REPLACE FUNCTION df._explain_live(p_instance text) RETURNS text
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
               'extras', to_jsonb(nullif(g.extra_children, '{}')), 'status', s.inferred_status,
               -- a step retried under its failure policy: the attempt it is at
               'attempt', CASE WHEN s.inferred_status = 'running' THEN
                                   'attempt ' || (n.status_details ->> 'attempt') || '/'
                                   || (n.status_details ->> 'max_attempts') END)))
    INTO plan
    FROM df._inspect_graph(p_instance) g
    LEFT JOIN df._inferred_statuses(p_instance) s USING (node_id)
    LEFT JOIN df.nodes n ON n.instance_id = p_instance AND n.id = g.node_id;
    IF plan IS NULL THEN
        RETURN format('No nodes found for instance ''%s''', p_instance);
    END IF;
    SELECT e.status, df._output_text(e, inst.root) AS output INTO run FROM df._executions e
    WHERE e.instance_id = p_instance ORDER BY e.execution_id DESC LIMIT 1;
    shown := CASE WHEN inst.status = 'paused' THEN 'Paused'  -- df.pause: its execution runs on
                  WHEN inst.status = 'compensated' THEN 'Compensated'  -- its execution Failed
                  ELSE coalesce(run.status, inst.status) END;
    RETURN 'Instance: ' || p_instance || coalesce(' (' || inst.label || ')', '')
        || E'\nStatus:   ' || CASE
               WHEN lower(shown) IN ('completed', 'continuedasnew') THEN '✓'
               WHEN lower(shown) IN ('failed', 'canceled', 'cancelled') THEN '✗'
               WHEN lower(shown) = 'running' THEN '⏳'
               WHEN shown = 'Paused' THEN '⏸'
               WHEN shown = 'Compensated' THEN '↶'
               ELSE '○' END || ' ' || shown
        || coalesce(E'\nOutput:   ' || df._explain_truncate(run.output, 60, 57), '')
        || E'\n\n' || df._explain_pad(df._explain_tree(plan, inst.root));
END;
$$;

-- §7: the four-way mode selection on the trimmed input.
CREATE OR REPLACE FUNCTION df.explain(input text) RETURNS text
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
