-- pgdurable catalog: the Durofut model (spec §4): node types, parsing with serde-like
-- errors, canonical serialization, and the "same statement helper" guard of the builders.
--
-- Everything here is pure: no table is read or written. No function here carries a SET
-- clause: df._mark_helper_result stores its mark with set_config(..., is_local => true),
-- which a SET clause on any enclosing function would undo at that function's exit. Bodies
-- qualify df.* calls; built-ins resolve through pg_catalog, which PostgreSQL searches first
-- unless a caller deliberately places it later.

-- The node types, in pg_durable's order (also used in its error messages), then pgdurable's
-- own: RETRY (df.retry) and TIMEOUT (df.timeout); then COMPENSATED (<->, df.with_undo), the
-- name pg_durable's compensation proposal gives it.
CREATE OR REPLACE FUNCTION df._node_types() RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN ARRAY['SQL', 'THEN', 'IF', 'JOIN', 'LOOP', 'BREAK', 'RACE', 'SLEEP',
                 'WAIT_SCHEDULE', 'HTTP', 'HTTP_MULTIPART', 'SIGNAL', 'RETRY', 'TIMEOUT',
                 'COMPENSATED'];
END
$$;

-- Compact JSON text of any jsonb value (serde_json's output: no spaces, keys in jsonb
-- order). jsonb::text puts a space after ':' and ',', which pg_durable never emits.
CREATE OR REPLACE FUNCTION df._json_compact(value jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    CASE jsonb_typeof(value)
    WHEN 'object' THEN
        RETURN '{' || coalesce((
            SELECT string_agg(to_json(e.key)::text || ':' || df._json_compact(e.value), ','
                              ORDER BY e.ord)
            FROM jsonb_each(value) WITH ORDINALITY AS e(key, value, ord)), '') || '}';
    WHEN 'array' THEN
        RETURN '[' || coalesce((
            SELECT string_agg(df._json_compact(e.value), ',' ORDER BY e.ord)
            FROM jsonb_array_elements(value) WITH ORDINALITY AS e(value, ord)), '') || ']';
    ELSE
        -- Scalars: jsonb's text of strings, numbers, true/false/null is already compact and
        -- escapes strings exactly as serde_json does.
        RETURN value::text;
    END CASE;
END;
$$;

-- How serde names an unexpected JSON value in "invalid type: <this>, expected ...".
CREATE OR REPLACE FUNCTION df._serde_unexpected(value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE jsonb_typeof(value)
    WHEN 'null' THEN 'null'
    WHEN 'boolean' THEN format('boolean `%s`', value::text)
    WHEN 'number' THEN CASE WHEN value::text ~ '^-?[0-9]+$'
                            THEN format('integer `%s`', value::text)
                            ELSE format('floating point `%s`', value::text) END
    WHEN 'string' THEN format('string %s', value::text)
    WHEN 'array' THEN 'sequence'
    ELSE 'map'
END;

-- What pg_durable's serde model says of one Durofut JSON object's own fields (not of its
-- children's), or NULL when they deserialize: node_type present and a string; query and
-- result_name strings or null; left/right/condition_node objects or null; extra_nodes an
-- array of objects or null. Unknown keys are ignored (serde's default). node_type may be any
-- string here; an unknown type inside a graph is reported later by the graph walk.
-- Messages are serde-like (without serde_json's "at line L column C").
CREATE OR REPLACE FUNCTION df._durofut_level_problem(node jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN CASE
        WHEN NOT node ? 'node_type' THEN 'missing field `node_type`'
        WHEN jsonb_typeof(node -> 'node_type') <> 'string'
            THEN format('invalid type: %s, expected a string',
                        df._serde_unexpected(node -> 'node_type'))
        WHEN jsonb_typeof(node -> 'query') NOT IN ('string', 'null')
            THEN format('invalid type: %s, expected a string',
                        df._serde_unexpected(node -> 'query'))
        WHEN jsonb_typeof(node -> 'result_name') NOT IN ('string', 'null')
            THEN format('invalid type: %s, expected a string',
                        df._serde_unexpected(node -> 'result_name'))
        WHEN jsonb_typeof(node -> 'left_node') NOT IN ('object', 'null')
             OR jsonb_typeof(node -> 'right_node') NOT IN ('object', 'null')
            THEN 'Durofut children must be JSON objects'
        WHEN jsonb_typeof(node -> 'condition_node') NOT IN ('object', 'null')
            THEN 'condition_node must be a Durofut JSON object'
        WHEN jsonb_typeof(node -> 'extra_nodes') NOT IN ('array', 'null')
            THEN format('invalid type: %s, expected a sequence',
                        df._serde_unexpected(node -> 'extra_nodes'))
        WHEN jsonb_typeof(node -> 'extra_nodes') = 'array'
             AND jsonb_path_exists(node -> 'extra_nodes', 'strict $[*] ? (@.type() != "object")')
            THEN 'extra_nodes entries must be Durofut JSON objects'
    END;
END
$$;

-- One Durofut object whose own fields deserialize (df._durofut_level_problem), normalized at
-- its own level: only the seven model fields, JSON nulls and an empty extra_nodes dropped;
-- its children are kept as they are.
CREATE OR REPLACE FUNCTION df._durofut_level(node jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}')
            FROM jsonb_each(node) AS e
            WHERE e.key IN ('node_type', 'left_node', 'right_node', 'condition_node',
                            'extra_nodes', 'query', 'result_name')
              AND jsonb_typeof(e.value) <> 'null' AND e.value <> '[]');
END
$$;

-- Deserialize one Durofut JSON object the way pg_durable's composers do, recursively, and
-- return it normalized (df._durofut_level at every level). Errors carry serde-like messages
-- (df._durofut_level_problem); a child's own errors are raised by the recursive call.
CREATE OR REPLACE FUNCTION df._durofut_node(node jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    problem text := df._durofut_level_problem(node);
    result jsonb;
    field text;
    extras jsonb;
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_text_representation',
            MESSAGE = 'Invalid Durofut JSON: failed to deserialize workflow step: ' || problem;
    END IF;
    result := df._durofut_level(node);
    FOREACH field IN ARRAY ARRAY['left_node', 'right_node', 'condition_node'] LOOP
        IF result ? field THEN
            result := result || jsonb_build_object(field, df._durofut_node(result -> field));
        END IF;
    END LOOP;
    IF result ? 'extra_nodes' THEN
        SELECT jsonb_agg(df._durofut_node(e.value) ORDER BY e.ord) INTO extras
          FROM jsonb_array_elements(result -> 'extra_nodes') WITH ORDINALITY AS e(value, ord);
        result := result || jsonb_build_object('extra_nodes', extras);
    END IF;
    RETURN result;
END;
$$;

-- True when `node` is a well-formed, normalized Durofut tree: every object has a string
-- node_type; query and result_name are strings; left/right/condition_node are objects;
-- extra_nodes is a non-empty array of objects; there is no other key and no JSON null.
-- Builder output always is. Checked on the whole tree at C speed (one jsonpath pass and a
-- scan of the jsonb text) rather than node by node in PL/pgSQL: every composition re-reads
-- its operands, so a per-node PL/pgSQL cost here makes a chain of N steps cost O(N^2) calls.
CREATE OR REPLACE FUNCTION df._durofut_is_clean(node jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN jsonb_typeof(node) = 'object'
    -- Member types (strict: a type test on a missing member is unknown, i.e. not a failure;
    -- exists() of a missing member is false). In a clean tree every array is an extra_nodes.
    AND NOT jsonb_path_exists(node, 'strict $.** ? (
        (@.type() == "object" && (
            !(exists(@.node_type)) || @.node_type.type() != "string"
            || @.query.type() != "string" || @.result_name.type() != "string"
            || @.left_node.type() != "object" || @.right_node.type() != "object"
            || @.condition_node.type() != "object" || @.extra_nodes.type() != "array"))
        || (@.type() == "array" && (@.size() == 0 || exists(@[*] ? (@.type() != "object")))))')
    -- No other key. In jsonb's text every key starts with '{"' or ', "' and inside strings
    -- '"' is always escaped, so once the known keys are masked no '{"' or ', "' may remain
    -- (value strings follow ': ', the objects of an array follow ', {').
    AND NOT (
    replace(replace(replace(replace(replace(replace(replace(
    replace(replace(replace(replace(replace(replace(replace(node::text
        , '{"node_type": ', '{#')
        , ', "node_type": ', ',#')
        , '{"left_node": ', '{#')
        , ', "left_node": ', ',#')
        , '{"right_node": ', '{#')
        , ', "right_node": ', ',#')
        , '{"condition_node": ', '{#')
        , ', "condition_node": ', ',#')
        , '{"extra_nodes": ', '{#')
        , ', "extra_nodes": ', ',#')
        , '{"query": ', '{#')
        , ', "query": ', ',#')
        , '{"result_name": ', '{#')
        , ', "result_name": ', ',#')
    ~ '[{]"|, "');

-- The canonical text of a Durofut tree known to be clean (df._durofut_is_clean), e.g. one a
-- builder assembled from df._as_node results, or one df._durofut_node returned: compact,
-- fields in pg_durable's struct order (node_type, left_node, right_node, condition_node,
-- extra_nodes, query, result_name), absent ones omitted, children nested and serialized the
-- same way, so identical graphs always give identical text, whatever spacing or key order
-- they arrived with. Node-by-node serialization in PL/pgSQL would cost
-- O(depth x size) per composition; instead the whole tree goes through jsonb's own output:
--   1. rename the seven keys to "a".."g", whose jsonb order (length, then bytes) is the
--      struct order, and let ::jsonb re-sort every object at C speed;
--   2. rename them back, dropping the blanks jsonb's text puts after ': ' and ', '.
-- Literal replace() is exact: inside a JSON string every '"' is escaped, so '{"' and ', "'
-- occur only at real token boundaries, and in a clean tree the only separators are ': '
-- after a key, ', ' before a key and ', ' between the objects of extra_nodes. jsonb escapes
-- strings exactly as serde_json does (", \, \b \f \n \r \t, other controls as \u00xx,
-- non-ASCII raw).
CREATE OR REPLACE FUNCTION df._clean_durofut_text(node jsonb) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN
    replace(replace(replace(replace(replace(replace(replace(replace((
        replace(replace(replace(replace(replace(replace(replace(
        replace(replace(replace(replace(replace(replace(replace(node::text
            , '{"node_type": ', '{"a": ')
            , ', "node_type": ', ', "a": ')
            , '{"left_node": ', '{"b": ')
            , ', "left_node": ', ', "b": ')
            , '{"right_node": ', '{"c": ')
            , ', "right_node": ', ', "c": ')
            , '{"condition_node": ', '{"d": ')
            , ', "condition_node": ', ', "d": ')
            , '{"extra_nodes": ', '{"e": ')
            , ', "extra_nodes": ', ', "e": ')
            , '{"query": ', '{"f": ')
            , ', "query": ', ', "f": ')
            , '{"result_name": ', '{"g": ')
            , ', "result_name": ', ', "g": ')
    )::jsonb::text
        , ', {"a": ', ',{"a": ')
        , '{"a": ', '{"node_type":')
        , ', "b": ', ',"left_node":')
        , ', "c": ', ',"right_node":')
        , ', "d": ', ',"condition_node":')
        , ', "e": ', ',"extra_nodes":')
        , ', "f": ', ',"query":')
        , ', "g": ', ',"result_name":');

-- =======================================================================================
-- Auto-wrap, and the "same statement helper" guard
-- =======================================================================================

-- A stamp identifying the current top-level statement of this transaction.
CREATE OR REPLACE FUNCTION df._statement_stamp() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN extract(epoch FROM statement_timestamp())::text;

-- Called by df.setvar / df.unsetvar / df.clearvars / df.await_instance with the plain text
-- they are about to return. Records (helper, text, statement) transaction-locally so that a
-- composer handed that very text in the same statement can refuse it (pg_durable §3.1): the
-- user almost certainly meant the helper to run as a workflow step, which it cannot.
-- The caller must not have a SET clause, or the transaction-local setting is undone when it
-- returns.
CREATE OR REPLACE FUNCTION df._mark_helper_result(helper text, result text) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM set_config('df.non_future_helper',
        jsonb_build_object('helper', helper, 'result', result,
                           'statement', df._statement_stamp())::text,
        true);
END;
$$;

-- The helper whose return value `fut` is, when that helper ran earlier in this statement.
CREATE OR REPLACE FUNCTION df._helper_result_of(fut text) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    mark text := current_setting('df.non_future_helper', true);
BEGIN
    IF mark IS NULL OR mark = '' THEN
        RETURN NULL;  -- the common case: no helper ran in this transaction
    END IF;
    RETURN (SELECT m ->> 'helper' FROM (SELECT mark::jsonb AS m) s
             WHERE m ->> 'result' = fut AND m ->> 'statement' = df._statement_stamp());
END;
$$;

-- `fut` as a JSON object, or NULL when it is not one (plain SQL text is the usual case, so
-- the exception block, i.e. a subtransaction, is only entered for text starting with '{').
CREATE OR REPLACE FUNCTION df._json_object_or_null(fut text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    parsed jsonb;
BEGIN
    IF fut !~ '^[[:space:]]*\{' THEN
        RETURN NULL;
    END IF;
    BEGIN
        parsed := fut::jsonb;
    EXCEPTION WHEN data_exception THEN
        RETURN NULL;
    END;
    RETURN CASE WHEN jsonb_typeof(parsed) = 'object' THEN parsed END;
END;
$$;

-- The auto-wrap rule of every composer (pg_durable §3.1): a JSON object with a valid
-- node_type is a Durofut node (and must deserialize); any other JSON object carrying a
-- node_type key that is not a string fails; everything else -- plain SQL, JSON without
-- node_type, an unknown node_type string -- becomes a SQL node holding the text verbatim.
CREATE OR REPLACE FUNCTION df._as_node(fut text) RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    parsed jsonb := df._json_object_or_null(fut);
    helper text;
BEGIN
    IF parsed ? 'node_type'
       AND (jsonb_typeof(parsed -> 'node_type') <> 'string'
            OR parsed ->> 'node_type' = ANY (df._node_types())) THEN
        IF df._durofut_is_clean(parsed) THEN
            RETURN parsed;  -- the usual case: a builder's own output
        END IF;
        RETURN df._durofut_node(parsed);
    END IF;
    helper := df._helper_result_of(fut);
    IF helper IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('%s cannot be used as a workflow step. Call %s before df.start().',
                             helper, helper);
    END IF;
    RETURN jsonb_build_object('node_type', 'SQL', 'query', fut);
END;
$$;

-- The two-operand composers: THEN (~>), JOIN (&), RACE (|).
CREATE OR REPLACE FUNCTION df._pair(node_type text, a text, b text) RETURNS text
LANGUAGE plpgsql STRICT AS $$
BEGIN
    RETURN df._clean_durofut_text(jsonb_build_object(
        'node_type', node_type, 'left_node', df._as_node(a), 'right_node', df._as_node(b)));
END
$$;
