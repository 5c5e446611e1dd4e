-- pgdurable catalog, version 2: the graph builders and operators of pg_durable (spec §3.1,
-- §3.2) emitting byte-identical Durofut JSON (spec §4).
--
-- Everything here is pure: no table is read or written. The builders are left VOLATILE (the
-- default, as pgrx declares them upstream) so that they run at execution time, where the
-- same-statement helper check below can see the statement being executed.
--
-- No function here carries a SET clause: df._mark_helper_result stores its mark with
-- set_config(..., is_local => true), which a SET clause on any enclosing function would undo
-- at that function's exit. Bodies qualify df.* calls; built-ins resolve through pg_catalog,
-- which PostgreSQL searches first unless a caller deliberately places it later.

-- =======================================================================================
-- Durofut model: node types, parsing with serde-like errors, canonical serialization
-- =======================================================================================

-- The twelve node types, in pg_durable's order (also used in its error messages).
CREATE FUNCTION df._node_types() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ARRAY['SQL', 'THEN', 'IF', 'JOIN', 'LOOP', 'BREAK', 'RACE', 'SLEEP', 'WAIT_SCHEDULE',
             'HTTP', 'HTTP_MULTIPART', 'SIGNAL'];

-- Compact JSON text of any jsonb value (serde_json's output: no spaces, keys in jsonb
-- order). jsonb::text puts a space after ':' and ',', which pg_durable never emits.
CREATE FUNCTION df._json_compact(value jsonb) RETURNS text
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
CREATE FUNCTION df._serde_unexpected(value jsonb) RETURNS text
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

-- Deserialize one Durofut JSON object the way pg_durable's serde model does, recursively,
-- and return it normalized: only the seven model fields, JSON nulls and empty extra_nodes
-- dropped. Unknown keys are ignored (serde's default). node_type may be any string here;
-- an unknown type inside a graph is reported later by df.start's graph validation.
-- Errors carry serde-like messages (without serde_json's "at line L column C").
CREATE FUNCTION df._durofut_node(node jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    result jsonb := '{}';
    field text;
    child jsonb;
    extras jsonb;
    problem text;
BEGIN
    <<parse>>
    BEGIN
        IF NOT node ? 'node_type' THEN
            problem := 'missing field `node_type`';
            EXIT parse;
        END IF;
        -- Plain string fields (node_type is not optional: null is a type error).
        FOREACH field IN ARRAY ARRAY['node_type', 'query', 'result_name'] LOOP
            child := node -> field;
            CONTINUE WHEN child IS NULL
                OR (jsonb_typeof(child) = 'null' AND field <> 'node_type');
            IF jsonb_typeof(child) <> 'string' THEN
                problem := format('invalid type: %s, expected a string',
                                  df._serde_unexpected(child));
                EXIT parse;
            END IF;
            result := result || jsonb_build_object(field, child);
        END LOOP;
        -- Child nodes (a child's own errors are raised by the recursive call).
        FOREACH field IN ARRAY ARRAY['left_node', 'right_node', 'condition_node'] LOOP
            child := node -> field;
            CONTINUE WHEN child IS NULL OR jsonb_typeof(child) = 'null';
            IF jsonb_typeof(child) <> 'object' THEN
                problem := CASE field
                    WHEN 'condition_node' THEN 'condition_node must be a Durofut JSON object'
                    ELSE 'Durofut children must be JSON objects' END;
                EXIT parse;
            END IF;
            result := result || jsonb_build_object(field, df._durofut_node(child));
        END LOOP;
        child := coalesce(node -> 'extra_nodes', 'null');
        IF jsonb_typeof(child) = 'null' THEN
            NULL;  -- absent
        ELSIF jsonb_typeof(child) <> 'array' THEN
            problem := format('invalid type: %s, expected a sequence',
                              df._serde_unexpected(child));
        ELSIF EXISTS (SELECT FROM jsonb_array_elements(child) AS e
                      WHERE jsonb_typeof(e) <> 'object') THEN
            problem := 'extra_nodes entries must be Durofut JSON objects';
        ELSIF jsonb_array_length(child) > 0 THEN
            SELECT jsonb_agg(df._durofut_node(e.value) ORDER BY e.ord) INTO extras
              FROM jsonb_array_elements(child) WITH ORDINALITY AS e(value, ord);
            result := result || jsonb_build_object('extra_nodes', extras);
        END IF;
    END parse;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_text_representation',
            MESSAGE = 'Invalid Durofut JSON: failed to deserialize workflow step: ' || problem;
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
CREATE FUNCTION df._durofut_is_clean(node jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
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

-- df._durofut_text for a tree known to be clean (df._durofut_is_clean), e.g. one a builder
-- assembled from df._as_node results. Node-by-node serialization in PL/pgSQL would cost
-- O(depth x size) per composition; instead the whole tree goes through jsonb's own output:
--   1. rename the seven keys to "a".."g", whose jsonb order (length, then bytes) is the
--      struct order, and let ::jsonb re-sort every object at C speed;
--   2. rename them back, dropping the blanks jsonb's text puts after ': ' and ', '.
-- Literal replace() is exact: inside a JSON string every '"' is escaped, so '{"' and ', "'
-- occur only at real token boundaries, and in a clean tree the only separators are ': '
-- after a key, ', ' before a key and ', ' between the objects of extra_nodes. jsonb escapes
-- strings exactly as serde_json does (", \, \b \f \n \r \t, other controls as \u00xx,
-- non-ASCII raw).
CREATE FUNCTION df._clean_durofut_text(node jsonb) RETURNS text
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

-- The canonical text of a Durofut node: compact, fields in pg_durable's struct order
-- (node_type, left_node, right_node, condition_node, extra_nodes, query, result_name),
-- absent ones omitted, children nested and serialized the same way. Identical graphs
-- therefore always give identical text, whatever spacing or key order they arrived with.
CREATE FUNCTION df._durofut_text(node jsonb) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN df._clean_durofut_text(CASE WHEN df._durofut_is_clean(node) THEN node
                                   ELSE df._durofut_node(node) END);

-- =======================================================================================
-- Auto-wrap, and the "same statement helper" guard
-- =======================================================================================

-- A stamp identifying the current top-level statement of this transaction.
CREATE FUNCTION df._statement_stamp() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN extract(epoch FROM statement_timestamp())::text;

-- Called by df.setvar / df.unsetvar / df.clearvars / df.await_instance with the plain text
-- they are about to return. Records (helper, text, statement) transaction-locally so that a
-- composer handed that very text in the same statement can refuse it (pg_durable §3.1): the
-- user almost certainly meant the helper to run as a workflow step, which it cannot.
-- The caller must not have a SET clause, or the transaction-local setting is undone when it
-- returns.
CREATE FUNCTION df._mark_helper_result(helper text, result text) RETURNS void
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
CREATE FUNCTION df._helper_result_of(fut text) RETURNS text
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
CREATE FUNCTION df._json_object_or_null(fut text) RETURNS jsonb
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
CREATE FUNCTION df._as_node(fut text) RETURNS jsonb
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

-- =======================================================================================
-- Composers
--
-- Build-time argument errors are raised by the builder itself (so the error's context names
-- it) with SQLSTATE 22023 invalid_parameter_value; invalid Durofut JSON is 22P02. Non-strict
-- builders refuse a NULL required argument (22004) rather than return a NULL graph.
-- =======================================================================================

-- A SQL step; the query is kept verbatim (never parsed as a Durofut).
CREATE FUNCTION df.sql(query text) RETURNS text
LANGUAGE sql STRICT
RETURN df._clean_durofut_text(jsonb_build_object('node_type', 'SQL', 'query', query));

CREATE FUNCTION df.seq(a text, b text) RETURNS text
LANGUAGE sql STRICT
RETURN df._clean_durofut_text(jsonb_build_object(
    'node_type', 'THEN', 'left_node', df._as_node(a), 'right_node', df._as_node(b)));

-- Names the node itself (overwriting a previous name); `$name` refers to its result.
CREATE FUNCTION df.as(fut text, name text) RETURNS text
LANGUAGE plpgsql STRICT
AS $$
BEGIN
    IF name = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'df.as: result name cannot be empty';
    ELSIF name COLLATE "C" !~ '^[a-zA-Z_][a-zA-Z0-9_]*$' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('df.as: result name ''%s'' is not a valid identifier — '
                             'must match [a-zA-Z_][a-zA-Z0-9_]*', name);
    END IF;
    RETURN df._clean_durofut_text(df._as_node(fut) || jsonb_build_object('result_name', name));
END;
$$;

CREATE FUNCTION df.join(a text, b text) RETURNS text
LANGUAGE sql STRICT
RETURN df._clean_durofut_text(jsonb_build_object(
    'node_type', 'JOIN', 'left_node', df._as_node(a), 'right_node', df._as_node(b)));

CREATE FUNCTION df.join3(a text, b text, c text) RETURNS text
LANGUAGE sql STRICT
RETURN df._clean_durofut_text(jsonb_build_object(
    'node_type', 'JOIN', 'left_node', df._as_node(a), 'right_node', df._as_node(b),
    'extra_nodes', jsonb_build_array(df._as_node(c))));

CREATE FUNCTION df.race(a text, b text) RETURNS text
LANGUAGE sql STRICT
RETURN df._clean_durofut_text(jsonb_build_object(
    'node_type', 'RACE', 'left_node', df._as_node(a), 'right_node', df._as_node(b)));

-- The condition is an ordinary child node; its result's truthiness picks the branch.
CREATE FUNCTION df.if(condition text, then_branch text, else_branch text) RETURNS text
LANGUAGE sql STRICT
RETURN df._clean_durofut_text(jsonb_build_object(
    'node_type', 'IF', 'left_node', df._as_node(then_branch),
    'right_node', df._as_node(else_branch), 'condition_node', df._as_node(condition)));

-- Tests row_count > 0 of an earlier named result; the name is deliberately not validated.
CREATE FUNCTION df.if_rows(result_name text, then_branch text, else_branch text) RETURNS text
LANGUAGE sql STRICT
RETURN df._clean_durofut_text(jsonb_build_object(
    'node_type', 'IF', 'left_node', df._as_node(then_branch),
    'right_node', df._as_node(else_branch),
    'query', '{"condition_type":"result_has_rows","result_name":'
             || to_json(result_name)::text || '}'));

-- With a condition: a do-while loop (the condition runs after each body run).
CREATE FUNCTION df.loop(body text, condition text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql
AS $$
BEGIN
    IF body IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'df.loop: body cannot be NULL';
    END IF;
    RETURN df._clean_durofut_text(
        jsonb_build_object('node_type', 'LOOP', 'left_node', df._as_node(body))
        || CASE WHEN condition IS NOT NULL
                THEN jsonb_build_object('condition_node', df._as_node(condition))
                ELSE '{}' END);
END;
$$;

-- `value` is a literal carried out of the loop, not SQL: it is never auto-wrapped.
CREATE FUNCTION df.break(value text DEFAULT NULL) RETURNS text
LANGUAGE sql
RETURN df._clean_durofut_text(jsonb_build_object(
    'node_type', 'BREAK',
    'query', '{"break_value":' || coalesce(to_json(value)::text, 'null') || '}'));

-- =======================================================================================
-- Leaf steps: timers, schedules, signals, HTTP
-- =======================================================================================

CREATE FUNCTION df.sleep(seconds bigint) RETURNS text
LANGUAGE plpgsql STRICT
AS $$
BEGIN
    IF seconds < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'Sleep duration must be non-negative';
    END IF;
    RETURN df._clean_durofut_text(jsonb_build_object('node_type', 'SLEEP', 'query', seconds::text));
END;
$$;

-- Cron month and day names (pg_durable's cron crate: case-insensitive, short or long,
-- Sunday = 1). NULL when `name` is not one.
CREATE FUNCTION df._cron_name_ordinal(unit text, name text) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE unit
    WHEN 'Months' THEN CASE lower(name)
        WHEN 'jan' THEN 1 WHEN 'january' THEN 1 WHEN 'feb' THEN 2 WHEN 'february' THEN 2
        WHEN 'mar' THEN 3 WHEN 'march' THEN 3 WHEN 'apr' THEN 4 WHEN 'april' THEN 4
        WHEN 'may' THEN 5 WHEN 'jun' THEN 6 WHEN 'june' THEN 6 WHEN 'jul' THEN 7
        WHEN 'july' THEN 7 WHEN 'aug' THEN 8 WHEN 'august' THEN 8 WHEN 'sep' THEN 9
        WHEN 'september' THEN 9 WHEN 'oct' THEN 10 WHEN 'october' THEN 10
        WHEN 'nov' THEN 11 WHEN 'november' THEN 11 WHEN 'dec' THEN 12
        WHEN 'december' THEN 12 END
    WHEN 'Days of Week' THEN CASE lower(name)
        WHEN 'sun' THEN 1 WHEN 'sunday' THEN 1 WHEN 'mon' THEN 2 WHEN 'monday' THEN 2
        WHEN 'tue' THEN 3 WHEN 'tues' THEN 3 WHEN 'tuesday' THEN 3 WHEN 'wed' THEN 4
        WHEN 'wednesday' THEN 4 WHEN 'thu' THEN 5 WHEN 'thurs' THEN 5
        WHEN 'thursday' THEN 5 WHEN 'fri' THEN 6 WHEN 'friday' THEN 6 WHEN 'sat' THEN 7
        WHEN 'saturday' THEN 7 END
END;

-- The ordinal a cron value token stands for, or the reason it is not acceptable.
-- Returns (ordinal, NULL) or (NULL, reason).
CREATE FUNCTION df._cron_value(token text, unit text, lo integer, hi integer,
                               OUT ordinal integer, OUT reason text)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    IF token ~ '^[0-9]+$' THEN
        IF length(token) > 9 OR token::integer > hi THEN
            reason := format('%s must be less than or equal to %s. (''%s'' specified.)',
                             unit, hi, token);
        ELSIF token::integer < lo THEN
            reason := format('%s must be greater than or equal to %s. (''%s'' specified.)',
                             unit, lo, token);
        ELSE
            ordinal := token::integer;
        END IF;
    ELSIF token ~ '^[A-Za-z]+$' THEN
        IF unit NOT IN ('Months', 'Days of Week') THEN
            reason := format('The ''%s'' field does not support using names. ''%s'' specified.',
                             unit, token);
        ELSE
            ordinal := df._cron_name_ordinal(unit, token);
            IF ordinal IS NULL THEN
                reason := CASE unit WHEN 'Months'
                    THEN format('''%s'' is not a valid month name.', token)
                    ELSE format('''%s'' is not a valid day of the week.', token) END;
            END IF;
        END IF;
    ELSE
        reason := format('cannot parse ''%s'' in the %s field', token, unit);
    END IF;
END;
$$;

-- Why one cron field is invalid, or NULL. Grammar of the cron crate: a comma list of items;
-- an item is `*`, `?` (day fields only), N, N-M, a name, name-name, optionally followed
-- by `/step` (not after a lone name); N/step means N through the field's maximum.
CREATE FUNCTION df._cron_field_error(field text, unit text, lo integer, hi integer)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    item text;
    base text;
    step text;
    bounds text[];
    low_end record;
    high_end record;
BEGIN
    FOREACH item IN ARRAY string_to_array(field, ',') LOOP
        IF item !~ '^[^/]+(/[^/]*)?$' THEN
            RETURN format('cannot parse ''%s'' in the %s field', item, unit);
        END IF;
        base := split_part(item, '/', 1);
        step := nullif(substr(item, length(base) + 1), '');
        IF step IS NOT NULL THEN
            step := substr(step, 2);
            IF step !~ '^[0-9]+$' THEN
                RETURN format('cannot parse ''%s'' in the %s field', item, unit);
            ELSIF step ~ '^0+$' THEN
                RETURN 'range step cannot be zero';
            ELSIF length(step) > 9 OR step::integer > hi THEN
                RETURN format('%s step must be between 1 and %s. (''%s'' specified.)',
                              unit, hi, step);
            ELSIF base ~ '^[A-Za-z]+$' THEN
                RETURN format('cannot parse ''%s'' in the %s field', item, unit);
            END IF;
        END IF;
        CONTINUE WHEN base = '*'
            OR (base = '?' AND unit IN ('Days of Month', 'Days of Week'));
        bounds := string_to_array(base, '-');
        IF cardinality(bounds) > 2 OR '' = ANY (bounds)
           OR (cardinality(bounds) = 2
               AND NOT (base ~ '^[0-9]+-[0-9]+$' OR base ~ '^[A-Za-z]+-[A-Za-z]+$')) THEN
            RETURN format('cannot parse ''%s'' in the %s field', item, unit);
        END IF;
        low_end := df._cron_value(bounds[1], unit, lo, hi);
        IF cardinality(bounds) = 1 THEN
            IF low_end.reason IS NOT NULL THEN
                RETURN low_end.reason;
            END IF;
            CONTINUE;
        END IF;
        high_end := df._cron_value(bounds[2], unit, lo, hi);
        IF base ~ '^[A-Za-z]' THEN
            -- Names must exist; then the range must be in order.
            IF coalesce(low_end.reason, high_end.reason) IS NOT NULL THEN
                RETURN coalesce(low_end.reason, high_end.reason);
            ELSIF low_end.ordinal > high_end.ordinal THEN
                RETURN format('Invalid named range for %s: %s', unit, base);
            END IF;
        ELSIF low_end.reason IS NOT NULL OR high_end.reason IS NOT NULL
              OR low_end.ordinal > high_end.ordinal THEN
            RETURN format('Invalid range for %s: %s', unit, base);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

-- Why a pg_durable cron expression is invalid, or NULL when it is valid. pg_durable parses
-- '0 ' || expr with the Rust cron crate, so 5 fields are `min hour dom month dow` (second 0)
-- and 6 fields add a year; day-of-week numbers are 1-7 with 1 = Sunday, as in that crate.
CREATE FUNCTION df._cron_error(cron_expr text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    fields text[] := regexp_split_to_array(
        regexp_replace(cron_expr, '^[[:space:]]+|[[:space:]]+$', '', 'g'), '[[:space:]]+');
    units text[] := ARRAY['Minutes', 'Hours', 'Days of Month', 'Months', 'Days of Week',
                          'Years'];
    lows integer[] := ARRAY[0, 0, 1, 1, 1, 1970];
    highs integer[] := ARRAY[59, 23, 31, 12, 7, 2100];
    reason text;
BEGIN
    IF fields = ARRAY[''] THEN
        fields := '{}';
    END IF;
    IF cardinality(fields) NOT IN (5, 6) THEN
        RETURN format('expected 5 fields (minute hour day-of-month month day-of-week) '
                      'or 6 (with a year), found %s', cardinality(fields));
    END IF;
    FOR i IN 1 .. cardinality(fields) LOOP
        reason := df._cron_field_error(fields[i], units[i], lows[i], highs[i]);
        IF reason IS NOT NULL THEN
            RETURN reason;
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE FUNCTION df.wait_for_schedule(cron_expr text) RETURNS text
LANGUAGE plpgsql STRICT
AS $$
DECLARE
    reason text := df._cron_error(cron_expr);
BEGIN
    IF reason IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('Invalid cron expression ''%s'': %s', cron_expr, reason);
    END IF;
    RETURN df._clean_durofut_text(jsonb_build_object('node_type', 'WAIT_SCHEDULE',
        'query', '{"cron_expr":' || to_json(cron_expr)::text || '}'));
END;
$$;

CREATE FUNCTION df.wait_for_signal(name text, timeout_seconds integer DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
AS $$
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'df.wait_for_signal: name cannot be NULL';
    ELSIF name = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'Signal name cannot be empty';
    ELSIF timeout_seconds <= 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'Timeout must be positive';
    END IF;
    RETURN df._clean_durofut_text(jsonb_build_object('node_type', 'SIGNAL',
        'query', '{"signal_name":' || to_json(name)::text || ',"timeout_seconds":'
                 || coalesce(timeout_seconds::text, 'null') || '}'));
END;
$$;

-- Why an HTTP URL is refused at build time, or NULL. A URL holding a `{` is a template
-- substituted at run time, so only the run-time check applies to it. Without '://' the
-- whole text is the "scheme" (a bare `$url` is therefore refused, as in pg_durable).
CREATE FUNCTION df._http_url_problem(url text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN strpos(url, '{') = 0
                 AND lower(split_part(url, '://', 1)) NOT IN ('http', 'https')
            THEN format('Blocked: unsupported URL scheme ''%s''. Only http and https are allowed.',
                        lower(split_part(url, '://', 1))) END;

-- pgdurable performs HTTP itself, so unlike a pg_durable build without the HTTP feature
-- these are never "disabled". NULL for a defaulted argument means its default.
CREATE FUNCTION df.http(url text, method text DEFAULT 'POST', body text DEFAULT NULL,
                        headers jsonb DEFAULT NULL, timeout_seconds integer DEFAULT 30)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    verb text := upper(coalesce(method, 'POST'));
    timeout integer := coalesce(timeout_seconds, 30);
BEGIN
    IF url IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'df.http: url cannot be NULL';
    ELSIF df._http_url_problem(url) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = df._http_url_problem(url);
    ELSIF verb NOT IN ('GET', 'POST', 'PUT', 'DELETE', 'PATCH') THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('Invalid HTTP method: %s. Must be GET, POST, PUT, DELETE, or PATCH',
                             verb);
    ELSIF timeout <= 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'Timeout must be positive';
    END IF;
    RETURN df._clean_durofut_text(jsonb_build_object('node_type', 'HTTP', 'query',
        '{"url":' || to_json(url)::text
        || ',"method":' || to_json(verb)::text
        || ',"body":' || coalesce(to_json(body)::text, 'null')
        || ',"headers":' || coalesce(df._json_compact(headers), 'null')
        || ',"timeout_seconds":' || timeout || '}'));
END;
$$;

CREATE FUNCTION df.http_multipart(url text, method text DEFAULT 'POST', parts jsonb DEFAULT NULL,
                                  headers jsonb DEFAULT NULL,
                                  timeout_seconds integer DEFAULT 30)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    verb text := upper(coalesce(method, 'POST'));
    timeout integer := coalesce(timeout_seconds, 30);
BEGIN
    IF url IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'df.http_multipart: url cannot be NULL';
    ELSIF df._http_url_problem(url) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = df._http_url_problem(url);
    ELSIF verb NOT IN ('POST', 'PUT', 'PATCH') THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('Invalid HTTP method for multipart: %s. Must be POST, PUT, or PATCH',
                             verb);
    ELSIF timeout <= 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'Timeout must be positive';
    ELSIF parts IS NULL OR jsonb_typeof(parts) = 'null' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'parts is required and cannot be NULL';
    ELSIF jsonb_typeof(parts) <> 'array'
          OR EXISTS (SELECT FROM jsonb_array_elements(parts) AS p
                     WHERE jsonb_typeof(p) <> 'object') THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'parts must be a JSON array of part objects';
    ELSIF jsonb_array_length(parts) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'parts must contain at least one part';
    END IF;
    RETURN df._clean_durofut_text(jsonb_build_object('node_type', 'HTTP_MULTIPART', 'query',
        '{"url":' || to_json(url)::text
        || ',"method":' || to_json(verb)::text
        || ',"parts":' || df._json_compact(parts)
        || ',"headers":' || coalesce(df._json_compact(headers), 'null')
        || ',"timeout_seconds":' || timeout || '}'));
END;
$$;

-- Outbound HTTP is a privilege (spec §2.6): granted per role by df.grant_usage.
REVOKE EXECUTE ON FUNCTION df.http(text, text, text, jsonb, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION df.http_multipart(text, text, jsonb, jsonb, integer) FROM PUBLIC;

-- =======================================================================================
-- Operators (spec §3.2)
-- =======================================================================================

CREATE FUNCTION df.as_op(fut text, name text) RETURNS text
LANGUAGE sql STRICT
RETURN df.as(fut, name);

-- `cond ?> then` is only half an IF: it is completed by `!> else`. Its operands are passed
-- through untouched, in jsonb's text form exactly as pg_durable returns it.
CREATE FUNCTION df.if_then_op(condition text, then_branch text) RETURNS text
LANGUAGE sql STRICT
RETURN jsonb_build_object('_partial_if', true, 'condition', condition,
                          'then_branch', then_branch)::text;

CREATE FUNCTION df.if_else_op(partial_if text, else_branch text) RETURNS text
LANGUAGE plpgsql STRICT
AS $$
DECLARE
    partial jsonb := partial_if::jsonb;  -- a non-JSON left side fails with jsonb's own error
BEGIN
    IF partial ->> '_partial_if' IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'Invalid if-then-else: left side of !> must be a ?> expression';
    END IF;
    RETURN df.if(partial ->> 'condition', partial ->> 'then_branch', else_branch);
END;
$$;

CREATE FUNCTION df.loop_prefix_op(body text) RETURNS text
LANGUAGE sql STRICT
RETURN df.loop(body);

-- pg_durable installs its operators into pg_catalog (a superuser-only extension), so they
-- resolve under any search_path. pgdurable must install without superuser (managed
-- services' admin roles are not superusers), so the operators live in schema public, which
-- every database has and the default search_path ("$user", public) contains; their
-- functions stay in df. pg_dump also keeps them (it skips pg_catalog). A session whose
-- search_path omits public can write OPERATOR(public.~>) or call the df.* functions.
--
-- None of these shadows a built-in: there is no built-in text ~> text, |=>, ?>, !>, and
-- the built-in &, | (integers, bit, inet, macaddr) and binary @> (arrays, jsonb, ranges,
-- geometry) keep their exact-type matches; only untyped literals now resolve to text,
-- where they were ambiguous (an error) before.
CREATE OPERATOR public.~> (LEFTARG = text, RIGHTARG = text, FUNCTION = df.seq);
CREATE OPERATOR public.|=> (LEFTARG = text, RIGHTARG = text, FUNCTION = df.as_op);
CREATE OPERATOR public.& (LEFTARG = text, RIGHTARG = text, FUNCTION = df.join);
CREATE OPERATOR public.| (LEFTARG = text, RIGHTARG = text, FUNCTION = df.race);
CREATE OPERATOR public.?> (LEFTARG = text, RIGHTARG = text, FUNCTION = df.if_then_op);
CREATE OPERATOR public.!> (LEFTARG = text, RIGHTARG = text, FUNCTION = df.if_else_op);
CREATE OPERATOR public.@> (RIGHTARG = text, FUNCTION = df.loop_prefix_op);
