-- pgdurable catalog, version 13: a new instance's first advance and its first SQL step in
-- one transaction, on the owner's connection.
--
-- df.start's wake-up names the owner of an instance whose steps run in the catalog's
-- database. The engine then opens that owner's step transaction, reads the new instance
-- (df._first_state), plans, runs the first step's statement and applies both plans with
-- df._apply_first, which checks, under the row locks it takes only then, that nobody
-- advanced, cancelled or signalled the instance in the meantime (the instance is still
-- pending and its _advance row is the one read). Otherwise nothing is applied, the
-- transaction is rolled back and the ordinary advance takes over. Both functions are for
-- the engine only: they need its key (the epoch id it registered in df._worker_epoch,
-- which users cannot read) and a session that may act as the instance's owner. A first
-- step still running after a few milliseconds is promoted (df._promote_first): the first
-- plan is committed apart, so the instance shows as running, and the step finishes as
-- any step does.

CREATE OR REPLACE FUNCTION df._submit(new_instance text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    inst record;
BEGIN
    SELECT i.submitted_by AS owner_role, r.rolname, i.database INTO inst
    FROM df.instances i JOIN pg_roles r ON r.oid = i.submitted_by
    WHERE i.id = new_instance AND pg_has_role(session_user, i.submitted_by, 'MEMBER');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Instance not found or access denied: %', new_instance
            USING ERRCODE = '42501';
    END IF;
    INSERT INTO df._instance_vars (instance_id, vars)  -- none: readers see '{}'
    SELECT new_instance, jsonb_object_agg(v.name, v.value)
    FROM df.vars v WHERE v.owner = inst.owner_role AND v.value IS NOT NULL
    HAVING count(*) > 0
    ON CONFLICT (instance_id) DO NOTHING;
    INSERT INTO df._advance AS a (instance_id) VALUES (new_instance)
    ON CONFLICT (instance_id) DO UPDATE SET requested_at = least(a.requested_at, excluded.requested_at);
    -- ["<id>", "<owner>"]: a new instance whose steps run in this database
    PERFORM pg_notify('df_wake', CASE WHEN inst.database IS NULL
                                      THEN json_build_array(new_instance, inst.rolname)::text
                                      ELSE new_instance END);
END
$$;
ALTER FUNCTION df._submit(text) SET enable_seqscan = off SET jit = off;

-- For the engine's own calls on an owner's connection: the key must be an engine's epoch
-- id (else 42501); true when the session may act as the instance's owner.
CREATE FUNCTION df._engine_acting_for(p_instance text, p_key uuid)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM df._worker_epoch w WHERE w.epoch_id = p_key) THEN
        RAISE EXCEPTION 'pgdurable: not an engine key' USING ERRCODE = '42501';
    END IF;
    RETURN df._acting_owner(p_instance) IS NOT NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION df._engine_acting_for(text, uuid) FROM PUBLIC;

-- The state of a new instance (as df._instance_state, plus the version of its _advance row
-- as 'advance_xmin'), read without locks; NULL when it is not new any more or the session
-- may not act as its owner.
CREATE FUNCTION df._first_state(p_instance text, p_key uuid)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    advance_xmin text;
BEGIN
    IF NOT df._engine_acting_for(p_instance, p_key)
       OR (SELECT i.status FROM df.instances i WHERE i.id = p_instance) <> 'pending' THEN
        RETURN NULL;
    END IF;
    SELECT a.xmin::text INTO advance_xmin FROM df._advance a WHERE a.instance_id = p_instance;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN (df._instance_state(p_instance)
            || jsonb_build_object('advance_xmin', advance_xmin))::text;
END
$$;

-- Is the new instance still as df._first_state read it (pending, never advanced, the same
-- _advance row)? Takes the locks an advance takes (the instance row, then the _advance row).
CREATE FUNCTION df._first_unchanged(p_instance text, p_advance_xmin text)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM df.instances i
    WHERE i.id = p_instance AND i.status = 'pending' FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND OR EXISTS (SELECT 1 FROM df._executions e WHERE e.instance_id = p_instance) THEN
        RETURN false;
    END IF;
    PERFORM 1 FROM df._advance a
    WHERE a.instance_id = p_instance AND a.xmin::text = p_advance_xmin FOR UPDATE SKIP LOCKED;
    RETURN FOUND;
END
$$;
REVOKE EXECUTE ON FUNCTION df._first_unchanged(text, text) FROM PUBLIC;

-- Apply the plans made from df._first_state's document, in order, if the instance is still
-- as read; false (nothing applied) otherwise.
CREATE FUNCTION df._apply_first(p_instance text, p_key uuid, p_advance_xmin text, plans jsonb)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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

-- A first step that runs long is promoted: the engine commits the first plan (its task row
-- leased to the engine) on its own connection, so that the instance shows as running, and
-- the step's transaction then finishes as any step's does.
CREATE FUNCTION df._promote_first(p_instance text, p_advance_xmin text, plan jsonb)
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
ALTER FUNCTION df._first_state(text, uuid) SET enable_seqscan = off SET jit = off;
ALTER FUNCTION df._apply_first(text, uuid, text, jsonb) SET enable_seqscan = off SET jit = off;
