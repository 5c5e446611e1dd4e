-- df.start(..., transaction_mode => 'new') (§3.3): pgdurable starts the instance on a session
-- of its own, logged in as the same role, and that session commits before df.start returns,
-- so a ROLLBACK of the caller's transaction does not undo it.
--
-- How the caller's backend asks: a NOTICE carrying the request (the one channel out of an
-- open transaction that needs no extension); pgdurable's relay takes it out of the stream,
-- checks that the session's login role may act as the requested role, and answers through
-- df._new_starts, which the caller polls (READ COMMITTED sees each new commit).

CREATE TABLE df._new_starts (
    request     uuid PRIMARY KEY,
    instance_id varchar(8),                 -- set when the instance committed
    error       text,                       -- or the error to raise in the caller
    sqlstate    text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
REVOKE ALL ON df._new_starts FROM PUBLIC;

-- A row exists from the moment pgdurable took the request up (an acknowledgement).
-- Request ids are random UUIDs known only to the caller, hence no owner check.
CREATE FUNCTION df._new_start_outcome(p_request uuid)
RETURNS df._new_starts LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM df._new_starts WHERE request = p_request
$$;

CREATE OR REPLACE FUNCTION df._start_new(fut text, label text, database text)
RETURNS text LANGUAGE plpgsql SET client_min_messages = notice AS $$
DECLARE
    request uuid := gen_random_uuid();
    outcome df._new_starts;
    slot_wait double precision := df._setting('new_transaction_start_timeout', '5')::double precision;
    ack_deadline timestamptz := clock_timestamp() + interval '2 seconds';
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
    RAISE NOTICE USING MESSAGE = 'pgdurable:new-transaction-start',
        DETAIL = jsonb_build_object('request', request, 'role', current_user, 'fut', fut,
                                    'label', label, 'database', database)::text;
    LOOP
        outcome := df._new_start_outcome(request);
        IF outcome.error IS NOT NULL THEN
            RAISE EXCEPTION USING MESSAGE = outcome.error, ERRCODE = outcome.sqlstate;
        ELSIF outcome.instance_id IS NOT NULL THEN
            RETURN outcome.instance_id;
        ELSIF outcome.request IS NULL AND clock_timestamp() > ack_deadline THEN
            RAISE EXCEPTION 'df.start() with transaction_mode => ''new'' was not taken up by pgdurable: call it in a statement sent through pgdurable''s port'
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
