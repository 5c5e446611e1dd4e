-- pgdurable catalog, version 5: monitoring functions (§3.6): list_instances (both
-- overloads), instance_info, instance_executions and metrics. Everything reads through
-- row-level security, so users see their own instances only.

CREATE FUNCTION df._function_name()
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT 'pg_durable::orchestration::execute-function-graph'::text
$$;

CREATE FUNCTION df._check_list_limit(limit_count integer)
RETURNS void LANGUAGE plpgsql STABLE AS $$
DECLARE
    max_limit integer := df._setting('list_instances_max_limit', '1000')::integer;
BEGIN
    IF limit_count IS NULL OR limit_count < 1 THEN
        RAISE EXCEPTION 'limit_count must be at least 1' USING ERRCODE = '22023';
    END IF;
    IF limit_count > max_limit THEN
        RAISE EXCEPTION 'df.list_instances: limit_count (%) exceeds pg_durable.list_instances_max_limit (%); request fewer rows, or use the paginated df.list_instances overload (after_cursor/next_cursor) for large result sets',
            limit_count, max_limit USING ERRCODE = '22023';
    END IF;
END
$$;

-- Instances with their current execution (instances the engine has not picked up yet are
-- omitted, as in pg_durable).
CREATE VIEW df._instance_overview WITH (security_invoker = true) AS
SELECT i.id, i.label, i.status, i.created_at, i.completed_at,
       e.execution_id AS execution_count, e.output
FROM df.instances i
JOIN LATERAL (
    SELECT x.execution_id, x.output FROM df._executions x
    WHERE x.instance_id = i.id ORDER BY x.execution_id DESC LIMIT 1
) e ON true;

CREATE FUNCTION df.list_instances(status_filter text DEFAULT NULL, limit_count integer DEFAULT 100)
RETURNS TABLE (instance_id text, label text, function_name text, status text,
               execution_count bigint, output text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM df._check_list_limit(limit_count);
    RETURN QUERY
    SELECT o.id::text, o.label, df._function_name(), o.status, o.execution_count, o.output
    FROM df._instance_overview o
    WHERE status_filter IS NULL OR o.status = status_filter
    ORDER BY o.created_at DESC, o.id
    LIMIT limit_count;
END
$$;

CREATE FUNCTION df._encode_cursor(created timestamptz, id text)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT encode(convert_to('v1|' || to_char(created, 'YYYY-MM-DD"T"HH24:MI:SS.USOF') || '|' || id,
                             'UTF8'), 'hex')
$$;

CREATE FUNCTION df._decode_cursor(cursor_text text, OUT created timestamptz, OUT id text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    decoded text;
    parts text[];
BEGIN
    IF cursor_text = '' OR length(cursor_text) > 512 OR length(cursor_text) % 2 = 1
       OR cursor_text !~ '^[0-9a-fA-F]+$' THEN
        RAISE EXCEPTION 'df.list_instances: invalid after_cursor' USING ERRCODE = '22023';
    END IF;
    BEGIN
        decoded := convert_from(decode(cursor_text, 'hex'), 'UTF8');
    EXCEPTION WHEN others THEN
        RAISE EXCEPTION 'df.list_instances: invalid after_cursor' USING ERRCODE = '22023';
    END;
    parts := string_to_array(decoded, '|');
    IF array_length(parts, 1) <> 3 OR parts[1] <> 'v1' OR parts[2] = '' OR parts[3] = ''
       OR parts[2] !~ '^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}[+-]\d{2}(:?\d{2})?$' THEN
        RAISE EXCEPTION 'df.list_instances: invalid after_cursor' USING ERRCODE = '22023';
    END IF;
    created := parts[2]::timestamptz;
    id := parts[3];
END
$$;

CREATE FUNCTION df.list_instances(status_filter text, limit_count integer, label_filter text,
                                  after_cursor text DEFAULT NULL)
RETURNS TABLE (instance_id text, label text, function_name text, status text,
               execution_count bigint, output text, created_at timestamptz,
               completed_at timestamptz, next_cursor text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    after_created timestamptz;
    after_id text;
BEGIN
    PERFORM df._check_list_limit(limit_count);
    IF after_cursor IS NOT NULL THEN
        SELECT c.created, c.id INTO after_created, after_id FROM df._decode_cursor(after_cursor) c;
    END IF;
    RETURN QUERY
    WITH page AS (
        SELECT o.*, row_number() OVER (ORDER BY o.created_at DESC, o.id) AS rn
        FROM df._instance_overview o
        WHERE o.created_at IS NOT NULL
          AND (status_filter IS NULL OR o.status = status_filter)
          AND (label_filter IS NULL OR o.label = label_filter)
          AND (after_cursor IS NULL OR o.created_at < after_created
               OR (o.created_at = after_created AND o.id > after_id))
        ORDER BY o.created_at DESC, o.id
        LIMIT limit_count + 1
    ), edge AS (
        SELECT p.created_at, p.id FROM page p WHERE p.rn = limit_count
    ), more AS (
        SELECT count(*) > limit_count AS has_more FROM page
    )
    SELECT p.id::text, p.label, df._function_name(), p.status, p.execution_count, p.output,
           p.created_at, p.completed_at,
           CASE WHEN more.has_more THEN df._encode_cursor(edge.created_at, edge.id) END
    FROM page p CROSS JOIN more LEFT JOIN edge ON true
    WHERE p.rn <= limit_count
    ORDER BY p.rn;
END
$$;

CREATE FUNCTION df.instance_info(instance_id text)
RETURNS TABLE (instance_id text, label text, function_name text, function_version text,
               current_execution_id bigint, status text, output text)
LANGUAGE sql VOLATILE STRICT AS $$
    SELECT o.id::text, o.label, df._function_name(), '1.0.0'::text, o.execution_count,
           o.status, o.output
    FROM df._instance_overview o WHERE o.id = instance_info.instance_id
$$;

CREATE FUNCTION df.instance_executions(instance_id text, limit_count integer DEFAULT 5)
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
           e.output
    FROM df._executions e
    WHERE e.instance_id = instance_executions.instance_id
    ORDER BY e.execution_id DESC
    LIMIT least(limit_count, 10000);
END
$$;

CREATE FUNCTION df.metrics()
RETURNS TABLE (total_instances bigint, running_instances bigint, completed_instances bigint,
               failed_instances bigint, total_executions bigint, total_events bigint)
LANGUAGE sql VOLATILE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT (SELECT count(*) FROM df.instances),
           (SELECT count(*) FROM df.instances WHERE status IN ('pending', 'running')),
           (SELECT count(*) FROM df.instances WHERE status = 'completed'),
           (SELECT count(*) FROM df.instances WHERE status IN ('failed', 'cancelled')),
           (SELECT count(*) FROM df._executions),
           (SELECT coalesce(sum(event_count), 0)::bigint FROM df._executions)
$$;
REVOKE EXECUTE ON FUNCTION df.metrics() FROM PUBLIC;
