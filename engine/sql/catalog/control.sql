-- pgdurable catalog: control functions (§3.4) and variables (§3.5), with pg_durable's
-- names, signatures and messages.
--
-- status/result are VOLATILE so that each call sees the engine's latest commits, as
-- pg_durable's do (a STABLE function would reuse the calling statement's snapshot).

-- ---------------------------------------------------------------------------------------
-- Control (§3.4)
-- ---------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION df.status(instance_id text)
RETURNS text LANGUAGE plpgsql VOLATILE STRICT AS $$
BEGIN
    RETURN (SELECT i.status FROM df.instances i WHERE i.id = status.instance_id);
END
$$;

CREATE OR REPLACE FUNCTION df.result(instance_id text)
RETURNS text LANGUAGE sql VOLATILE STRICT AS $$
    SELECT n.result::text
    FROM df.instances i JOIN df.nodes n ON n.instance_id = i.id AND n.id = i.root_node
    WHERE i.id = result.instance_id AND n.status = 'completed'
$$;

CREATE OR REPLACE FUNCTION df.cancel(instance_id text, reason text DEFAULT 'Cancelled by user')
RETURNS text LANGUAGE plpgsql STRICT AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM df.instances i WHERE i.id = cancel.instance_id) THEN
        RAISE EXCEPTION 'Instance not found or access denied: %', instance_id
            USING ERRCODE = '42704';
    END IF;
    UPDATE df.instances i SET status = 'cancelled', updated_at = now()
    WHERE i.id = cancel.instance_id AND i.status NOT IN ('completed', 'failed', 'cancelled', 'compensated');
    PERFORM df._request_advance(instance_id);
    RETURN format('Instance %s cancelled: %s', instance_id, reason);
END
$$;

-- Ask the engine to look at an instance again (cancel, signal). Only for visible instances.
CREATE OR REPLACE FUNCTION df._request_advance(target text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF df._acting_owner(target) IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO df._advance AS a (instance_id) VALUES (target)
    ON CONFLICT (instance_id, node_id) DO UPDATE SET requested_at = least(a.requested_at, excluded.requested_at);
    PERFORM df._wake_engines();
END
$$;

-- df.signal takes effect at once, independent of the caller's transaction, as pg_durable's
-- does (it raises the event over a connection of its own): checked here, in the caller's
-- transaction, with pg_durable's texts; then stored by pgdurable on its own connection when
-- the session comes through pgdurable (df._signal_at_once), else in the caller's
-- transaction (a direct session, a workflow step, a refusal: df._send_signal).
CREATE OR REPLACE FUNCTION df.signal(instance_id text, signal_name text, signal_data text DEFAULT '{}')
RETURNS text LANGUAGE plpgsql STRICT AS $$
DECLARE
    payload jsonb;
BEGIN
    IF instance_id = '' THEN
        RAISE EXCEPTION 'Instance ID cannot be empty' USING ERRCODE = '22023';
    END IF;
    IF signal_name = '' THEN
        RAISE EXCEPTION 'Signal name cannot be empty' USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM df.instances i WHERE i.id = signal.instance_id)
       OR df._acting_owner(instance_id) IS NULL THEN
        RAISE EXCEPTION 'Instance not found or access denied: %', instance_id
            USING ERRCODE = '42704';
    END IF;
    BEGIN
        payload := signal_data::jsonb;
    EXCEPTION WHEN others THEN
        payload := to_jsonb(signal_data);
    END;
    IF NOT df._signal_at_once(instance_id, signal_name, payload) THEN
        PERFORM df._send_signal(instance_id, signal_name, payload);
    END IF;
    RETURN 'OK';
END
$$;

-- Store a signal for a visible instance and wake the engine (users cannot write the table).
CREATE OR REPLACE FUNCTION df._send_signal(target text, name text, payload jsonb)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF df._acting_owner(target) IS NULL THEN
        RAISE EXCEPTION 'Instance not found or access denied: %', target USING ERRCODE = '42704';
    END IF;
    INSERT INTO df._signals (instance_id, signal_name, data) VALUES (target, name, payload);
    PERFORM df._request_advance(target);
END
$$;

-- On a session that came through pgdurable (its relay sets pg_durable.relay = on in the
-- StartupMessage) in a READ COMMITTED transaction: ask pgdurable, with a NOTICE its relay
-- takes out of the stream, to store the signal on its own connection now
-- (engine/signals.py, df._record_signal), and wait up to 2 s for its answer. The detail is
-- base64, so that no client encoding changes it on the way. True once pgdurable stored the
-- signal; false when the caller is to store it itself: a direct session (nobody reads the
-- notice), pgdurable refused (e.g. an instance this transaction started, which it cannot
-- see yet) or did not answer in time; the request is then claimed, so a late pgdurable
-- cannot store the signal a second time.
CREATE OR REPLACE FUNCTION df._signal_at_once(target text, name text, payload jsonb)
RETURNS boolean LANGUAGE plpgsql SET client_min_messages = notice AS $$
DECLARE
    request uuid;
    answer boolean;
    deadline timestamptz;
BEGIN
    IF coalesce(current_setting('pg_durable.relay', true), '') <> 'on'
       OR current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN false;  -- a later snapshot would not see the answer
    END IF;
    request := gen_random_uuid();
    deadline := clock_timestamp() + interval '2 seconds';
    RAISE NOTICE USING MESSAGE = 'pgdurable:signal',
        DETAIL = encode(convert_to(jsonb_build_object(
            'request', request, 'role', current_user, 'instance_id', target,
            'signal_name', name, 'data', payload::text)::text, 'UTF8'), 'base64');
    LOOP
        answer := df._signal_answer(request);
        EXIT WHEN answer IS NOT NULL OR clock_timestamp() > deadline;
        PERFORM pg_sleep(0.001);
    END LOOP;
    RETURN coalesce(answer, false) OR NOT df._claim_signal(request);
END
$$;

-- pgdurable's answer to a signal request: stored (true), refused (false), none yet (NULL).
-- Request ids are random UUIDs known only to the caller, hence no owner check.
CREATE OR REPLACE FUNCTION df._signal_answer(p_request uuid)
RETURNS boolean LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.sent FROM df._signal_requests r WHERE r.request = p_request
$$;

-- The caller is about to store the signal itself: true unless pgdurable stored it meanwhile.
-- The row claims the request (waiting for a pgdurable transaction that holds it).
CREATE OR REPLACE FUNCTION df._claim_signal(p_request uuid)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO df._signal_requests (request, sent) VALUES (p_request, false)
    ON CONFLICT (request) DO NOTHING;
    RETURN FOUND OR NOT (SELECT r.sent FROM df._signal_requests r WHERE r.request = p_request);
END
$$;

-- pgdurable stores a signal requested by a session that logged in as p_login, whose
-- df.signal ran as p_role, on its own connection (the engine's, which owns the catalog),
-- with what df.signal checks there: the instance is visible to p_role (its own, or p_role
-- bypasses row-level security) and the login role is a member of its owner
-- (df._acting_owner), and p_role may call df.signal. So a hand-raised notice gets no more
-- than df.signal gives. The answer goes to df._signal_requests (false: refused, or the
-- caller holds a lock this would wait for, e.g. an uncommitted df.cancel of the instance;
-- it then stores the signal itself).
CREATE OR REPLACE FUNCTION df._record_signal(p_login text, p_role text, p_request uuid,
                                             p_target text, p_name text, p_payload jsonb)
RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
SET lock_timeout = '500ms' AS $$
DECLARE
    allowed boolean;
BEGIN
    DELETE FROM df._signal_requests r
    WHERE r.created_at < clock_timestamp() - interval '10 minutes';
    SELECT pg_has_role(l.oid, i.submitted_by, 'MEMBER')
           AND (i.submitted_by = r.oid OR r.rolsuper OR r.rolbypassrls
                OR pg_has_role(r.oid, c.relowner, 'USAGE'))
           AND has_schema_privilege(r.oid, 'df', 'USAGE')
           AND has_table_privilege(r.oid, 'df.instances', 'SELECT')
           AND has_function_privilege(r.oid, 'df.signal(text,text,text)', 'EXECUTE')
    INTO allowed
    FROM df.instances i, pg_roles r, pg_roles l, pg_class c
    WHERE i.id = p_target AND r.rolname = p_role AND l.rolname = p_login
      AND c.oid = 'df.instances'::regclass;
    allowed := coalesce(allowed, false);
    INSERT INTO df._signal_requests (request, sent) VALUES (p_request, allowed)
    ON CONFLICT (request) DO NOTHING;
    IF NOT FOUND OR NOT allowed THEN
        RETURN false;  -- refused, or the caller claimed the request first
    END IF;
    BEGIN
        INSERT INTO df._signals (instance_id, signal_name, data) VALUES (p_target, p_name, p_payload);
        INSERT INTO df._advance AS a (instance_id) VALUES (p_target)
        ON CONFLICT (instance_id, node_id) DO UPDATE SET requested_at = least(a.requested_at, excluded.requested_at);
    EXCEPTION WHEN lock_not_available THEN
        UPDATE df._signal_requests r SET sent = false WHERE r.request = p_request;
        RETURN false;
    END;
    PERFORM df._wake_engines();
    RETURN true;
END
$$;
REVOKE EXECUTE ON FUNCTION df._record_signal(text, text, uuid, text, text, jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION df.await_instance(instance_id text, timeout_seconds integer DEFAULT 30)
RETURNS text LANGUAGE plpgsql STRICT AS $$
DECLARE
    deadline timestamptz;
    current_status text;
    pause double precision := 0.002;
BEGIN
    IF df._in_workflow() THEN
        RAISE EXCEPTION 'df.await_instance() cannot be called inside a workflow - it would block a worker thread (and self-deadlock if waiting on the current instance). Use df.signal() and df.wait_for_signal() for cross-workflow coordination.'
            USING ERRCODE = '0A000';
    END IF;
    IF timeout_seconds <= 0 THEN
        RAISE EXCEPTION 'Timeout must be positive' USING ERRCODE = '22023';
    END IF;
    deadline := clock_timestamp() + make_interval(secs => timeout_seconds);
    LOOP
        SELECT i.status INTO current_status FROM df.instances i
        WHERE i.id = await_instance.instance_id;
        IF current_status IS NULL THEN
            RAISE EXCEPTION 'Instance not found: %', instance_id USING ERRCODE = '42704';
        END IF;
        IF current_status IN ('completed', 'failed', 'cancelled', 'compensated') THEN
            PERFORM df._mark_helper_result('df.await_instance', current_status);
            RETURN current_status;
        END IF;
        IF clock_timestamp() >= deadline THEN
            RAISE EXCEPTION 'Timeout after %s waiting for instance % (status: %). Check if background worker is running.',
                timeout_seconds, instance_id, current_status USING ERRCODE = '57014';
        END IF;
        PERFORM pg_sleep(pause);
        pause := least(pause * 2, 0.05);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION df.wait_for_completion(instance_id text, timeout_seconds integer DEFAULT 30)
RETURNS text LANGUAGE plpgsql STRICT AS $$
BEGIN
    RAISE WARNING 'df.wait_for_completion() is deprecated; use df.await_instance() instead';
    RETURN df.await_instance(instance_id, timeout_seconds);
END
$$;

CREATE OR REPLACE FUNCTION df.run(instance_id text DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN instance_id IS NULL THEN 'Triggered run for all pending instances'
                ELSE 'Triggered run for instance: ' || instance_id END
$$;

CREATE OR REPLACE FUNCTION df.duroxide_schema()
RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT '_duroxide'::text $$;

-- ---------------------------------------------------------------------------------------
-- Variables (§3.5)
-- ---------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION df.setvar(name text, value text)
RETURNS text LANGUAGE plpgsql STRICT AS $$
BEGIN
    IF df._in_workflow() THEN
        RAISE EXCEPTION 'df.setvar() cannot be called inside a workflow - set variables before starting the workflow'
            USING ERRCODE = '0A000';
    END IF;
    INSERT INTO df.vars AS v (name, value, owner)
    VALUES (setvar.name, setvar.value, quote_ident(current_user)::regrole)
    ON CONFLICT ON CONSTRAINT vars_pkey DO UPDATE SET value = excluded.value;
    PERFORM df._mark_helper_result('df.setvar', 'OK');
    RETURN 'OK';
END
$$;

CREATE OR REPLACE FUNCTION df.getvar(name text)
RETURNS text LANGUAGE sql STABLE STRICT AS $$
    SELECT v.value FROM df.vars v
    WHERE v.name = getvar.name AND v.owner = quote_ident(current_user)::regrole
$$;

CREATE OR REPLACE FUNCTION df.unsetvar(name text)
RETURNS text LANGUAGE plpgsql STRICT AS $$
BEGIN
    IF df._in_workflow() THEN
        RAISE EXCEPTION 'df.unsetvar() cannot be called inside a workflow - manage variables before starting the workflow'
            USING ERRCODE = '0A000';
    END IF;
    PERFORM df._delete_vars(quote_ident(current_user)::regrole, unsetvar.name);
    PERFORM df._mark_helper_result('df.unsetvar', 'OK');
    RETURN 'OK';
END
$$;

CREATE OR REPLACE FUNCTION df.clearvars()
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF df._in_workflow() THEN
        RAISE EXCEPTION 'df.clearvars() cannot be called inside a workflow - manage variables before starting the workflow'
            USING ERRCODE = '0A000';
    END IF;
    PERFORM df._delete_vars(quote_ident(current_user)::regrole, NULL);
    PERFORM df._mark_helper_result('df.clearvars', 'OK');
    RETURN 'OK';
END
$$;

-- Variables: users delete theirs through these functions; the table privileges they keep
-- (SELECT, column INSERT, UPDATE (value)) cannot take a lock that blocks another user.
CREATE OR REPLACE FUNCTION df._delete_vars(p_owner regrole, p_name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_has_role(session_user, p_owner, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied for table vars' USING ERRCODE = '42501';
    END IF;
    DELETE FROM df.vars v WHERE v.owner = p_owner AND (p_name IS NULL OR v.name = p_name);
END
$$;

-- pg_durable.database (the database this catalog was installed in) and the version string
-- with the time of installation: constants, written out when the catalog is installed.
DO $do$
BEGIN
    EXECUTE format('CREATE OR REPLACE FUNCTION df.target_database() RETURNS text '
                   'LANGUAGE sql IMMUTABLE PARALLEL SAFE AS %L',
                   format('SELECT %L::text', current_database()));
    EXECUTE format('CREATE OR REPLACE FUNCTION df.version() RETURNS text '
                   'LANGUAGE sql IMMUTABLE STRICT AS %L',
                   format('SELECT %L::text', '0.2.6 (built '
                          || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                          || ')'));
END
$do$;
