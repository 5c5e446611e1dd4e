-- pgdurable catalog: a new instance's first advance and its first SQL step in one
-- transaction, on the owner's connection.
--
-- df._poll names the owner of an instance whose steps run in the catalog's database, with
-- the instance's state (df._first_document); the engine opens that owner's step
-- transaction, plans, runs the first step's statement and applies both plans with
-- df._apply_first, which checks, under the row locks it takes only then, that nobody
-- advanced, cancelled or signalled the instance in the meantime (the instance is still
-- pending and its _advance row is the one read). Otherwise nothing is applied, the
-- transaction is rolled back and the ordinary advance takes over. These functions are for
-- the engine only: they need its key (the epoch id it registered in df._worker_epoch,
-- which users cannot read) and a session that may act as the instance's owner. A first
-- step still running after a few milliseconds is promoted (df._promote_first): the first
-- plan is committed apart, so the instance shows as running, and the step finishes as any
-- step does.

-- The state of a new instance for its first step (df._instance_state plus the version of
-- its '' _advance row as 'advance_xmin': its xmin and its ctid, since a change later in the
-- transaction that wrote it, such as a df.cancel after the df.start, keeps the xmin); NULL
-- without that row. df._poll hands it to the
-- engine with the instance (the engine key and the owner's session are checked where it is
-- applied, in df._apply_first), which spares the step connection a round trip.
CREATE OR REPLACE FUNCTION df._first_document(p_instance text)
RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    advance_xmin text;
BEGIN
    SELECT a.xmin::text || a.ctid::text INTO advance_xmin FROM df._advance a
    WHERE a.instance_id = p_instance AND a.node_id = '';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN (df._instance_state(p_instance)
            || jsonb_build_object('advance_xmin', advance_xmin))::text;
END
$$;
REVOKE EXECUTE ON FUNCTION df._first_document(text) FROM PUBLIC;

-- df.start on a session pgdurable relays, for an instance its login role owns (`p_owner`,
-- its submitted_by: a new instance has no execution, so that is df._instance_owner) whose
-- first step can run in its first transaction (as df._poll's 'new'): the relaying engine,
-- named by the digest of its key (pg_durable.relay_engine, set by the relay in the
-- StartupMessage), and its lease; NULLs otherwise. df._submit claims the instance's
-- _advance row for that engine as it writes it and announces the instance to it
-- (df._announce_first). Called by df._submit only (as the catalog's owner).
CREATE OR REPLACE FUNCTION df._announcing_engine(p_instance text, p_owner regrole,
                                                 OUT epoch_id uuid,
                                                 OUT lease_seconds double precision)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT w.epoch_id, w.lease_seconds INTO epoch_id, lease_seconds FROM df._worker_epoch w
    WHERE encode(sha256(convert_to(w.epoch_id::text, 'UTF8')), 'hex')
          = current_setting('pg_durable.relay_engine', true)
      AND p_owner::oid = (SELECT r.oid FROM pg_roles r WHERE r.rolname = session_user)
      AND EXISTS (SELECT 1 FROM df.instances i
                  WHERE i.id = p_instance AND i.status = 'pending' AND i.database IS NULL
                    AND i.failure_policy IS NULL);
END
$$;
REVOKE EXECUTE ON FUNCTION df._announcing_engine(text, regrole) FROM PUBLIC;

-- Hand the engine `p_engine` (df._announcing_engine), for which df._submit claimed the new
-- instance, its first document in a NOTICE its relay takes out of the stream, so that its
-- first step starts once the transaction has ended, without a scheduler pass. The detail
-- is the document after a MAC (sha256 over the engine's key, which users cannot read,
-- around the document): a notice any session can raise itself is acted on only with it.
-- The document shows the session nothing it cannot read already (its own instance). False
-- (the caller wakes an engine as usual) without a document. Called by df._submit only.
CREATE OR REPLACE FUNCTION df._announce_first(p_instance text, p_engine uuid)
RETURNS boolean LANGUAGE plpgsql SET client_min_messages = notice AS $$
DECLARE
    document text := df._first_document(p_instance);
BEGIN
    IF document IS NULL THEN
        RETURN false;
    END IF;
    RAISE NOTICE USING MESSAGE = 'pgdurable:first',
        DETAIL = encode(sha256(convert_to(p_engine::text || document || p_engine::text,
                                          'UTF8')), 'hex')
                 || ' ' || document;
    RETURN true;
END
$$;
REVOKE EXECUTE ON FUNCTION df._announce_first(text, uuid) FROM PUBLIC;

-- For the engine's own calls on an owner's step connection: the key must be an engine's
-- epoch id (else 42501); true when the session logged in as the instance's owner
-- (df._instance_owner), or as the owner's runner. Membership is not enough: a superuser is a member of every role.
CREATE OR REPLACE FUNCTION df._engine_acting_for(p_instance text, p_key uuid)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM df._worker_epoch w WHERE w.epoch_id = p_key) THEN
        RAISE EXCEPTION 'pgdurable: not an engine key' USING ERRCODE = '42501';
    END IF;
    RETURN EXISTS (
        SELECT 1 FROM pg_roles o
        WHERE o.oid = df._instance_owner(p_instance)
          AND (o.rolname = session_user
               OR EXISTS (SELECT 1 FROM df._runners r
                          WHERE r.owner = o.rolname AND r.runner = session_user)));
END
$$;
REVOKE EXECUTE ON FUNCTION df._engine_acting_for(text, uuid) FROM PUBLIC;

-- Is the new instance still as df._first_document read it (pending, never advanced, the same
-- _advance row)? Takes the locks an advance takes (the instance row, then the _advance row).
CREATE OR REPLACE FUNCTION df._first_unchanged(p_instance text, p_advance_xmin text)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM df.instances i
    WHERE i.id = p_instance AND i.status = 'pending' FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND OR EXISTS (SELECT 1 FROM df._executions e WHERE e.instance_id = p_instance) THEN
        RETURN false;
    END IF;
    PERFORM 1 FROM df._advance a
    WHERE a.instance_id = p_instance AND a.node_id = ''
      AND a.xmin::text || a.ctid::text = p_advance_xmin
    FOR UPDATE SKIP LOCKED;
    RETURN FOUND;
END
$$;
REVOKE EXECUTE ON FUNCTION df._first_unchanged(text, text) FROM PUBLIC;

-- Apply the plans made from df._first_document's document, in order, if the instance is still
-- as read; false (nothing applied) otherwise.
CREATE OR REPLACE FUNCTION df._apply_first(p_instance text, p_key uuid, p_advance_xmin text, plans jsonb)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
DECLARE
    plan jsonb;
BEGIN
    IF NOT df._engine_acting_for(p_instance, p_key)
       OR NOT df._first_unchanged(p_instance, p_advance_xmin) THEN
        RETURN false;
    END IF;
    FOR plan IN SELECT value FROM jsonb_array_elements(plans) LOOP
        PERFORM df._apply_plan(p_instance, plan);
    END LOOP;
    RETURN true;
END
$$;

-- Is the new instance still as df._first_document read it? Sent, unanswered, ahead of the
-- statement of a first step that waited for a step slot: an error (40001, as
-- df._apply_first_or_refuse's) when it is not, which aborts the transaction before the
-- statement runs (an instance cancelled while its first step waited never runs it). Takes
-- no lock: df._apply_first checks again, under its locks, at the end. Called on the owner's
-- step session, so pinned, and as safe to call as df._apply_first_or_refuse (the engine's
-- key is checked).
CREATE OR REPLACE FUNCTION df._first_still_due(p_instance text, p_key uuid, p_advance_xmin text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT df._engine_acting_for(p_instance, p_key)
       OR NOT EXISTS (SELECT 1 FROM df.instances i
                      WHERE i.id = p_instance AND i.status = 'pending')
       OR NOT EXISTS (SELECT 1 FROM df._advance a
                      WHERE a.instance_id = p_instance AND a.node_id = ''
                        AND a.xmin::text || a.ctid::text = p_advance_xmin) THEN
        RAISE EXCEPTION 'pgdurable: instance % changed since its first advance was planned',
            p_instance USING ERRCODE = '40001';
    END IF;
END
$$;

-- df._apply_first for a first step whose COMMIT is sent with it, unanswered: an error
-- (40001) instead of false, so that the COMMIT after it commits nothing of the step. Called
-- on the owner's step session, so pinned as df._apply_first is (and as safe to call: that
-- checks the engine's key).
CREATE OR REPLACE FUNCTION df._apply_first_or_refuse(p_instance text, p_key uuid,
                                                     p_advance_xmin text, plans jsonb)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT df._apply_first(p_instance, p_key, p_advance_xmin, plans) THEN
        RAISE EXCEPTION 'pgdurable: instance % changed since its first advance was planned',
            p_instance USING ERRCODE = '40001';
    END IF;
END
$$;

-- A first step that runs long is promoted: the engine commits the first plan (its task row
-- leased to the engine) on its own connection, so that the instance shows as running, and
-- the step's transaction then finishes as any step's does.
CREATE OR REPLACE FUNCTION df._promote_first(p_instance text, p_advance_xmin text, plan jsonb)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT df._first_unchanged(p_instance, p_advance_xmin) THEN
        RETURN false;
    END IF;
    PERFORM df._apply_plan(p_instance, plan);
    RETURN true;
END
$$;
REVOKE EXECUTE ON FUNCTION df._promote_first(text, text, jsonb) FROM PUBLIC;
