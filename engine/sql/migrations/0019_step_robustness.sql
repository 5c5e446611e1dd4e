-- pgdurable catalog, version 19: a large step result is stored once.
--
-- A step's result was kept twice per node: in df.nodes.result (jsonb, what users read, as
-- in pg_durable) and in df._node_state.raw_result (the compact JSON text as the step wrote
-- it, whose keys follow the SELECT's column order, which jsonb does not keep: the engine
-- substitutes and composes results from it). For an SQL result ({"rows":[...],
-- "row_count":n}) that text is the jsonb's rows with their keys put back in column order,
-- so above LARGE_RESULT (64 kB) _node_state keeps only those column names, and the text is
-- rebuilt from df.nodes.result when the engine loads the instance (the few such loads cost
-- a rebuild; small results, the usual case, keep their text: rebuilding it at every load
-- would cost more than the copy). The text is dropped only when the rebuild gives it back
-- exactly (checked as it is written): a result with json (not jsonb) values, floats
-- printed with an exponent, or anything else jsonb would print differently keeps its text.
--
-- The trigger does what df._record_step and df._apply_plan write, so neither changes.
-- Since the text comes from df.nodes.result, an owner who edits the result of a completed
-- step of their own instance by hand changes what its later steps see (as a hand-edited
-- status already does); nobody else can.
--
-- The same goes for the output of a completed execution (df._executions.output), which is
-- its root node's result text: above 64 kB it keeps the column names (output_columns) and
-- its readers (df.list_instances, df.instance_info, df.instance_executions, df.explain)
-- rebuild it from the root node's df.nodes.result, which the reader can see.

ALTER TABLE df._node_state ADD COLUMN result_columns text[];

-- An SQL result's compact text from its jsonb, each row's keys in the order `cols` gives
-- (one pass over the rows, with one expression per column built for these columns).
CREATE FUNCTION df._rows_text(result jsonb, cols text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    fields text;
    rebuilt text;
BEGIN
    SELECT string_agg(format('%L || (r.item -> %L)::text',
                             CASE WHEN c.ord > 1 THEN ',' ELSE '' END
                             || to_json(c.name)::text || ':', c.name), ' || ' ORDER BY c.ord)
    INTO fields FROM unnest(cols) WITH ORDINALITY AS c(name, ord);
    IF fields IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT ''{"rows":['' || coalesce(string_agg(''{'' || %s || ''}'', '',''
                                                                ORDER BY r.ord), '''')
                           || ''],"row_count":'' || ($1 ->> ''row_count'') || ''}''
                    FROM jsonb_array_elements($1 -> ''rows'') WITH ORDINALITY AS r(item, ord)',
                   fields)
    INTO rebuilt USING result;
    RETURN rebuilt;
END
$$;
-- (pure: users' readers of an instance's output call it, on rows they can read)

-- The keys of the first row of a result text '{"rows":[{...},...' in their order, without
-- parsing the whole text: the first row is taken to end at the first '},{"' or
-- '}],"row_count":', which a nested JSON value may fool (a string's quotes are escaped);
-- the rebuild the caller compares with the whole text then differs, and the text is kept.
CREATE FUNCTION df._first_row_keys(raw text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    next_row integer := strpos(raw, '},{"');
    last_row integer := strpos(raw, '}],"row_count":');
    ends integer := CASE WHEN next_row > 0 AND (last_row = 0 OR next_row < last_row)
                         THEN next_row ELSE last_row END;
BEGIN
    IF ends = 0 THEN
        RETURN NULL;
    END IF;
    RETURN ARRAY(SELECT json_object_keys(substr(raw, 10, ends - 9)::json));
EXCEPTION WHEN invalid_text_representation OR invalid_parameter_value THEN
    RETURN NULL;  -- cut inside a string: not valid JSON
END
$$;
REVOKE EXECUTE ON FUNCTION df._first_row_keys(text) FROM PUBLIC;

-- Before a large result text is written to _node_state: keep its column names instead when
-- the node's jsonb result (written just before, in the same transaction) gives it back.
CREATE FUNCTION df._store_result_once() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cols text[];
    stored jsonb;
BEGIN
    IF left(NEW.raw_result, 10) <> '{"rows":[{' THEN
        RETURN NEW;  -- not an SQL result with rows: HTTP, JOIN, SIGNAL ... keep their text
    END IF;
    IF TG_OP = 'INSERT' AND EXISTS (SELECT 1 FROM df._node_state s
                                    WHERE s.instance_id = NEW.instance_id
                                      AND s.node_id = NEW.node_id) THEN
        -- an upsert that will update the row: its DO UPDATE writes this text (it keeps
        -- the old one when the new one is NULL), and this trigger runs again before that
        RETURN NEW;
    END IF;
    SELECT n.result INTO stored FROM df.nodes n
    WHERE n.instance_id = NEW.instance_id AND n.id = NEW.node_id;
    cols := df._first_row_keys(NEW.raw_result);
    IF df._rows_text(stored, cols) = NEW.raw_result THEN
        NEW.raw_result := NULL;
        NEW.result_columns := cols;
    END IF;
    RETURN NEW;
END
$$;
REVOKE EXECUTE ON FUNCTION df._store_result_once() FROM PUBLIC;
CREATE TRIGGER node_state_store_result_once
    BEFORE INSERT OR UPDATE OF raw_result ON df._node_state
    FOR EACH ROW WHEN (length(NEW.raw_result) > 65536)
    EXECUTE FUNCTION df._store_result_once();

CREATE OR REPLACE FUNCTION df._instance_state(p_instance text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    inst record;
    ex record;
BEGIN
    SELECT i.*, r.rolname, r.rolsuper, r.rolcanlogin INTO inst
    FROM df.instances i LEFT JOIN pg_roles r ON r.oid = i.submitted_by
    WHERE i.id = p_instance;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT e.execution_id, e.event_count, e.version INTO ex
    FROM df._executions e WHERE e.instance_id = p_instance
    ORDER BY e.execution_id DESC LIMIT 1;
    RETURN jsonb_build_object(
        'now', extract(epoch FROM clock_timestamp()),
        'id', inst.id, 'label', inst.label, 'root', inst.root_node, 'status', inst.status,
        'owner', inst.rolname, 'owner_oid', inst.submitted_by::oid, 'superuser', inst.rolsuper,
        'can_login', inst.rolcanlogin, 'database', inst.database,
        'vars', coalesce((SELECT v.vars FROM df._instance_vars v WHERE v.instance_id = p_instance), '{}'),
        'execution_id', ex.execution_id,
        'version', coalesce(ex.version, 0),
        'signals', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                'id', g.id, 'name', g.signal_name, 'data', g.data) ORDER BY g.id)
                             FROM df._signals g
                             WHERE g.instance_id = p_instance AND g.consumed_by IS NULL), '[]'),
        'events', coalesce(ex.event_count, 0),
        'nodes', (SELECT jsonb_agg(jsonb_build_object(
                      'id', n.id, 'type', n.node_type, 'query', n.query, 'name', n.result_name,
                      'left', n.left_node, 'right', n.right_node, 'status', n.status,
                      'raw', CASE WHEN s.raw_result IS NULL AND s.result_columns IS NOT NULL
                                       AND n.status = 'completed'
                                  THEN df._rows_text(n.result, s.result_columns)
                                  ELSE s.raw_result END,
                      'error', CASE WHEN n.status = 'failed' THEN n.result #>> '{}' END,
                      'iteration', coalesce(s.iteration, 0),
                      'iteration_started', extract(epoch FROM s.iteration_started_at)))
                  FROM df.nodes n LEFT JOIN df._node_state s
                       ON s.instance_id = n.instance_id AND s.node_id = n.id
                  WHERE n.instance_id = p_instance));
END
$$;
REVOKE EXECUTE ON FUNCTION df._instance_state(text) FROM PUBLIC;

ALTER TABLE df._executions ADD COLUMN output_columns text[];

-- Before a completed execution's large output is written: keep its column names instead
-- when the root node's jsonb result (written earlier in the same df._apply_plan) gives it
-- back.
CREATE FUNCTION df._store_output_once() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cols text[];
    stored jsonb;
BEGIN
    IF left(NEW.output, 10) <> '{"rows":[{' THEN
        RETURN NEW;
    END IF;
    SELECT n.result INTO stored FROM df.instances i
    JOIN df.nodes n ON n.instance_id = i.id AND n.id = i.root_node
    WHERE i.id = NEW.instance_id;
    cols := df._first_row_keys(NEW.output);
    IF df._rows_text(stored, cols) = NEW.output THEN
        NEW.output := NULL;
        NEW.output_columns := cols;
    END IF;
    RETURN NEW;
END
$$;
REVOKE EXECUTE ON FUNCTION df._store_output_once() FROM PUBLIC;
CREATE TRIGGER executions_store_output_once
    BEFORE INSERT OR UPDATE OF output ON df._executions
    FOR EACH ROW WHEN (NEW.status = 'Completed' AND length(NEW.output) > 65536)
    EXECUTE FUNCTION df._store_output_once();

-- An execution's output as stored, or rebuilt from its instance's root node (`root`).
CREATE FUNCTION df._output_text(e df._executions, root text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN e.output IS NULL AND e.output_columns IS NOT NULL
                THEN df._rows_text((SELECT n.result FROM df.nodes n
                                    WHERE n.instance_id = e.instance_id AND n.id = root),
                                   e.output_columns)
                ELSE e.output END
$$;

CREATE OR REPLACE VIEW df._instance_overview WITH (security_invoker = true) AS
SELECT i.id, i.label, i.status, i.created_at, i.completed_at,
       e.execution_id AS execution_count, e.output
FROM df.instances i
JOIN LATERAL (
    SELECT x.execution_id, df._output_text(x, i.root_node) AS output FROM df._executions x
    WHERE x.instance_id = i.id ORDER BY x.execution_id DESC LIMIT 1
) e ON true;

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
               'extras', to_jsonb(nullif(g.extra_children, '{}')), 'status', s.inferred_status)))
    INTO plan
    FROM df._inspect_graph(p_instance) g
    LEFT JOIN df._inferred_statuses(p_instance) s USING (node_id);
    IF plan IS NULL THEN
        RETURN format('No nodes found for instance ''%s''', p_instance);
    END IF;
    SELECT e.status, df._output_text(e, inst.root) AS output INTO run FROM df._executions e
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
