-- pgdurable catalog: the administration helpers (§3.7): df.grant_usage, df.revoke_usage
-- and the runner roles they manage (the table df._runners is in tables.sql).

-- ---------------------------------------------------------------------------------------
-- Administration (§3.7)
-- ---------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION df._grant_usage_privileges(p_role text, include_http boolean DEFAULT false,
                                                      with_grant boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    opt text := CASE WHEN with_grant THEN ' WITH GRANT OPTION' ELSE '' END;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA df TO %I', p_role) || opt;
    IF include_http THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION df.http(text, text, text, jsonb, integer) TO %I', p_role) || opt;
        EXECUTE format('GRANT EXECUTE ON FUNCTION df.http_multipart(text, text, jsonb, jsonb, integer) TO %I', p_role) || opt;
    END IF;
    IF with_grant THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION df.grant_usage(text, boolean, boolean) TO %I', p_role) || opt;
        EXECUTE format('GRANT EXECUTE ON FUNCTION df.revoke_usage(text) TO %I', p_role) || opt;
        EXECUTE format('GRANT EXECUTE ON FUNCTION df.metrics() TO %I', p_role) || opt;
    END IF;
    EXECUTE format('GRANT SELECT ON df.instances TO %I', p_role) || opt;
    EXECUTE format('GRANT UPDATE (status, updated_at) ON df.instances TO %I', p_role) || opt;
    EXECUTE format('GRANT SELECT ON df.nodes TO %I', p_role) || opt;
    EXECUTE format('GRANT INSERT (id, label, root_node, submitted_by, database) ON df.instances TO %I', p_role) || opt;
    EXECUTE format('GRANT INSERT (id, instance_id, node_type, query, result_name, left_node, right_node, submitted_by, database) ON df.nodes TO %I', p_role) || opt;
    EXECUTE format('GRANT SELECT, INSERT (name, value, owner), UPDATE (value) ON df.vars TO %I', p_role) || opt;
    EXECUTE format('GRANT SELECT ON df._executions, df._instance_overview TO %I', p_role) || opt;
    RAISE NOTICE 'pg_durable: granted df usage privileges to "%"', p_role;
END
$$;

CREATE OR REPLACE FUNCTION df._revoke_usage_privileges(p_role text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    BEGIN
        EXECUTE format('REVOKE EXECUTE ON FUNCTION df.http(text, text, text, jsonb, integer) FROM %I CASCADE', p_role);
        EXECUTE format('REVOKE EXECUTE ON FUNCTION df.http_multipart(text, text, jsonb, jsonb, integer) FROM %I CASCADE', p_role);
        EXECUTE format('REVOKE EXECUTE ON FUNCTION df.grant_usage(text, boolean, boolean) FROM %I CASCADE', p_role);
        EXECUTE format('REVOKE EXECUTE ON FUNCTION df.revoke_usage(text) FROM %I CASCADE', p_role);
        EXECUTE format('REVOKE EXECUTE ON FUNCTION df.metrics() FROM %I CASCADE', p_role);
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
    EXECUTE format('REVOKE ALL ON df.instances, df.nodes, df.vars, df._executions, '
                   'df._instance_overview FROM %I CASCADE', p_role);
    EXECUTE format('REVOKE USAGE ON SCHEMA df FROM %I CASCADE', p_role);
    RAISE NOTICE 'pg_durable: revoked df usage privileges granted by "%" from "%"', current_user, p_role;
END
$$;

CREATE OR REPLACE FUNCTION df._runner_name(owner name)
RETURNS name LANGUAGE sql IMMUTABLE
RETURN CASE WHEN octet_length(owner::text) <= 56 THEN 'df_run_' || owner
            ELSE 'df_run_' || left(encode(sha256(convert_to(owner::text, 'UTF8')), 'hex'), 32)
       END;

CREATE OR REPLACE FUNCTION df._ensure_runner(p_owner text)
RETURNS name LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target pg_roles;
    runner name := df._runner_name(p_owner);
    me name := current_user;  -- the catalog owner: pgdurable's admin role
BEGIN
    SELECT * INTO target FROM pg_roles WHERE rolname = p_owner;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'role "%" does not exist', p_owner USING ERRCODE = '42704';
    ELSIF target.rolsuper OR p_owner = me THEN
        RETURN NULL;  -- superusers get no runner; pgdurable logs in as its own admin itself
    ELSIF EXISTS (SELECT FROM df._runners r WHERE r.owner = p_owner) THEN
        RETURN runner;
    ELSIF EXISTS (SELECT FROM pg_roles WHERE rolname = runner) THEN
        RAISE EXCEPTION 'pgdurable: role "%" already exists and is not pgdurable''s runner role for "%"',
            runner, p_owner USING ERRCODE = '42710',
            HINT = 'Drop or rename that role, then call df.grant_usage again.';
    END IF;
    BEGIN
        EXECUTE format('CREATE ROLE %I LOGIN NOINHERIT NOCREATEDB NOCREATEROLE', runner);
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'pgdurable: cannot create the runner role "%" for "%": role "%" lacks CREATEROLE',
            runner, p_owner, me USING ERRCODE = '42501',
            HINT = format('As a superuser or your provider''s admin: ALTER ROLE %I CREATEROLE;', me);
    END;
    BEGIN
        EXECUTE format('GRANT %I TO %I', p_owner, runner);
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'pgdurable: cannot make the runner role "%" a member of "%": role "%" needs ADMIN OPTION on "%"',
            runner, p_owner, me, p_owner USING ERRCODE = '42501',
            HINT = format('As a role that has it: GRANT %I TO %I WITH ADMIN OPTION;', p_owner, me);
    END;
    INSERT INTO df._runners (owner, runner) VALUES (p_owner, runner);
    RETURN runner;
END
$$;
REVOKE EXECUTE ON FUNCTION df._ensure_runner(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION df._drop_runner(p_owner text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    gone name;
BEGIN
    DELETE FROM df._runners r WHERE r.owner = p_owner RETURNING r.runner INTO gone;
    IF gone IS NULL OR NOT EXISTS (SELECT FROM pg_roles WHERE rolname = gone) THEN
        RETURN;
    END IF;
    BEGIN
        EXECUTE format('DROP ROLE %I', gone);
    EXCEPTION WHEN dependent_objects_still_exist THEN
        RAISE EXCEPTION 'pgdurable: cannot drop the runner role "%": it owns objects or holds privileges',
            gone USING ERRCODE = '2BP01',
            HINT = format('Reassign them first, e.g. REASSIGN OWNED BY %I TO %I;', gone, p_owner);
    END;
END
$$;
REVOKE EXECUTE ON FUNCTION df._drop_runner(text) FROM PUBLIC;

-- The engine (the catalog owner) sets a runner's SCRAM verifier when a login with the
-- derived password fails (first use, or after the secret changed). Registered runners only.
CREATE OR REPLACE FUNCTION df._set_runner_password(p_runner text, verifier text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM df._runners r WHERE r.runner = p_runner) THEN
        RAISE EXCEPTION 'pgdurable: "%" is not a runner role', p_runner USING ERRCODE = '42704';
    END IF;
    IF verifier NOT LIKE 'SCRAM-SHA-256$%' THEN
        RAISE EXCEPTION 'pgdurable: a runner password must be a SCRAM verifier' USING ERRCODE = '22023';
    END IF;
    EXECUTE format('ALTER ROLE %I PASSWORD %L', p_runner, verifier);
END
$$;
REVOKE EXECUTE ON FUNCTION df._set_runner_password(text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION df.grant_usage(p_role text, include_http boolean DEFAULT false,
                               with_grant boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    runner name;
BEGIN
    PERFORM df._grant_usage_privileges(p_role, include_http, with_grant);
    IF with_grant THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION df._ensure_runner(text), df._drop_runner(text) TO %I',
                       p_role);
    END IF;
    IF df._setting('runner_roles', 'off') = 'on' THEN
        runner := df._ensure_runner(p_role);
        IF runner IS NOT NULL THEN
            RAISE NOTICE 'pgdurable: workflows of "%" run through the login role "%"', p_role, runner;
        END IF;
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION df.grant_usage(text, boolean, boolean) FROM PUBLIC;

CREATE OR REPLACE FUNCTION df.revoke_usage(p_role text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM df._drop_runner(p_role);
    PERFORM df._revoke_usage_privileges(p_role);
END
$$;
REVOKE EXECUTE ON FUNCTION df.revoke_usage(text) FROM PUBLIC;
