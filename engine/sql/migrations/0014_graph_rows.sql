-- pgdurable catalog, version 14: df.start walks, checks and flattens a graph in one pass.
--
-- Version 3 walked the graph with a recursive query, checked the walk, then flattened it
-- with a query that looked every child up by its path; one PL/pgSQL pass that remembers
-- each node's parent does all three. Same checks in the same order (depth, then size,
-- then each node in pre-order), same errors, same rows.

-- The flattened graph as parallel arrays in pre-order (the root first), with fresh random
-- ids (§5.1), unique within the graph.
CREATE FUNCTION df._graph_rows(root jsonb, OUT ids text[], OUT types text[], OUT queries text[],
                               OUT names text[], OUT lefts text[], OUT rights text[])
LANGUAGE plpgsql AS $$
DECLARE
    nodes jsonb[] := '{}';
    paths text[] := '{}';
    parents integer[] := '{}';  -- pre-order position of the parent (0: none)
    slots text[] := '{}';       -- which child of its parent: left, right, condition, extra
    -- the stack of nodes still to visit (sp: its top; element assignment keeps it O(1))
    stack_nodes jsonb[] := ARRAY[root];
    stack_paths text[] := ARRAY['root'];
    stack_depths integer[] := ARRAY[1];
    stack_parents integer[] := ARRAY[0];
    stack_slots text[] := ARRAY[NULL::text];
    sp integer := 1;
    extras jsonb;
    deepest integer := 0;
    depth integer;
    n integer := 0;
    node jsonb;
    field text;
    problem text;
    kind text;
    extra_ids text[];
    condition_ids text[];
BEGIN
    WHILE sp > 0 LOOP
        node := stack_nodes[sp];
        depth := stack_depths[sp];
        n := n + 1;
        nodes[n] := node;
        paths[n] := stack_paths[sp];
        parents[n] := stack_parents[sp];
        slots[n] := stack_slots[sp];
        deepest := greatest(deepest, depth);
        sp := sp - 1;
        CONTINUE WHEN depth > 256;  -- one level past the limit is enough to report it
        -- pushed in reverse, to come off in order: left, right, condition, extra_nodes[0..]
        IF jsonb_typeof(node -> 'extra_nodes') = 'array' THEN
            extras := node -> 'extra_nodes';
            FOR e IN REVERSE jsonb_array_length(extras) - 1 .. 0 LOOP
                IF jsonb_typeof(extras -> e) = 'object' THEN
                    sp := sp + 1;
                    stack_nodes[sp] := extras -> e;
                    stack_paths[sp] := paths[n] || '.extra_nodes[' || e || ']';
                    stack_depths[sp] := depth + 1;
                    stack_parents[sp] := n;
                    stack_slots[sp] := 'extra';
                END IF;
            END LOOP;
        END IF;
        FOREACH field IN ARRAY ARRAY['condition_node', 'right_node', 'left_node'] LOOP
            CONTINUE WHEN jsonb_typeof(node -> field) IS DISTINCT FROM 'object';
            sp := sp + 1;
            stack_nodes[sp] := node -> field;
            stack_slots[sp] := CASE field WHEN 'condition_node' THEN 'condition'
                                          ELSE replace(field, '_node', '') END;
            stack_paths[sp] := paths[n] || CASE field WHEN 'condition_node' THEN '.condition_node'
                                                      ELSE '.' || stack_slots[sp] END;
            stack_depths[sp] := depth + 1;
            stack_parents[sp] := n;
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
    FOR i IN 1 .. n LOOP
        problem := df._node_problem(nodes[i]);
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'Invalid durable function graph: %: %', paths[i], problem
                USING ERRCODE = '22023';
        END IF;
    END LOOP;

    FOR attempt IN 1 .. 10 LOOP  -- re-roll on an in-graph collision
        SELECT array_agg(right(gen_random_uuid()::text, 8)) INTO ids FROM generate_series(1, n);
        EXIT WHEN n = 1 OR (SELECT count(DISTINCT v) FROM unnest(ids) AS v) = n;
    END LOOP;
    lefts := array_fill(NULL::text, ARRAY[n]);
    rights := lefts;
    condition_ids := lefts;
    extra_ids := lefts;
    FOR i IN 2 .. n LOOP  -- children come after their parents, extra branches in order
        CASE slots[i]
            WHEN 'left' THEN lefts[parents[i]] := ids[i];
            WHEN 'right' THEN rights[parents[i]] := ids[i];
            WHEN 'condition' THEN condition_ids[parents[i]] := ids[i];
            ELSE extra_ids[parents[i]] := coalesce(extra_ids[parents[i]] || ',', '')
                                          || to_json(ids[i])::text;
        END CASE;
    END LOOP;
    types := array_fill(NULL::text, ARRAY[n]);
    names := types;
    queries := types;
    FOR i IN 1 .. n LOOP
        node := nodes[i];
        kind := node ->> 'node_type';
        types[i] := kind;
        names[i] := node ->> 'result_name';
        queries[i] := CASE
            WHEN kind IN ('IF', 'LOOP') AND node ? 'condition_node'
                THEN json_build_object('condition_node', condition_ids[i])::text
            WHEN kind = 'LOOP' THEN NULL
            WHEN kind = 'JOIN' AND jsonb_array_length(coalesce(node -> 'extra_nodes', '[]')) > 0
                THEN '{"extra_nodes":[' || extra_ids[i] || ']}'
            WHEN kind IN ('THEN', 'RACE', 'JOIN') THEN NULL
            ELSE node ->> 'query'
        END;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION df.start(fut text, label text DEFAULT NULL, database text DEFAULT NULL,
                                    transaction_mode text DEFAULT 'caller')
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    mode text := lower(coalesce(transaction_mode, 'caller'));
    root jsonb;
    instance_id text;
    me regrole := quote_ident(current_user)::regrole;
    ids text[];
    types text[];
    queries text[];
    names text[];
    lefts text[];
    rights text[];
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
    SELECT g.ids, g.types, g.queries, g.names, g.lefts, g.rights
    INTO ids, types, queries, names, lefts, rights
    FROM df._graph_rows(root) g;
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
