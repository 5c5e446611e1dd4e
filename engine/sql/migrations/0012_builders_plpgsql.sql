-- pgdurable catalog, version 12: the builders and operators, with the same results, cheaper
-- to call.
--
-- A LANGUAGE sql function that PostgreSQL cannot inline (a STRICT one whose body is not
-- strict, as jsonb_build_object is not) is read from the catalog and planned again in
-- every statement that calls it, and so are the functions it calls. The composers were
-- such functions, so every operator in `df.start('a' ~> 'b' ~> 'c')` re-read and re-planned
-- the long key-renaming expressions of df._clean_durofut_text. As PL/pgSQL they keep their
-- plans for the session. df._durofut_is_clean loses STRICT, which changes no result (its
-- body gives NULL for NULL) and lets callers inline it.

ALTER FUNCTION df._durofut_is_clean(jsonb) CALLED ON NULL INPUT;

CREATE OR REPLACE FUNCTION df.sql(query text) RETURNS text
LANGUAGE plpgsql STRICT AS $$
BEGIN
    RETURN df._clean_durofut_text(jsonb_build_object('node_type', 'SQL', 'query', query));
END
$$;

-- The two-operand composers: THEN (~>), JOIN (&), RACE (|).
CREATE FUNCTION df._pair(node_type text, a text, b text) RETURNS text
LANGUAGE plpgsql STRICT AS $$
BEGIN
    RETURN df._clean_durofut_text(jsonb_build_object(
        'node_type', node_type, 'left_node', df._as_node(a), 'right_node', df._as_node(b)));
END
$$;

CREATE OR REPLACE FUNCTION df.seq(a text, b text) RETURNS text
LANGUAGE plpgsql STRICT AS $$ BEGIN RETURN df._pair('THEN', a, b); END $$;

CREATE OR REPLACE FUNCTION df.join(a text, b text) RETURNS text
LANGUAGE plpgsql STRICT AS $$ BEGIN RETURN df._pair('JOIN', a, b); END $$;

CREATE OR REPLACE FUNCTION df.join3(a text, b text, c text) RETURNS text
LANGUAGE plpgsql STRICT AS $$
BEGIN
    RETURN df._clean_durofut_text(jsonb_build_object(
        'node_type', 'JOIN', 'left_node', df._as_node(a), 'right_node', df._as_node(b),
        'extra_nodes', jsonb_build_array(df._as_node(c))));
END
$$;

CREATE OR REPLACE FUNCTION df.race(a text, b text) RETURNS text
LANGUAGE plpgsql STRICT AS $$ BEGIN RETURN df._pair('RACE', a, b); END $$;

CREATE OR REPLACE FUNCTION df.if(condition text, then_branch text, else_branch text)
RETURNS text LANGUAGE plpgsql STRICT AS $$
BEGIN
    RETURN df._clean_durofut_text(jsonb_build_object(
        'node_type', 'IF', 'left_node', df._as_node(then_branch),
        'right_node', df._as_node(else_branch), 'condition_node', df._as_node(condition)));
END
$$;

CREATE OR REPLACE FUNCTION df.if_rows(result_name text, then_branch text, else_branch text)
RETURNS text LANGUAGE plpgsql STRICT AS $$
BEGIN
    RETURN df._clean_durofut_text(jsonb_build_object(
        'node_type', 'IF', 'left_node', df._as_node(then_branch),
        'right_node', df._as_node(else_branch),
        'query', '{"condition_type":"result_has_rows","result_name":'
                 || to_json(result_name)::text || '}'));
END
$$;

CREATE OR REPLACE FUNCTION df.if_then_op(condition text, then_branch text) RETURNS text
LANGUAGE plpgsql STRICT AS $$
BEGIN
    RETURN jsonb_build_object('_partial_if', true, 'condition', condition,
                              'then_branch', then_branch)::text;
END
$$;

CREATE OR REPLACE FUNCTION df.loop_prefix_op(body text) RETURNS text
LANGUAGE plpgsql STRICT AS $$
BEGIN
    RETURN df.loop(body);
END
$$;

