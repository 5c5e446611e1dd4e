-- pgdurable catalog: the graph walk df.start and df.explain share, and the checks of each
-- node (pg_durable's graph validation, §3.3).

-- The one walk of a Durofut graph, for df.start and df.explain: its nodes in pre-order (the
-- root first), each with the pre-order position of its parent (0: none) and which child of
-- it the node is (1 left, 2 right, 3 condition, 4 + i extra_nodes[i]). Checked as pg_durable
-- checks a graph, in this order: depth (the root is at depth 0; deeper than 256 is refused),
-- then size, then the first node in pre-order with a problem; the error names the first node
-- in pre-order that is too deep, or has the problem, by its path (df._graph_path). Each node
-- is checked as it is visited. Unless the whole tree is a builder's clean output, each node
-- is also deserialized as it is visited, one level at a time, as pg_durable 0.2.6 does: one
-- that does not deserialize is a problem ('failed to deserialize Durofut child: <serde
-- error>') whose own children are not visited; the others are returned normalized.
CREATE OR REPLACE FUNCTION df._graph_walk(root jsonb, OUT nodes jsonb[], OUT parents integer[],
                               OUT slots integer[])
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    -- the stack of nodes still to visit (sp: its top; element assignment keeps it O(1))
    stack_nodes jsonb[] := ARRAY[root];
    stack_depths integer[] := ARRAY[0];
    stack_parents integer[] := ARRAY[0];
    stack_slots integer[] := ARRAY[0];
    sp integer := 1;
    extras jsonb;
    too_deep_at integer := 0;
    depth integer;
    n integer := 0;
    node jsonb;
    problem text;
    problem_at integer := 0;
    clean boolean := df._durofut_is_clean(root);
    serde_problem text;
BEGIN
    nodes := '{}';
    parents := '{}';
    slots := '{}';
    WHILE sp > 0 LOOP
        node := stack_nodes[sp];
        depth := stack_depths[sp];
        n := n + 1;
        parents[n] := stack_parents[sp];
        slots[n] := stack_slots[sp];
        sp := sp - 1;
        IF depth > 256 AND too_deep_at = 0 THEN
            too_deep_at := n;
        END IF;
        IF NOT clean THEN
            serde_problem := df._durofut_level_problem(node);
            IF serde_problem IS NOT NULL THEN
                nodes[n] := node;
                IF problem_at = 0 THEN
                    problem := 'failed to deserialize Durofut child: ' || serde_problem;
                    problem_at := n;
                END IF;
                CONTINUE;  -- what is in it cannot be read
            END IF;
            node := df._durofut_level(node);
        END IF;
        nodes[n] := node;
        IF problem_at = 0 THEN
            problem := df._node_problem(node);
            problem_at := CASE WHEN problem IS NULL THEN 0 ELSE n END;
        END IF;
        -- pushed in reverse, to come off in order: left, right, condition, extra_nodes[0..]
        CONTINUE WHEN depth > 256  -- one level past the limit is enough to report it
            OR NOT node ?| '{left_node,right_node,condition_node,extra_nodes}'::text[];
        IF jsonb_typeof(node -> 'extra_nodes') = 'array' THEN
            extras := node -> 'extra_nodes';
            FOR e IN REVERSE jsonb_array_length(extras) - 1 .. 0 LOOP
                IF jsonb_typeof(extras -> e) = 'object' THEN
                    sp := sp + 1;
                    stack_nodes[sp] := extras -> e;
                    stack_depths[sp] := depth + 1;
                    stack_parents[sp] := n;
                    stack_slots[sp] := 4 + e;
                END IF;
            END LOOP;
        END IF;
        FOR slot IN REVERSE 3 .. 1 LOOP
            CONTINUE WHEN jsonb_typeof(node -> (CASE slot WHEN 1 THEN 'left_node'
                                                          WHEN 2 THEN 'right_node'
                                                          ELSE 'condition_node' END))
                          IS DISTINCT FROM 'object';
            sp := sp + 1;
            stack_nodes[sp] := node -> (CASE slot WHEN 1 THEN 'left_node'
                                                  WHEN 2 THEN 'right_node'
                                                  ELSE 'condition_node' END);
            stack_depths[sp] := depth + 1;
            stack_parents[sp] := n;
            stack_slots[sp] := slot;
        END LOOP;
    END LOOP;

    IF too_deep_at > 0 THEN
        RAISE EXCEPTION 'Invalid durable function graph: root%: Graph exceeds maximum nesting depth of 256. Simplify the workflow or break it into multiple instances.',
                        df._graph_path(parents, slots, too_deep_at)
            USING ERRCODE = '54001';
    END IF;
    IF n > 10000 THEN
        RAISE EXCEPTION 'Invalid durable function graph: root: Workflow exceeds maximum node count of 10000. Simplify the workflow or break it into multiple instances.'
            USING ERRCODE = '54000';
    END IF;
    IF problem_at > 0 THEN
        RAISE EXCEPTION 'Invalid durable function graph: root%: %',
                        df._graph_path(parents, slots, problem_at), problem
            USING ERRCODE = '22023';
    END IF;
END
$$;

-- The path of the walk's node `at` below the root ('' for the root, '.left.right',
-- '.extra_nodes[0]', ...), spelt from the parents and slots df._graph_walk returns.
CREATE OR REPLACE FUNCTION df._graph_path(parents integer[], slots integer[], at integer)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    path text := '';
BEGIN
    WHILE at > 1 LOOP
        path := CASE slots[at] WHEN 1 THEN '.left' WHEN 2 THEN '.right'
                               WHEN 3 THEN '.condition_node'
                               ELSE '.extra_nodes[' || slots[at] - 4 || ']'
                END || path;
        at := parents[at];
    END LOOP;
    RETURN path;
END
$$;

-- The flattened graph as parallel arrays in pre-order (the root first), with fresh random
-- ids (§5.1), unique within the graph. The ids and child links are filled in one pass from
-- the last node back, so that a node's children are done before the node itself.
CREATE OR REPLACE FUNCTION df._graph_rows(root jsonb, OUT ids text[], OUT types text[],
                               OUT queries text[], OUT names text[],
                               OUT lefts text[], OUT rights text[])
LANGUAGE plpgsql AS $$
DECLARE
    walk record := df._graph_walk(root);
    nodes jsonb[] := walk.nodes;
    parents integer[] := walk.parents;
    slots integer[] := walk.slots;
    n integer := cardinality(walk.nodes);
    node jsonb;
    kind text;
    parent integer;
    extra_ids text[];
    condition_ids text[];
BEGIN
    FOR attempt IN 1 .. 10 LOOP  -- re-roll on an in-graph collision
        SELECT array_agg(right(gen_random_uuid()::text, 8)) INTO ids FROM generate_series(1, n);
        EXIT WHEN n = 1 OR (SELECT count(DISTINCT v) FROM unnest(ids) AS v) = n;
    END LOOP;
    lefts := array_fill(NULL::text, ARRAY[n]);
    rights := lefts;
    condition_ids := lefts;
    extra_ids := lefts;
    types := lefts;
    names := lefts;
    queries := lefts;
    FOR i IN REVERSE n .. 1 LOOP  -- a node's children come after it in pre-order
        node := nodes[i];
        kind := node ->> 'node_type';
        types[i] := kind;
        names[i] := node ->> 'result_name';
        queries[i] := CASE
            WHEN kind IN ('THEN', 'RACE', 'COMPENSATED') THEN NULL
            WHEN kind = 'LOOP' AND df._loop_continues_on_failure(node ->> 'query')
                THEN CASE WHEN node ? 'condition_node'
                          THEN json_build_object('condition_node', condition_ids[i],
                                                 'continue_on_failure', true)
                          ELSE json_build_object('continue_on_failure', true) END::text
            WHEN kind IN ('IF', 'LOOP') AND node ? 'condition_node'
                THEN json_build_object('condition_node', condition_ids[i])::text
            WHEN kind = 'LOOP' THEN NULL
            WHEN kind = 'JOIN' AND jsonb_array_length(coalesce(node -> 'extra_nodes', '[]')) > 0
                THEN '{"extra_nodes":[' || extra_ids[i] || ']}'
            WHEN kind = 'JOIN' THEN NULL
            ELSE node ->> 'query'
        END;
        CONTINUE WHEN i = 1;
        parent := parents[i];
        CASE slots[i]
            WHEN 1 THEN lefts[parent] := ids[i];
            WHEN 2 THEN rights[parent] := ids[i];
            WHEN 3 THEN condition_ids[parent] := ids[i];
            ELSE extra_ids[parent] := to_json(ids[i])::text
                                      || coalesce(',' || extra_ids[parent], '');
        END CASE;
    END LOOP;
END
$$;

-- Whether a LOOP's query (its JSON config) asks to go on after a failed iteration.
CREATE OR REPLACE FUNCTION df._loop_continues_on_failure(query text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(df._inspect_jsonb(query) -> 'continue_on_failure' = 'true'::jsonb, false)
$$;

-- What is wrong with one node (not its children), or NULL; a leaf's configuration is
-- checked too (df._leaf_config_problem).
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
    -- An IF's query is its config (with a condition_node: beside it), and so is the query of
    -- a LOOP with a condition_node or a JOIN with extra_nodes: a JSON object (pg_durable 0.2.6).
    IF t IN ('IF', 'JOIN', 'LOOP') AND jsonb_typeof(node -> 'query') = 'string' THEN
        BEGIN
            config := (node ->> 'query')::jsonb;
        EXCEPTION WHEN others THEN
            IF t = 'IF' OR (t = 'LOOP' AND has_condition) OR (t = 'JOIN' AND extras > 0) THEN
                RETURN format('query in %s must be valid JSON config: %s', t, SQLERRM);
            END IF;
        END;
        IF t = 'IF' AND config ? 'condition_node' THEN
            RETURN 'condition_node in IF must be a first-class Durofut field, not embedded in query';
        END IF;
        IF t = 'JOIN' AND config ? 'extra_nodes' THEN
            RETURN 'extra_nodes in JOIN must be a first-class Durofut field, not embedded in query';
        END IF;
        IF (t = 'IF' OR (t = 'LOOP' AND has_condition) OR (t = 'JOIN' AND extras > 0))
           AND jsonb_typeof(config) IS DISTINCT FROM 'object' THEN
            RETURN format('query in %s must be a JSON config object', t);
        END IF;
    END IF;
    problem := CASE
        WHEN t IN ('THEN', 'JOIN', 'RACE') AND NOT (has_left AND has_right)
            THEN format('%s node requires left_node and right_node', t)
        WHEN t = 'COMPENSATED' AND NOT (has_left AND has_right)
            THEN 'COMPENSATED node requires left_node (the forward) and right_node (the undo)'
        WHEN t = 'IF' AND NOT (has_left AND has_right)
            THEN 'IF node requires left_node (then) and right_node (else)'
        WHEN t = 'IF' AND NOT has_condition AND jsonb_typeof(node -> 'query') IS DISTINCT FROM 'string'
            THEN 'IF node requires a condition_node or a condition config in query'
        WHEN t = 'LOOP' AND NOT has_left THEN 'LOOP node requires left_node (the body)'
        WHEN t = 'LOOP' AND has_right THEN 'right_node is not valid for LOOP nodes'
        WHEN t IN ('RETRY', 'TIMEOUT') AND NOT has_left
            THEN format('%s node requires left_node (the subgraph)', t)
        WHEN t IN ('RETRY', 'TIMEOUT') AND has_right
            THEN format('right_node is not valid for %s nodes', t)
        WHEN t NOT IN ('THEN', 'JOIN', 'RACE', 'IF', 'LOOP', 'RETRY', 'TIMEOUT', 'COMPENSATED')
             AND (has_left OR has_right)
            THEN format('%s nodes cannot have children', t)
        WHEN t NOT IN ('THEN', 'JOIN', 'RACE', 'IF', 'LOOP', 'COMPENSATED')
             AND jsonb_typeof(node -> 'query') IS DISTINCT FROM 'string'
            THEN format('%s node requires a query', t)
    END;
    RETURN coalesce(problem, df._leaf_config_problem(t, node ->> 'query'));
END
$$;

-- What is wrong with a leaf node's configuration, or NULL: what the planner reads from it
-- must be there, of the right kind and in range (a due time PostgreSQL can store).
CREATE OR REPLACE FUNCTION df._leaf_config_problem(t text, query text)
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
    IF t NOT IN ('WAIT_SCHEDULE', 'SIGNAL', 'RETRY', 'TIMEOUT') THEN
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
    IF t = 'TIMEOUT' AND (jsonb_typeof(config -> 'seconds') IS DISTINCT FROM 'number'
                          OR (config ->> 'seconds')::numeric <= 0
                          OR (config ->> 'seconds')::numeric >= 1e10) THEN
        RETURN 'TIMEOUT node requires a number of seconds above 0 and below 10000000000 in its config';
    END IF;
    IF t = 'RETRY' AND df._retry_policy(config) IS NULL THEN
        RETURN 'RETRY node requires max_attempts (at least 1), initial_backoff and max_backoff (positive seconds) in its config';
    END IF;
    IF t = 'SIGNAL' AND coalesce(jsonb_typeof(config -> 'timeout_seconds'), 'null') <> 'null'
       AND (jsonb_typeof(config -> 'timeout_seconds') <> 'number'
            OR abs((config ->> 'timeout_seconds')::numeric) >= 1e10) THEN
        RETURN 'timeout_seconds of a SIGNAL node must be a number of seconds below 10000000000';
    END IF;
    RETURN NULL;
END
$$;
