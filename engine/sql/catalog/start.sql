-- pgdurable catalog: df.start (spec §3.3) and its helpers, including df.start(...,
-- transaction_mode => 'new').

-- df.start's strict reading of its argument (§3.3 step 1). Of a Durofut node only the root's
-- own fields are deserialized here; its children are deserialized one level at a time by
-- the graph walk, which names a malformed one by its path (pg_durable 0.2.6).
CREATE OR REPLACE FUNCTION df._parse_strict(fut text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    parsed jsonb;
    node_type text;
    problem text;
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
        problem := df._durofut_level_problem(parsed);
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'Invalid durable function: Malformed Durofut JSON with node_type ''%'': failed to deserialize workflow step: %',
                node_type, problem USING ERRCODE = '22023';
        END IF;
        RETURN parsed;
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
CREATE OR REPLACE FUNCTION df._setting(setting_name text, fallback text)
RETURNS text LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT value FROM df._settings WHERE name = setting_name), fallback)
$$;

CREATE OR REPLACE FUNCTION df._in_workflow()
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('df.in_workflow', true), '') = 'true'
$$;

-- df.start (§3.3). A leaf root (the usual one-step workflow) needs no walk: its only path
-- is 'root', its only problem is its own, and its flattened row is itself. Anything with
-- children goes through df._graph_rows (graph.sql: walk, check, flatten).
CREATE OR REPLACE FUNCTION df.start(fut text, label text DEFAULT NULL, database text DEFAULT NULL,
                                    transaction_mode text DEFAULT 'caller',
                                    max_attempts integer DEFAULT 1,
                                    max_backoff interval DEFAULT '16s',
                                    on_failure text DEFAULT 'fail')
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    mode text := lower(coalesce(transaction_mode, 'caller'));
    policy jsonb := df._failure_policy('df.start()', max_attempts, NULL, max_backoff, on_failure);
    root jsonb;
    instance_id text;
    me regrole := quote_ident(current_user)::regrole;
    ids text[];
    types text[];
    queries text[];
    names text[];
    lefts text[];
    rights text[];
BEGIN
    IF mode NOT IN ('caller', 'new') THEN
        RAISE EXCEPTION 'invalid transaction_mode "%" for df.start(): expected ''caller'' or ''new''',
            transaction_mode USING ERRCODE = '22023';
    END IF;
    IF mode = 'new' THEN
        RETURN df._start_new(fut, label, database, policy);
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
    SELECT g.ids, g.types, g.queries, g.names, g.lefts, g.rights
    INTO ids, types, queries, names, lefts, rights
    FROM df._graph_rows(root) g;
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
            PERFORM df._submit(instance_id, max_attempts, max_backoff, on_failure);
            RETURN instance_id;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'Failed to create instance: exhausted 10 attempts to generate a collision-free ID'
        USING ERRCODE = '23505';
END
$$;

-- A failure policy (df.start's instance default, df.retry's for a subgraph) as stored:
-- NULL for a single attempt, else the attempts and the backoff in seconds (initial_backoff
-- NULL: 1 s, never above max_backoff). `caller` names the function in the errors.
CREATE OR REPLACE FUNCTION df._failure_policy(caller text, max_attempts integer,
                                              initial_backoff interval, max_backoff interval,
                                              on_failure text)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    cap double precision := extract(epoch FROM max_backoff);
    first double precision := coalesce(extract(epoch FROM initial_backoff), least(1.0, cap));
BEGIN
    IF on_failure IS NULL OR on_failure NOT IN ('fail', 'continue') THEN
        RAISE EXCEPTION 'invalid on_failure "%" for %: expected ''fail'' or ''continue''',
            on_failure, caller USING ERRCODE = '22023';
    ELSIF on_failure = 'continue' THEN
        RAISE EXCEPTION 'on_failure => ''continue'' is not supported yet: a step that fails after its last attempt fails its workflow'
            USING ERRCODE = '0A000';
    ELSIF max_attempts IS NULL OR max_attempts < 1 THEN
        RAISE EXCEPTION 'invalid max_attempts % for %: expected at least 1',
            coalesce(max_attempts::text, 'NULL'), caller USING ERRCODE = '22023';
    ELSIF cap IS NULL OR cap <= 0 THEN
        RAISE EXCEPTION 'invalid max_backoff "%" for %: expected a positive interval',
            coalesce(max_backoff::text, 'NULL'), caller USING ERRCODE = '22023';
    ELSIF first <= 0 THEN
        RAISE EXCEPTION 'invalid initial_backoff "%" for %: expected a positive interval',
            initial_backoff, caller USING ERRCODE = '22023';
    END IF;
    IF max_attempts = 1 THEN
        RETURN NULL;
    END IF;
    RETURN jsonb_build_object('max_attempts', max_attempts, 'initial_backoff', least(first, cap),
                              'max_backoff', cap, 'on_failure', on_failure);
END
$$;

-- Who may own an instance: a role with LOGIN (the engine logs in as it) that is not a
-- superuser unless pgdurable runs with --enable-superuser-instances.
CREATE OR REPLACE FUNCTION df._check_submitter(role_name name)
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
        -- pg_durable's text, but for its last sentence: a SET of the placeholder changes
        -- nothing, so it names what does.
        RAISE EXCEPTION 'pg_durable: superuser instances are disabled. current_user "%" is a superuser, but pg_durable.enable_superuser_instances is off. Start pgdurable with --enable-superuser-instances (or set pg_durable.enable_superuser_instances = on in postgresql.conf, then restart pgdurable) to allow this.',
            role_name USING ERRCODE = '42501';
    END IF;
END
$$;

-- The instance's owner when the session's login role may act for it (is, or is a member
-- of, the owner), else NULL. SECURITY DEFINER functions cannot see the caller's
-- current_user, so they check the login role instead.
CREATE OR REPLACE FUNCTION df._acting_owner(target text)
RETURNS regrole LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT i.submitted_by FROM df.instances i
            WHERE i.id = target AND pg_has_role(session_user, i.submitted_by, 'MEMBER'));
END
$$;

-- Was this row version (its xmin) written by the current transaction, or one of its
-- subtransactions? A row another transaction is still writing is invisible, so a visible
-- row whose writer is in progress was written here. (xmin is 32 bits: its epoch is the one
-- that puts it within 2^31 of the current top-level transaction's full id, as a
-- subtransaction's id, larger than its parent's, is.)
CREATE OR REPLACE FUNCTION df._written_here(row_xmin xid)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    current_id bigint := pg_current_xact_id()::text::bigint;
    full_id bigint := (current_id >> 32 << 32) | row_xmin::text::bigint;
BEGIN
    IF full_id > current_id + 2147483648 THEN
        full_id := full_id - 4294967296;
    ELSIF full_id < current_id - 2147483648 THEN
        full_id := full_id + 4294967296;
    END IF;
    RETURN pg_xact_status(full_id::text::xid8) = 'in progress';
END
$$;
REVOKE EXECUTE ON FUNCTION df._written_here(xid) FROM PUBLIC;

-- Hand a freshly inserted instance to the engine: snapshot the owner's variables, queue
-- the first advance and wake the engines (NOTIFY is delivered at commit, so a ROLLBACK
-- means the instance never runs).
--
-- Who may hand an instance to the engine: the transaction that wrote its row. Users can
-- write df.instances rows only with submitted_by = current_user (the policy's WITH CHECK;
-- they may update no other column than status and updated_at), so a row written by this
-- transaction was written while it acted as the owner: in a SECURITY DEFINER function
-- that is the function's owner (pg_durable makes it the workflow's owner, §3.3), and the
-- caller, whose session_user is not that role, has no other way to act as it. A
-- SECURITY DEFINER function cannot read its caller's current_user, so asking the caller
-- for it, or checking the session's login role (which a definer's caller is not), would
-- not do. Another session's instance, or an earlier transaction's, is refused.
-- (The failure policy is stored here, as the catalog's owner: users may insert instances but
-- not write their policy, which only df._failure_policy builds.)
CREATE OR REPLACE FUNCTION df._submit(new_instance text, max_attempts integer DEFAULT 1,
                                      max_backoff interval DEFAULT '16s',
                                      on_failure text DEFAULT 'fail')
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
DECLARE
    owner_role regrole;
    relaying uuid;  -- the engine relaying this session: the instance is announced to it
    relaying_lease double precision;
BEGIN
    SELECT i.submitted_by INTO owner_role
    FROM df.instances i
    WHERE i.id = new_instance AND df._written_here(i.xmin);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Instance not found or access denied: %', new_instance
            USING ERRCODE = '42501';
    END IF;
    PERFORM df._require_engine();  -- no engine ready: the start fails, its rows with it
    IF max_attempts IS DISTINCT FROM 1 THEN
        UPDATE df.instances
        SET failure_policy = df._failure_policy('df.start()', max_attempts, NULL, max_backoff,
                                                on_failure)
        WHERE id = new_instance;
    ELSIF EXISTS (SELECT 1 FROM df.nodes n
                  WHERE n.instance_id = new_instance AND n.node_type = 'RETRY') THEN
        -- one attempt, said out loud: no first-step shortcut, whose failed attempt would
        -- go uncounted under the graph's df.retry
        UPDATE df.instances
        SET failure_policy = jsonb_build_object('max_attempts', 1, 'initial_backoff', 1,
                                                'max_backoff', 16, 'on_failure', 'fail')
        WHERE id = new_instance;
    END IF;
    INSERT INTO df._instance_vars (instance_id, vars)  -- none: readers see '{}'
    SELECT new_instance, jsonb_object_agg(v.name, v.value)
    FROM df.vars v WHERE v.owner = owner_role AND v.value IS NOT NULL
    HAVING count(*) > 0
    ON CONFLICT (instance_id) DO NOTHING;
    SELECT e.epoch_id, e.lease_seconds INTO relaying, relaying_lease
    FROM df._announcing_engine(new_instance, owner_role) e;
    -- claimed for the relaying engine as it is written (an UPDATE of a row this transaction
    -- inserted would check its foreign key again)
    INSERT INTO df._advance AS a (instance_id, claimed_by, claimed_until)
    VALUES (new_instance, relaying,
            clock_timestamp() + make_interval(secs => relaying_lease))
    ON CONFLICT (instance_id, node_id) DO UPDATE
    SET requested_at = least(a.requested_at, excluded.requested_at),
        claimed_by = coalesce(excluded.claimed_by, a.claimed_by),
        claimed_until = coalesce(excluded.claimed_until, a.claimed_until);
    IF relaying IS NULL OR NOT df._announce_first(new_instance, relaying) THEN
        PERFORM df._wake_engines();
    END IF;
END
$$;

-- transaction_mode => 'new': pgdurable opens a session as the caller's role and starts the
-- instance there (engine/executors/new_transaction.py). Asked with a NOTICE that pgdurable's
-- relay takes out of the stream of any session connected through it (pg_durable.relay = on,
-- set in its StartupMessage), whatever called df.start: a statement, a DO block, a function.
CREATE OR REPLACE FUNCTION df._start_new(fut text, label text, database text, policy jsonb)
RETURNS text LANGUAGE plpgsql SET client_min_messages = notice AS $$
DECLARE
    request uuid := gen_random_uuid();
    outcome df._new_starts;
    slot_wait double precision := df._setting('new_transaction_start_timeout', '5')::double precision;
    ack_deadline timestamptz := clock_timestamp() + interval '2 seconds';
    relayed boolean := coalesce(current_setting('pg_durable.relay', true), '') = 'on';
    -- after the acknowledgement: a launch slot, the login, then a statement bounded at 30 s
    deadline timestamptz := ack_deadline + make_interval(secs => slot_wait + 70);
BEGIN
    IF df._in_workflow() THEN
        RAISE EXCEPTION 'df.start() with transaction_mode => ''new'' cannot be called inside a workflow - a df.sql() node already runs as a single autocommitted statement, so a plain df.start() there is already independent of any caller transaction'
            USING ERRCODE = '0A000';
    END IF;
    IF fut IS NULL THEN
        RAISE EXCEPTION 'Invalid durable function: fut cannot be NULL' USING ERRCODE = '22004';
    END IF;
    PERFORM df._check_submitter(current_user);
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'df.start() with transaction_mode => ''new'' needs a READ COMMITTED caller transaction (current: %)',
            current_setting('transaction_isolation') USING ERRCODE = '0A000',
            HINT = 'The caller waits for the new transaction to commit, which only READ COMMITTED can see.';
    END IF;
    PERFORM df._require_engine();  -- no engine to take the request up: fail now
    IF relayed THEN  -- else nobody reads the notice: say so at once
        RAISE NOTICE USING MESSAGE = 'pgdurable:new-transaction-start',
            DETAIL = jsonb_build_object('request', request, 'role', current_user, 'fut', fut,
                                        'label', label, 'database', database,
                                        'failure_policy', policy)::text;
    END IF;
    LOOP
        outcome := df._new_start_outcome(request);
        IF outcome.error IS NOT NULL THEN
            RAISE EXCEPTION USING MESSAGE = outcome.error, ERRCODE = outcome.sqlstate;
        ELSIF outcome.instance_id IS NOT NULL THEN
            RETURN outcome.instance_id;
        ELSIF outcome.request IS NULL AND (NOT relayed OR clock_timestamp() > ack_deadline) THEN
            RAISE EXCEPTION 'df.start() with transaction_mode => ''new'' was not taken up by pgdurable: call it in a session connected through pgdurable''s port'
                USING ERRCODE = '0A000',
                HINT = 'pgdurable opens the new transaction; sessions connected to PostgreSQL directly cannot.';
        ELSIF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'df.start() on new transaction failed: pgdurable did not report an outcome in time'
                USING ERRCODE = '57014';
        END IF;
        PERFORM pg_sleep(0.002);
    END LOOP;
END
$$;

-- What pgdurable runs instead of a df.start whose SQL step does not parse: it fails like
-- the server's own syntax error would (aborting the transaction), and carries the position
-- in the user's statement in the column-name field, which pgdurable moves to the
-- ErrorResponse's position field. The parameters keep the statement's $n referenced.
CREATE OR REPLACE FUNCTION df._step_syntax_error(message text, step_position integer, step text,
                                      VARIADIC parameters text[] DEFAULT '{}')
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = '42601', MESSAGE = message,
        DETAIL = format('in a SQL step of df.start: %s', left(step, 200)),
        COLUMN = 'pgdurable:position=' || step_position;
END
$$;

-- A row exists from the moment pgdurable took the request up (an acknowledgement).
-- Request ids are random UUIDs known only to the caller, hence no owner check.
CREATE OR REPLACE FUNCTION df._new_start_outcome(p_request uuid)
RETURNS df._new_starts LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM df._new_starts WHERE request = p_request
$$;
