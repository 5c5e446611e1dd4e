-- pgdurable catalog, version 3: graph validation and flattening, df.start and the control,
-- variable, grant and monitoring functions of pg_durable (§3.3–§3.7).

-- ---------------------------------------------------------------------------------------
-- Graph walking and validation
-- ---------------------------------------------------------------------------------------

-- Every node of a Durofut tree in pre-order (sort_key), with pg_durable's error paths
-- (root, root.left, root.right.condition_node, root.extra_nodes[0], ...). Expansion stops
-- one level past the depth limit so that an over-deep graph is seen without walking it all.
CREATE FUNCTION df._graph_walk(root jsonb)
RETURNS TABLE (path text, sort_key integer[], depth integer, node jsonb)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
WITH RECURSIVE walk(path, sort_key, depth, node) AS (
    SELECT 'root'::text, ARRAY[]::integer[], 1, root
  UNION ALL
    SELECT w.path || c.suffix, w.sort_key || c.ord, w.depth + 1, c.child
    FROM walk w
    CROSS JOIN LATERAL (
        SELECT '.left', 1, w.node -> 'left_node'
        WHERE jsonb_typeof(w.node -> 'left_node') = 'object'
      UNION ALL
        SELECT '.right', 2, w.node -> 'right_node'
        WHERE jsonb_typeof(w.node -> 'right_node') = 'object'
      UNION ALL
        SELECT '.condition_node', 3, w.node -> 'condition_node'
        WHERE jsonb_typeof(w.node -> 'condition_node') = 'object'
      UNION ALL
        SELECT '.extra_nodes[' || (e.ordinality - 1) || ']', 3 + e.ordinality::integer, e.value
        FROM jsonb_array_elements(CASE WHEN jsonb_typeof(w.node -> 'extra_nodes') = 'array'
                                       THEN w.node -> 'extra_nodes' ELSE '[]' END)
             WITH ORDINALITY AS e(value, ordinality)
        WHERE jsonb_typeof(e.value) = 'object'
    ) AS c(suffix, ord, child)
    WHERE w.depth <= 256
)
SELECT path, sort_key, depth, node FROM walk
$$;

-- What is wrong with one node (not its children), or NULL.
CREATE FUNCTION df._node_problem(node jsonb)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    t text := node ->> 'node_type';
    has_left boolean := jsonb_typeof(node -> 'left_node') = 'object';
    has_right boolean := jsonb_typeof(node -> 'right_node') = 'object';
    has_condition boolean := jsonb_typeof(node -> 'condition_node') = 'object';
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

-- The walk as parallel arrays in pre-order (root first), so one walk serves both checking
-- and flattening.
CREATE TYPE df._walk AS (paths text[], nodes jsonb[], deepest integer);

CREATE FUNCTION df._walk_of(root jsonb)
RETURNS df._walk LANGUAGE sql IMMUTABLE AS $$
    SELECT array_agg(w.path ORDER BY w.sort_key), array_agg(w.node ORDER BY w.sort_key),
           max(w.depth)
    FROM df._graph_walk(root) w
$$;

-- Raise pg_durable's graph error for the first problem in pre-order, if any.
CREATE FUNCTION df._check_walk(walk df._walk)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    problem text;
BEGIN
    IF walk.deepest > 256 THEN
        RAISE EXCEPTION 'Invalid durable function graph: root: Graph exceeds maximum nesting depth of 256. Simplify the workflow or break it into multiple instances.'
            USING ERRCODE = '54001';
    END IF;
    IF cardinality(walk.paths) > 10000 THEN
        RAISE EXCEPTION 'Invalid durable function graph: root: Workflow exceeds maximum node count of 10000. Simplify the workflow or break it into multiple instances.'
            USING ERRCODE = '54000';
    END IF;
    FOR i IN 1 .. cardinality(walk.paths) LOOP
        problem := df._node_problem(walk.nodes[i]);
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'Invalid durable function graph: %: %', walk.paths[i], problem
                USING ERRCODE = '22023';
        END IF;
    END LOOP;
END
$$;

CREATE FUNCTION df._validate_graph(root jsonb)
RETURNS void LANGUAGE sql AS $$
    SELECT df._check_walk(df._walk_of(root))
$$;

-- The flattened graph with fresh random ids (§5.1), in pre-order, as df.nodes rows.
CREATE FUNCTION df._flatten(walk df._walk)
RETURNS TABLE (id text, node_type text, query text, result_name text, left_node text,
               right_node text, ord bigint)
LANGUAGE plpgsql AS $$
DECLARE
    ids jsonb;
BEGIN
    FOR attempt IN 1..10 LOOP
        SELECT jsonb_object_agg(p, right(gen_random_uuid()::text, 8)) INTO ids
        FROM unnest(walk.paths) AS p;
        -- ids are unique within the graph: re-roll on an in-graph collision
        EXIT WHEN (SELECT count(DISTINCT v) FROM jsonb_each_text(ids) AS e(k, v))
                  = cardinality(walk.paths);
    END LOOP;
    RETURN QUERY
    SELECT ids ->> w.path,
           w.node ->> 'node_type',
           CASE
               WHEN w.node ->> 'node_type' IN ('IF', 'LOOP') AND w.node ? 'condition_node'
                   THEN json_build_object('condition_node', ids ->> (w.path || '.condition_node'))::text
               WHEN w.node ->> 'node_type' = 'LOOP' THEN NULL
               WHEN w.node ->> 'node_type' = 'JOIN'
                    AND jsonb_array_length(coalesce(w.node -> 'extra_nodes', '[]')) > 0
                   THEN '{"extra_nodes":[' || (
                       SELECT string_agg(to_json(ids ->> (w.path || '.extra_nodes[' || (i - 1) || ']'))::text, ','
                                         ORDER BY i)
                       FROM generate_series(1, jsonb_array_length(w.node -> 'extra_nodes')) AS i
                   ) || ']}'
               WHEN w.node ->> 'node_type' IN ('THEN', 'RACE', 'JOIN') THEN NULL
               ELSE w.node ->> 'query'
           END,
           w.node ->> 'result_name',
           ids ->> (w.path || '.left'),
           ids ->> (w.path || '.right'),
           w.ord
    FROM unnest(walk.paths, walk.nodes) WITH ORDINALITY AS w(path, node, ord);
END
$$;

-- df.start's strict reading of its argument (§3.3 step 1).
CREATE FUNCTION df._parse_strict(fut text)
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
        BEGIN
            RETURN df._as_node(fut);
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

-- ---------------------------------------------------------------------------------------
-- Settings published by the engine, read by SQL
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION df._setting(setting_name text, fallback text)
RETURNS text LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT value FROM df._settings WHERE name = setting_name), fallback)
$$;

CREATE FUNCTION df._in_workflow()
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('df.in_workflow', true), '') = 'true'
$$;

-- ---------------------------------------------------------------------------------------
-- df.start (§3.3)
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION df.start(fut text, label text DEFAULT NULL, database text DEFAULT NULL,
                         transaction_mode text DEFAULT 'caller')
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    mode text := lower(coalesce(transaction_mode, 'caller'));
    root jsonb;
    instance_id text;
    me regrole := quote_ident(current_user)::regrole;
    walk df._walk;
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
    walk := df._walk_of(root);  -- one walk of the graph serves checking and flattening
    PERFORM df._check_walk(walk);
    SELECT array_agg(f.id ORDER BY f.ord), array_agg(f.node_type ORDER BY f.ord),
           array_agg(f.query ORDER BY f.ord), array_agg(f.result_name ORDER BY f.ord),
           array_agg(f.left_node ORDER BY f.ord), array_agg(f.right_node ORDER BY f.ord)
    INTO ids, types, queries, names, lefts, rights
    FROM df._flatten(walk) f;  -- pre-order: the root comes first
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

-- Who may own an instance: a role with LOGIN (the engine logs in as it) that is not a
-- superuser unless pgdurable runs with --enable-superuser-instances.
CREATE FUNCTION df._check_submitter(role_name name)
RETURNS void LANGUAGE plpgsql STABLE AS $$
DECLARE
    r record;
BEGIN
    SELECT rolcanlogin, rolsuper INTO r FROM pg_roles WHERE rolname = role_name;
    IF NOT r.rolcanlogin THEN
        RAISE EXCEPTION 'current_user "%" does not have LOGIN privilege. The background worker must connect as this role to execute SQL. Grant LOGIN to this role or call df.start() as a role with LOGIN.',
            role_name USING ERRCODE = '42501';
    END IF;
    IF r.rolsuper AND df._setting('enable_superuser_instances', 'off') <> 'on' THEN
        RAISE EXCEPTION 'pg_durable: superuser instances are disabled. current_user "%" is a superuser, but pg_durable.enable_superuser_instances is off. Set pg_durable.enable_superuser_instances = on to allow this.',
            role_name USING ERRCODE = '42501';
    END IF;
END
$$;

-- Hand a freshly inserted instance to the engine: snapshot the owner's variables, queue
-- the first advance and wake the engines (NOTIFY is delivered at commit, so a ROLLBACK
-- means the instance never runs).
-- The instance's owner when the session's login role may act for it (is, or is a member
-- of, the owner), else NULL. SECURITY DEFINER functions cannot see the caller's
-- current_user, so they check the login role instead.
CREATE FUNCTION df._acting_owner(target text)
RETURNS regrole LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT i.submitted_by FROM df.instances i
    WHERE i.id = target AND pg_has_role(session_user, i.submitted_by, 'MEMBER')
$$;

CREATE FUNCTION df._submit(new_instance text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owner_role regrole := df._acting_owner(new_instance);
BEGIN
    IF owner_role IS NULL THEN
        RAISE EXCEPTION 'Instance not found or access denied: %', new_instance
            USING ERRCODE = '42501';
    END IF;
    INSERT INTO df._instance_vars (instance_id, vars)
    SELECT new_instance, coalesce(jsonb_object_agg(v.name, v.value), '{}')
    FROM df.vars v WHERE v.owner = owner_role AND v.value IS NOT NULL
    ON CONFLICT (instance_id) DO NOTHING;
    INSERT INTO df._advance AS a (instance_id) VALUES (new_instance)
    ON CONFLICT (instance_id) DO UPDATE SET requested_at = least(a.requested_at, excluded.requested_at);
    PERFORM pg_notify('df_wake', new_instance);
END
$$;

-- transaction_mode => 'new': not available yet (it needs a loopback session as the caller).
CREATE FUNCTION df._start_new(fut text, label text, database text)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF df._in_workflow() THEN
        RAISE EXCEPTION 'df.start() with transaction_mode => ''new'' cannot be called inside a workflow - a df.sql() node already runs as a single autocommitted statement, so a plain df.start() there is already independent of any caller transaction'
            USING ERRCODE = '0A000';
    END IF;
    RAISE EXCEPTION 'df.start() with transaction_mode => ''new'' is not supported by this pgdurable version'
        USING ERRCODE = '0A000';
END
$$;

-- What pgdurable runs instead of a df.start whose SQL step does not parse: it fails like
-- the server's own syntax error would (aborting the transaction), and carries the position
-- in the user's statement in the column-name field, which pgdurable moves to the
-- ErrorResponse's position field. The parameters keep the statement's $n referenced.
CREATE FUNCTION df._step_syntax_error(message text, step_position integer, step text,
                                      VARIADIC parameters text[] DEFAULT '{}')
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '42601', MESSAGE = message,
        DETAIL = format('in a SQL step of df.start: %s', left(step, 200)),
        COLUMN = 'pgdurable:position=' || step_position;
END
$$;
