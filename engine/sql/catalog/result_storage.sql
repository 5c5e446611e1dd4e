-- pgdurable catalog: a large result stored once. df.nodes.result (jsonb, what users read)
-- always has it; above 64 kB df._node_state keeps only the column names of an SQL result
-- instead of its column-ordered text, which is rebuilt from df.nodes.result when the engine
-- loads the instance, and only when the rebuild gives it back exactly. The same goes for
-- the output of a completed execution (df._executions.output).

-- An SQL result's compact text from its jsonb, each row's keys in the order `cols` gives
-- (one pass over the rows, with one expression per column built for these columns).
CREATE OR REPLACE FUNCTION df._rows_text(result jsonb, cols text[]) RETURNS text
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
CREATE OR REPLACE FUNCTION df._first_row_keys(raw text) RETURNS text[]
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

-- A row about to be written (`new_row`, NEW of the triggers below) with its SQL result
-- text `raw` (in the field `text_field`) replaced by its column names (in `columns_field`)
-- when `stored`, the result's jsonb, gives the text back exactly; otherwise unchanged.
CREATE OR REPLACE FUNCTION df._without_rebuildable_text(new_row anyelement, raw text,
                                                        stored jsonb, text_field text,
                                                        columns_field text)
RETURNS anyelement LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    cols text[] := df._first_row_keys(raw);
BEGIN
    IF df._rows_text(stored, cols) IS DISTINCT FROM raw THEN
        RETURN new_row;
    END IF;
    RETURN jsonb_populate_record(new_row,
                                 jsonb_build_object(text_field, NULL, columns_field, cols));
END
$$;
REVOKE EXECUTE ON FUNCTION df._without_rebuildable_text(anyelement, text, jsonb, text, text)
    FROM PUBLIC;

-- Before a large result text is written to _node_state: keep its column names instead when
-- the node's jsonb result (written just before, in the same transaction) gives it back.
CREATE OR REPLACE FUNCTION df._store_result_once() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
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
    RETURN df._without_rebuildable_text(NEW, NEW.raw_result, stored, 'raw_result',
                                        'result_columns');
END
$$;
REVOKE EXECUTE ON FUNCTION df._store_result_once() FROM PUBLIC;

-- Before a completed execution's large output is written: keep its column names instead
-- when the root node's jsonb result (written earlier in the same df._apply_plan) gives it
-- back.
CREATE OR REPLACE FUNCTION df._store_output_once() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    stored jsonb;
BEGIN
    IF left(NEW.output, 10) <> '{"rows":[{' THEN
        RETURN NEW;
    END IF;
    SELECT n.result INTO stored FROM df.instances i
    JOIN df.nodes n ON n.instance_id = i.id AND n.id = i.root_node
    WHERE i.id = NEW.instance_id;
    RETURN df._without_rebuildable_text(NEW, NEW.output, stored, 'output', 'output_columns');
END
$$;
REVOKE EXECUTE ON FUNCTION df._store_output_once() FROM PUBLIC;

CREATE OR REPLACE TRIGGER node_state_store_result_once
    BEFORE INSERT OR UPDATE OF raw_result ON df._node_state
    FOR EACH ROW WHEN (length(NEW.raw_result) > 65536)
    EXECUTE FUNCTION df._store_result_once();
CREATE OR REPLACE TRIGGER executions_store_output_once
    BEFORE INSERT OR UPDATE OF output ON df._executions
    FOR EACH ROW WHEN (NEW.status = 'Completed' AND length(NEW.output) > 65536)
    EXECUTE FUNCTION df._store_output_once();
