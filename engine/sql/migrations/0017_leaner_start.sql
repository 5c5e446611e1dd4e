-- pgdurable catalog, version 17: df.start walks and flattens a graph with fewer PL/pgSQL
-- statements per node, and reads a Durofut argument once.
--
-- Same checks in the same order (depth, then size, then the first node in pre-order with a
-- problem), same errors, same rows. The walk keeps, per node, its parent and which child of
-- it the node is; a node's path, which only an error message needs, is spelt from those.
-- Each node is checked as it is visited; the ids and child links are filled in one pass
-- from the last node back, so that a node's children are done before the node itself.
--
-- Fixed: df._node_problem took a missing child for an unknown one (NULL, not false), so a
-- THEN, JOIN or RACE without a right_node, a LOOP without its body or an IF with neither
-- condition_node nor query was not reported as such: the node's INSERT then failed with a
-- bare check violation (23514) instead of 22023 naming the node by its path.

CREATE OR REPLACE FUNCTION df._graph_rows(root jsonb, OUT ids text[], OUT types text[],
                                          OUT queries text[], OUT names text[],
                                          OUT lefts text[], OUT rights text[])
LANGUAGE plpgsql AS $$
DECLARE
    nodes jsonb[] := '{}';
    parents integer[] := '{}';  -- pre-order position of the parent (0: none)
    slots integer[] := '{}';    -- which child of its parent: 1 left, 2 right, 3 condition,
                                -- 4 + i extra_nodes[i]
    -- the stack of nodes still to visit (sp: its top; element assignment keeps it O(1))
    stack_nodes jsonb[] := ARRAY[root];
    stack_depths integer[] := ARRAY[1];
    stack_parents integer[] := ARRAY[0];
    stack_slots integer[] := ARRAY[0];
    sp integer := 1;
    extras jsonb;
    deepest integer := 0;
    depth integer;
    n integer := 0;
    node jsonb;
    problem text;
    problem_at integer := 0;
    path text := '';
    kind text;
    parent integer;
    extra_ids text[];
    condition_ids text[];
BEGIN
    WHILE sp > 0 LOOP
        node := stack_nodes[sp];
        depth := stack_depths[sp];
        n := n + 1;
        nodes[n] := node;
        parents[n] := stack_parents[sp];
        slots[n] := stack_slots[sp];
        sp := sp - 1;
        IF depth > deepest THEN
            deepest := depth;
        END IF;
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

    IF deepest > 256 THEN
        RAISE EXCEPTION 'Invalid durable function graph: root: Graph exceeds maximum nesting depth of 256. Simplify the workflow or break it into multiple instances.'
            USING ERRCODE = '54001';
    END IF;
    IF n > 10000 THEN
        RAISE EXCEPTION 'Invalid durable function graph: root: Workflow exceeds maximum node count of 10000. Simplify the workflow or break it into multiple instances.'
            USING ERRCODE = '54000';
    END IF;
    IF problem_at > 0 THEN
        WHILE problem_at > 1 LOOP
            path := CASE slots[problem_at] WHEN 1 THEN '.left' WHEN 2 THEN '.right'
                                           WHEN 3 THEN '.condition_node'
                                           ELSE '.extra_nodes[' || slots[problem_at] - 4 || ']'
                    END || path;
            problem_at := parents[problem_at];
        END LOOP;
        RAISE EXCEPTION 'Invalid durable function graph: root%: %', path, problem
            USING ERRCODE = '22023';
    END IF;

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
            WHEN kind IN ('THEN', 'RACE') THEN NULL
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

-- df.start's strict reading of its argument (§3.3 step 1), as in version 3, except that a
-- Durofut node is not parsed a second time (df._as_node would read the text again to reach
-- the same two cases: a clean tree as it is, any other through df._durofut_node).
CREATE OR REPLACE FUNCTION df._parse_strict(fut text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    parsed jsonb;
    node_type text;
BEGIN
    BEGIN
        parsed := fut::jsonb;
    EXCEPTION WHEN others THEN
        parsed := NULL;
    END;
    IF jsonb_typeof(parsed) = 'object' AND parsed ? 'node_type' THEN
        node_type := parsed ->> 'node_type';
        IF jsonb_typeof(parsed -> 'node_type') IS DISTINCT FROM 'string'
           OR NOT (node_type = ANY (df._node_types())) THEN
            RAISE EXCEPTION 'Invalid durable function: Unknown node_type ''%''. Valid types: %',
                coalesce(node_type, 'null'), array_to_string(df._node_types(), ', ')
                USING ERRCODE = '22023';
        END IF;
        IF df._durofut_is_clean(parsed) THEN
            RETURN parsed;  -- the usual case: a builder's own output
        END IF;
        BEGIN
            RETURN df._durofut_node(parsed);
        EXCEPTION WHEN others THEN
            RAISE EXCEPTION 'Invalid durable function: Malformed Durofut JSON with node_type ''%'': %',
                node_type, regexp_replace(SQLERRM, '^Invalid Durofut JSON: ', '')
                USING ERRCODE = '22023';
        END;
    END IF;
    BEGIN
        RETURN df._as_node(fut);
    EXCEPTION WHEN others THEN
        RAISE EXCEPTION 'Invalid durable function: %', SQLERRM USING ERRCODE = '22023';
    END;
END
$$;

-- What is wrong with one node (not its children), or NULL; as in version 3, with a missing
-- child counted as absent.
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
    RETURN CASE
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
END
$$;
