-- pgdurable catalog: a step's result, recorded in the step's own transaction on the owner's
-- connection (SECURITY DEFINER entry points guarded by the lease token), and the instance
-- advanced there too when possible.
--
-- Every plan applied to an instance bumps a version (on its latest execution row); every
-- other change the planner must see (a step's or timer's result, a failure, a signal, a
-- cancel, a start) leaves an _advance row. An engine that applied version v, holds the
-- leases of the instance's running steps and finds, with the instance row locked, the
-- instance still running (owners may set its status by hand), version v and no _advance
-- row, therefore holds exactly the stored state: it plans from memory and applies the plan
-- in the step's transaction with one call, df._complete_held. In any other case that call
-- does what df._complete_and_load does.
--
-- How a large result is stored once: result_storage.sql.

-- Sent with a step's BEGIN on the step's own connection, before its statement: may the role
-- the connection was opened for run a step now? Its OID is the startup setting
-- df.step_owner, which the session reset (RESET ALL) restores before each step. One row per
-- yes, counted in the command tag the engine reads: 2, the role exists and is not a
-- superuser; 1, it is a superuser now (refused unless --enable-superuser-instances); 0, it
-- is gone. A superuser's step would run with every privilege, so the rule df.start and the
-- first load apply is checked again before every step; riding on BEGIN it costs no round
-- trip, and the plan of its query is kept with the function for the session.
CREATE OR REPLACE FUNCTION df._step_guard()
RETURNS SETOF boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT true FROM pg_catalog.pg_roles r, (VALUES (true), (false)) AS v(any_role)
    WHERE r.oid OPERATOR(pg_catalog.=)
          pg_catalog.current_setting('df.step_owner')::pg_catalog.oid
      AND (v.any_role OR NOT r.rolsuper);
END
$$;

-- df._step_guard's question asked as a statement that fails when the owner may not run a
-- step (42704: its role is gone; 42501: a superuser, unless allowed): a step's statement sent
-- after it without waiting for the answer then never runs (its transaction is aborted).
CREATE OR REPLACE FUNCTION df._step_guard_or_refuse(p_allow_superuser boolean)
RETURNS void LANGUAGE plpgsql STABLE AS $$
DECLARE
    superuser boolean;
BEGIN
    SELECT r.rolsuper INTO superuser FROM pg_catalog.pg_roles r
    WHERE r.oid OPERATOR(pg_catalog.=)
          pg_catalog.current_setting('df.step_owner')::pg_catalog.oid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgdurable: the step''s owner is gone' USING ERRCODE = '42704';
    ELSIF superuser AND NOT p_allow_superuser THEN
        RAISE EXCEPTION 'pgdurable: the step''s owner is a superuser' USING ERRCODE = '42501';
    END IF;
END
$$;

-- Does the step's task row carry this lease token? Sent, unanswered, after the BEGIN that
-- goes in the flight of the previous step's COMMIT, ahead of this step's statement (one
-- round trip for the COMMIT and the statement): the row is there only when that COMMIT
-- applied the plan that leased the step to this engine. Otherwise an error (40001) aborts
-- the transaction, and the statement after it fails without running (25P02). Called on
-- the owner's step session; a lease token is the engine's secret, and the answer says only
-- whether the caller already knew it.
CREATE OR REPLACE FUNCTION df._leased_or_refuse(p_instance text, p_node text, p_token uuid)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM df._tasks t
                   WHERE t.instance_id = p_instance AND t.node_id = p_node
                     AND t.lease_token = p_token) THEN
        RAISE EXCEPTION 'pgdurable: step % of instance % is not leased to this engine',
            p_node, p_instance USING ERRCODE = '40001';
    END IF;
END
$$;

-- Record a step's result in the step's own transaction: the statement and its record
-- commit together, so a crash before COMMIT loses both and the step runs again.
CREATE OR REPLACE FUNCTION df._complete_step(p_instance text, p_node text, p_token uuid,
                                             p_raw text, p_delivery text DEFAULT 'exactly-once')
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
BEGIN
    PERFORM df._record_step(p_instance, p_node, p_token, p_raw, p_delivery);
END
$$;

-- A step failed (its transaction was rolled back): record the error, if still leased.
CREATE OR REPLACE FUNCTION df._fail_step(p_instance text, p_node text, p_token uuid, p_error text,
                                         p_delivery text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM df._tasks
    WHERE instance_id = p_instance AND node_id = p_node AND lease_token = p_token;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE df.nodes SET status = 'failed', result = to_jsonb(p_error), updated_at = clock_timestamp()
    WHERE instance_id = p_instance AND id = p_node;
    IF p_delivery IS NOT NULL THEN
        INSERT INTO df._node_state (instance_id, node_id, delivery)
        VALUES (p_instance, p_node, p_delivery)
        ON CONFLICT (instance_id, node_id) DO UPDATE SET delivery = excluded.delivery;
    END IF;
    INSERT INTO df._advance AS a (instance_id, node_id) VALUES (p_instance, p_node)
    ON CONFLICT (instance_id, node_id)
    DO UPDATE SET requested_at = least(a.requested_at, excluded.requested_at);
    RETURN true;
END
$$;
REVOKE EXECUTE ON FUNCTION df._fail_step(text, text, uuid, text, text) FROM PUBLIC;

-- A step failed (its transaction was rolled back; an HTTP step's request may have had its
-- effect). With attempts left under its failure policy (df._step_policy) and an error
-- another attempt may not meet again (p_retryable: the engine's classification), its task
-- row waits for the next attempt: unleased, due after the backoff (the initial backoff
-- doubled per attempt, capped at max_backoff, with equal jitter: half of it fixed, half
-- random; an HTTP Retry-After of p_retry_after seconds is waited for, within max_backoff),
-- a durable timer like a sleep's; the node, still running, shows the attempt to come, its
-- time and the error. Otherwise the failure is recorded (df._fail_step), except that a
-- p_final step (an HTTP 429 on its last attempt) is left to the engine to complete with
-- its response. 'retry', 'failed' or 'final'; NULL when the lease was lost.
CREATE OR REPLACE FUNCTION df._fail_or_retry(p_instance text, p_node text, p_token uuid,
                                             p_error text, p_retryable boolean,
                                             p_retry_after double precision, p_final boolean)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    policy jsonb;
    attempt integer;
    base double precision;
    delay double precision;
    next_at timestamptz;
BEGIN
    PERFORM 1 FROM df._tasks t
    WHERE t.instance_id = p_instance AND t.node_id = p_node AND t.lease_token = p_token
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF p_retryable THEN
        policy := df._step_policy(p_instance, p_node);
        SELECT coalesce((n.status_details ->> 'attempt')::integer, 1) INTO attempt
        FROM df.nodes n WHERE n.instance_id = p_instance AND n.id = p_node;
    END IF;
    IF policy IS NULL OR attempt >= (policy ->> 'max_attempts')::integer THEN
        IF p_final THEN
            RETURN 'final';
        END IF;
        PERFORM df._fail_step(p_instance, p_node, p_token, p_error);
        RETURN 'failed';
    END IF;
    base := least((policy ->> 'max_backoff')::double precision,
                  (policy ->> 'initial_backoff')::double precision * 2 ^ least(attempt - 1, 60));
    delay := base / 2 + random() * base / 2;
    IF p_retry_after IS NOT NULL THEN
        delay := least((policy ->> 'max_backoff')::double precision, greatest(delay, p_retry_after));
    END IF;
    next_at := clock_timestamp() + make_interval(secs => delay);
    -- attempts counts the leases of one attempt (more than one: recovered after a crash)
    UPDATE df._tasks
    SET lease_owner = NULL, lease_token = NULL, lease_until = NULL, due_at = next_at,
        attempts = 0
    WHERE instance_id = p_instance AND node_id = p_node;
    UPDATE df.nodes
    SET status_details = coalesce(status_details, '{}')
                         || jsonb_build_object('attempt', attempt + 1,
                                               'max_attempts', (policy ->> 'max_attempts')::integer,
                                               'next_attempt_at', next_at,
                                               'last_error', p_error),
        updated_at = clock_timestamp()
    WHERE instance_id = p_instance AND id = p_node;
    RETURN 'retry';
END
$$;
REVOKE EXECUTE ON FUNCTION df._fail_or_retry(text, text, uuid, text, boolean, double precision, boolean) FROM PUBLIC;

-- The failure policy of a step: its nearest RETRY ancestor's (df.retry), else its
-- instance's (df.start's arguments); NULL for one attempt. A RETRY whose config is not a
-- policy (node rows may be written by hand) is passed over. The walk goes up through
-- left/right children and the ids an IF, LOOP or JOIN names in its config.
CREATE OR REPLACE FUNCTION df._step_policy(p_instance text, p_node text)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH RECURSIVE up(id, depth) AS (
        SELECT p_node, 0
      UNION
        SELECT n.id, up.depth + 1
        FROM up JOIN df.nodes n
             ON n.instance_id = p_instance
            AND (n.left_node = up.id OR n.right_node = up.id
                 OR (n.node_type IN ('IF', 'LOOP', 'JOIN')
                     AND strpos(n.query, '"' || up.id || '"') > 0))
        WHERE up.depth < 100000
    )
    SELECT coalesce(
        (SELECT CASE WHEN (df._retry_policy(df._inspect_jsonb(n.query)) ->> 'max_attempts')::int > 1
                     THEN df._retry_policy(df._inspect_jsonb(n.query)) END
         FROM up JOIN df.nodes n ON n.instance_id = p_instance AND n.id = up.id
         WHERE n.node_type = 'RETRY' AND df._retry_policy(df._inspect_jsonb(n.query)) IS NOT NULL
         ORDER BY up.depth LIMIT 1),
        CASE WHEN NOT EXISTS (
                 SELECT 1 FROM up JOIN df.nodes n ON n.instance_id = p_instance AND n.id = up.id
                 WHERE n.node_type = 'RETRY'
                   AND df._retry_policy(df._inspect_jsonb(n.query)) IS NOT NULL)
             THEN (SELECT i.failure_policy FROM df.instances i WHERE i.id = p_instance) END)
$$;

-- A RETRY node's config (df.retry) as a failure policy, or NULL when it is not one:
-- max_attempts an integer of at least 1, initial_backoff and max_backoff positive seconds.
CREATE OR REPLACE FUNCTION df._retry_policy(config jsonb)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(config -> 'max_attempts') = 'number'
                     AND jsonb_typeof(config -> 'initial_backoff') = 'number'
                     AND jsonb_typeof(config -> 'max_backoff') = 'number'
                     AND (config ->> 'max_attempts')::numeric BETWEEN 1 AND 2147483647
                     AND (config ->> 'max_attempts')::numeric
                         = trunc((config ->> 'max_attempts')::numeric)
                     AND (config ->> 'initial_backoff')::numeric > 0
                     AND (config ->> 'max_backoff')::numeric > 0
                THEN jsonb_build_object(
                    'max_attempts', (config ->> 'max_attempts')::numeric::integer,
                    'initial_backoff', least((config ->> 'initial_backoff')::double precision,
                                             (config ->> 'max_backoff')::double precision),
                    'max_backoff', (config ->> 'max_backoff')::double precision,
                    'on_failure', 'fail') END
$$;
REVOKE EXECUTE ON FUNCTION df._step_policy(text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION df._complete_and_load(p_instance text, p_node text, p_token uuid,
                                                 p_raw text, p_delivery text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
DECLARE
    state jsonb;
    secret uuid := gen_random_uuid();
BEGIN
    PERFORM df._record_step(p_instance, p_node, p_token, p_raw, p_delivery);
    state := df._load_for_advance(p_instance);
    IF state IS NULL THEN
        RETURN NULL;  -- someone else holds the instance: the _advance row is left for them
    END IF;
    INSERT INTO df._apply_grants (txid, secret, instance_id, node_id)
    VALUES (txid_current(), secret, p_instance, p_node)
    ON CONFLICT (txid) DO UPDATE
    SET secret = excluded.secret, instance_id = excluded.instance_id, node_id = excluded.node_id;
    RETURN (state || jsonb_build_object('apply_secret', secret))::text;
END
$$;

-- A step's task row is gone with its result: the step must still hold the lease (an
-- engine that took an expired lease over has the task now).
CREATE OR REPLACE FUNCTION df._end_lease(p_instance text, p_node text, p_token uuid)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM df._tasks
    WHERE instance_id = p_instance AND node_id = p_node AND lease_token = p_token;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgdurable: step %/% is not leased with this token', p_instance, p_node
            USING ERRCODE = '40001';
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION df._end_lease(text, text, uuid) FROM PUBLIC;

-- Sibling steps do not wait for each other: a step leaves an _advance row of its own, keyed
-- by its node ('' for df.start, df.cancel, df.signal and timers), rather than upserting one
-- row per instance on which the parallel steps of an instance would queue (behind whichever
-- transaction was loading and planning the instance, for a graph of 10,000 nodes a long
-- time). An advance deletes only the rows it loaded (their keys come with the state, as
-- 'advance_keys'), so a row a sibling committed meanwhile stays and brings the next advance.
CREATE OR REPLACE FUNCTION df._record_step(p_instance text, p_node text, p_token uuid,
                                           p_raw text, p_delivery text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM df._end_lease(p_instance, p_node, p_token);
    -- a step that could not run inside a transaction block says so where users look
    UPDATE df.nodes
    SET status = 'completed', result = p_raw::jsonb, updated_at = clock_timestamp(),
        status_details = CASE WHEN p_delivery = 'exactly-once' THEN status_details
                              ELSE coalesce(status_details, '{}')
                                   || jsonb_build_object('delivery', p_delivery) END
    WHERE instance_id = p_instance AND id = p_node;
    INSERT INTO df._node_state AS s (instance_id, node_id, raw_result, delivery)
    VALUES (p_instance, p_node, p_raw, p_delivery)
    ON CONFLICT (instance_id, node_id)
    DO UPDATE SET raw_result = excluded.raw_result, delivery = excluded.delivery;
    INSERT INTO df._advance AS a (instance_id, node_id) VALUES (p_instance, p_node)
    ON CONFLICT (instance_id, node_id)
    DO UPDATE SET requested_at = least(a.requested_at, excluded.requested_at);
END
$$;
REVOKE EXECUTE ON FUNCTION df._record_step(text, text, uuid, text, text) FROM PUBLIC;

-- A SQL step's record and its instance's advance, planned from the state the engine holds
-- (version p_version). 'applied' when the plan (which marks this step completed) was
-- applied; otherwise exactly what df._complete_and_load returns: the state to plan from
-- (NULL: someone else holds the instance, and its _advance row is left for them).
CREATE OR REPLACE FUNCTION df._complete_held(p_instance text, p_node text, p_token uuid, p_raw text,
                                  p_version bigint, plan jsonb)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
BEGIN
    IF df._held_exact(p_instance, p_version) THEN
        RETURN df._apply_held(p_instance, p_node, p_token, plan);
    END IF;
    RETURN df._complete_and_load(p_instance, p_node, p_token, p_raw, 'exactly-once');
END
$$;

-- df._complete_held for a step whose COMMIT is sent with it, unanswered (one round trip):
-- when the held state is not exact it only records the step, whose _advance row then waits
-- for the engine's ordinary advance. 'applied' or 'recorded'.
CREATE OR REPLACE FUNCTION df._complete_held_or_record(p_instance text, p_node text, p_token uuid,
                                                       p_raw text, p_version bigint, plan jsonb)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
BEGIN
    IF df._held_exact(p_instance, p_version) THEN
        RETURN df._apply_held(p_instance, p_node, p_token, plan);
    END IF;
    PERFORM df._record_step(p_instance, p_node, p_token, p_raw, 'exactly-once');
    RETURN 'recorded';
END
$$;

-- Is the state the engine holds of a running instance exact (its version p_version, no
-- change waiting for an advance)? Locks the instance's row as an advance does; false when
-- someone else holds it (users may set df.instances.status themselves).
CREATE OR REPLACE FUNCTION df._held_exact(p_instance text, p_version bigint)
RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
BEGIN
    PERFORM 1 FROM df.instances i
    WHERE i.id = p_instance AND i.status = 'running' FOR NO KEY UPDATE SKIP LOCKED;
    RETURN FOUND
       AND NOT EXISTS (SELECT 1 FROM df._advance a WHERE a.instance_id = p_instance)
       AND (SELECT e.version FROM df._executions e WHERE e.instance_id = p_instance
            ORDER BY e.execution_id DESC LIMIT 1) IS NOT DISTINCT FROM p_version;
END
$$;
REVOKE EXECUTE ON FUNCTION df._held_exact(text, bigint) FROM PUBLIC;

-- The plan made from held state, applied (the state was exact): the step's lease ends, the
-- plan (which marks the step completed) is applied. 'applied'.
CREATE OR REPLACE FUNCTION df._apply_held(p_instance text, p_node text, p_token uuid, plan jsonb)
RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM df._end_lease(p_instance, p_node, p_token);
    PERFORM df._apply_plan(p_instance, plan || '{"held": true}');
    RETURN 'applied';
END
$$;
REVOKE EXECUTE ON FUNCTION df._apply_held(text, text, uuid, jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION df._apply_as_step(p_instance text, p_node text, p_secret uuid, plan jsonb)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
BEGIN
    DELETE FROM df._apply_grants g
    WHERE g.txid = txid_current() AND g.secret = p_secret
      AND g.instance_id = p_instance AND g.node_id = p_node;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgdurable: no advance of this instance was granted to this transaction'
            USING ERRCODE = '42501';
    END IF;
    BEGIN  -- a failing plan must not undo the step: the _advance row stays for a retry
        PERFORM df._apply_plan(p_instance, plan);
    EXCEPTION WHEN others THEN
        RAISE WARNING 'pgdurable: in-step advance of % failed: %', p_instance, SQLERRM;
        INSERT INTO df._advance AS a (instance_id) VALUES (p_instance)
        ON CONFLICT (instance_id, node_id) DO UPDATE SET requested_at = least(a.requested_at, excluded.requested_at);
        RETURN false;
    END;
    RETURN true;
END
$$;
