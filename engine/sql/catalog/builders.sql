-- pgdurable catalog: the graph builders of pg_durable (spec §3.1) and the functions behind
-- its operators (§3.2, created in operators.sql), emitting byte-identical Durofut JSON.
--
-- The builders are left VOLATILE (the default, as pgrx declares them upstream) so that they
-- run at execution time, where the same-statement helper check (durofut.sql) can see the
-- statement being executed. The composers are PL/pgSQL: a LANGUAGE sql function PostgreSQL
-- cannot inline (a STRICT one whose body is not strict, as jsonb_build_object is not) is
-- read from the catalog and planned again in every statement that calls it, with the
-- functions it calls; PL/pgSQL keeps its plans for the session.

-- =======================================================================================
-- Composers
--
-- Build-time argument errors are raised by the builder itself (so the error's context names
-- it) with SQLSTATE 22023 invalid_parameter_value; invalid Durofut JSON is 22P02. Non-strict
-- builders refuse a NULL required argument (22004) rather than return a NULL graph.
-- =======================================================================================
CREATE OR REPLACE FUNCTION df.sql(query text) RETURNS text
LANGUAGE plpgsql STRICT AS $$
BEGIN
    RETURN df._clean_durofut_text(jsonb_build_object('node_type', 'SQL', 'query', query));
END
$$;

CREATE OR REPLACE FUNCTION df.seq(a text, b text) RETURNS text
LANGUAGE plpgsql STRICT AS $$ BEGIN RETURN df._pair('THEN', a, b); END $$;

-- Names the node itself (overwriting a previous name); `$name` refers to its result.
CREATE OR REPLACE FUNCTION df.as(fut text, name text) RETURNS text
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

-- The condition is an ordinary child node; its result's truthiness picks the branch.
CREATE OR REPLACE FUNCTION df.if(condition text, then_branch text, else_branch text)
RETURNS text LANGUAGE plpgsql STRICT AS $$
BEGIN
    RETURN df._clean_durofut_text(jsonb_build_object(
        'node_type', 'IF', 'left_node', df._as_node(then_branch),
        'right_node', df._as_node(else_branch), 'condition_node', df._as_node(condition)));
END
$$;

-- Tests row_count > 0 of an earlier named result; the name is deliberately not validated.
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

-- With a condition: a do-while loop (the condition runs after each body run). With
-- continue_on_failure (pg_durable 0.2.8, experimental there) a failed body run is recorded
-- and the loop goes on; the flag travels in the LOOP's query, a JSON config (only when set,
-- so other loops keep their envelope).
CREATE OR REPLACE FUNCTION df.loop(body text, condition text DEFAULT NULL,
                                   continue_on_failure boolean DEFAULT false) RETURNS text
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
                ELSE '{}' END
        || CASE WHEN continue_on_failure
                THEN '{"query": "{\"continue_on_failure\":true}"}'::jsonb
                ELSE '{}' END);
END;
$$;

-- A failure policy for one subgraph (pgdurable's own; pg_durable proposes only df.start's):
-- a failing step in `fut` gets up to max_attempts attempts, the nearest df.retry around a
-- step deciding over df.start's policy; a df.timeout in it that expires re-runs its whole
-- subgraph. The config is df._failure_policy's (its checks, its errors).
CREATE OR REPLACE FUNCTION df.retry(fut text, max_attempts integer,
                                    initial_backoff interval DEFAULT '1s',
                                    max_backoff interval DEFAULT '16s') RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    policy jsonb := df._failure_policy('df.retry()', max_attempts, initial_backoff, max_backoff,
                                       'fail');
BEGIN
    IF fut IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'df.retry: fut cannot be NULL';
    END IF;
    policy := coalesce(policy, jsonb_build_object(
        'max_attempts', 1, 'initial_backoff', least(extract(epoch FROM initial_backoff),
                                                    extract(epoch FROM max_backoff)),
        'max_backoff', extract(epoch FROM max_backoff), 'on_failure', 'fail'));
    RETURN df._clean_durofut_text(jsonb_build_object(
        'node_type', 'RETRY', 'left_node', df._as_node(fut),
        'query', df._json_compact(policy - 'on_failure')));
END;
$$;

-- A deadline for one subgraph: if `fut` has not finished `seconds` after it started, it
-- fails with SQLSTATE 57014's text and whatever still runs in it is cancelled (SQL through
-- pg_cancel_backend, HTTP requests dropped).
CREATE OR REPLACE FUNCTION df.timeout(fut text, seconds double precision) RETURNS text
LANGUAGE plpgsql
AS $$
BEGIN
    IF fut IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed',
            MESSAGE = 'df.timeout: fut cannot be NULL';
    END IF;
    IF seconds IS NULL OR NOT (seconds > 0 AND seconds < 1e10) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('invalid seconds %s for df.timeout(): expected a number above 0 and below 10000000000',
                             coalesce(seconds::text, 'NULL'));
    END IF;
    RETURN df._clean_durofut_text(jsonb_build_object(
        'node_type', 'TIMEOUT', 'left_node', df._as_node(fut),
        'query', json_build_object('seconds', seconds)::text));
END;
$$;

-- Compensation (pg_durable's proposal, spec-compensation.md): `forward` runs as usual and
-- its outcome is the node's; if the instance then fails, `undo` runs (forwards that
-- completed are undone in reverse order of completion) and the instance ends compensated.
-- Plain SQL strings are wrapped in both positions. Behind the operator <->.
CREATE OR REPLACE FUNCTION df.with_undo(forward text, undo text) RETURNS text
LANGUAGE plpgsql STRICT AS $$ BEGIN RETURN df._pair('COMPENSATED', forward, undo); END $$;

-- `value` is a literal carried out of the loop, not SQL: it is never auto-wrapped.
CREATE OR REPLACE FUNCTION df.break(value text DEFAULT NULL) RETURNS text
LANGUAGE sql
RETURN df._clean_durofut_text(jsonb_build_object(
    'node_type', 'BREAK',
    'query', '{"break_value":' || coalesce(to_json(value)::text, 'null') || '}'));

-- =======================================================================================
-- Leaf steps: timers, schedules (cron.sql checks them), signals, HTTP
-- =======================================================================================

CREATE OR REPLACE FUNCTION df.sleep(seconds bigint) RETURNS text
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

CREATE OR REPLACE FUNCTION df.wait_for_schedule(cron_expr text) RETURNS text
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

CREATE OR REPLACE FUNCTION df.wait_for_signal(name text, timeout_seconds integer DEFAULT NULL)
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
CREATE OR REPLACE FUNCTION df._http_url_problem(url text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN strpos(url, '{') = 0
                 AND lower(split_part(url, '://', 1)) NOT IN ('http', 'https')
            THEN format('Blocked: unsupported URL scheme ''%s''. Only http and https are allowed.',
                        lower(split_part(url, '://', 1))) END;

-- The arguments df.http and df.http_multipart share, with their defaults applied (NULL
-- for a defaulted argument means its default), and what the builder must refuse first in
-- them (the SQLSTATE and message it raises), or NULLs: a NULL or blocked url, a method not
-- in `methods` (`method_error` names it), a timeout that is not positive.
CREATE OR REPLACE FUNCTION df._http_request(builder text, url text, method text,
                                            timeout_seconds integer, methods text[],
                                            method_error text, OUT verb text,
                                            OUT timeout integer, OUT code text,
                                            OUT message text)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    verb := upper(coalesce(method, 'POST'));
    timeout := coalesce(timeout_seconds, 30);
    IF url IS NULL THEN
        code := '22004';  -- null_value_not_allowed
        message := builder || ': url cannot be NULL';
        RETURN;
    END IF;
    message := CASE
        WHEN df._http_url_problem(url) IS NOT NULL THEN df._http_url_problem(url)
        WHEN NOT (verb = ANY (methods)) THEN format(method_error, verb)
        WHEN timeout <= 0 THEN 'Timeout must be positive'
    END;
    code := CASE WHEN message IS NOT NULL THEN '22023' END;  -- invalid_parameter_value
END;
$$;

-- An HTTP or HTTP_MULTIPART node: its configuration in pg_durable's key order, `payload`
-- (',"body":...' or ',"parts":...') after the method.
CREATE OR REPLACE FUNCTION df._http_node(node_type text, url text, verb text, payload text,
                                         headers jsonb, timeout integer)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN df._clean_durofut_text(jsonb_build_object('node_type', node_type, 'query',
    '{"url":' || to_json(url)::text || ',"method":' || to_json(verb)::text || payload
    || ',"headers":' || coalesce(df._json_compact(headers), 'null')
    || ',"timeout_seconds":' || timeout || '}'));

-- With --http-disable (published by the engine as http_enabled = off) the HTTP builders
-- refuse, with the texts of pg_durable built without its HTTP feature, before any check.
CREATE OR REPLACE FUNCTION df._refuse_if_http_disabled(builder text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF df._setting('http_enabled', 'on') = 'off' THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = builder || '() is disabled. Rebuild with the ''http-allow-azure-domains'' '
                      'Cargo feature to enable outbound HTTP requests.';
    END IF;
END;
$$;

-- NULL for a defaulted argument means its default.
CREATE OR REPLACE FUNCTION df.http(url text, method text DEFAULT 'POST', body text DEFAULT NULL,
                        headers jsonb DEFAULT NULL, timeout_seconds integer DEFAULT 30)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    request record := df._http_request('df.http', url, method, timeout_seconds,
        '{GET,POST,PUT,DELETE,PATCH}',
        'Invalid HTTP method: %s. Must be GET, POST, PUT, DELETE, or PATCH');
BEGIN
    PERFORM df._refuse_if_http_disabled('df.http');
    IF request.message IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = request.code, MESSAGE = request.message;
    END IF;
    RETURN df._http_node('HTTP', url, request.verb,
                         ',"body":' || coalesce(to_json(body)::text, 'null'), headers,
                         request.timeout);
END;
$$;
REVOKE EXECUTE ON FUNCTION df.http(text, text, text, jsonb, integer) FROM PUBLIC;

CREATE OR REPLACE FUNCTION df.http_multipart(url text, method text DEFAULT 'POST', parts jsonb DEFAULT NULL,
                                  headers jsonb DEFAULT NULL,
                                  timeout_seconds integer DEFAULT 30)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    request record := df._http_request('df.http_multipart', url, method, timeout_seconds,
        '{POST,PUT,PATCH}', 'Invalid HTTP method for multipart: %s. Must be POST, PUT, or PATCH');
BEGIN
    PERFORM df._refuse_if_http_disabled('df.http_multipart');
    IF request.message IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = request.code, MESSAGE = request.message;
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
    RETURN df._http_node('HTTP_MULTIPART', url, request.verb,
                         ',"parts":' || df._json_compact(parts), headers, request.timeout);
END;
$$;
REVOKE EXECUTE ON FUNCTION df.http_multipart(text, text, jsonb, jsonb, integer) FROM PUBLIC;

-- =======================================================================================
-- Operators (spec §3.2)
-- =======================================================================================

CREATE OR REPLACE FUNCTION df.as_op(fut text, name text) RETURNS text
LANGUAGE sql STRICT
RETURN df.as(fut, name);

-- `cond ?> then` is only half an IF: it is completed by `!> else`. Its operands are passed
-- through untouched, in jsonb's text form exactly as pg_durable returns it.
CREATE OR REPLACE FUNCTION df.if_then_op(condition text, then_branch text) RETURNS text
LANGUAGE plpgsql STRICT AS $$
BEGIN
    RETURN jsonb_build_object('_partial_if', true, 'condition', condition,
                              'then_branch', then_branch)::text;
END
$$;

CREATE OR REPLACE FUNCTION df.if_else_op(partial_if text, else_branch text) RETURNS text
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

CREATE OR REPLACE FUNCTION df.loop_prefix_op(body text) RETURNS text
LANGUAGE plpgsql STRICT AS $$
BEGIN
    RETURN df.loop(body);
END
$$;
