-- Runner roles (decision 4): on password-only clusters the engine cannot log in as a
-- workflow's owner, so df.grant_usage gives the owner a login role of its own,
-- df_run_<owner>: LOGIN, NOINHERIT, a member of that owner only, password derived by
-- pgdurable from its secret (never stored here; the engine sets the SCRAM verifier).
-- A step's session logs in as the runner with role = <owner> as a startup option, so
-- RESET ROLE comes back to the owner and SET ROLE NONE to a role with no privileges.
-- Created only when pgdurable runs with a secret (setting runner_roles = on).

CREATE TABLE df._runners (
    owner  name PRIMARY KEY,
    runner name NOT NULL UNIQUE
);
REVOKE ALL ON df._runners FROM PUBLIC;

CREATE FUNCTION df._runner_name(owner name)
RETURNS name LANGUAGE sql IMMUTABLE
RETURN CASE WHEN octet_length(owner::text) <= 56 THEN 'df_run_' || owner
            ELSE 'df_run_' || left(encode(sha256(convert_to(owner::text, 'UTF8')), 'hex'), 32)
       END;

CREATE FUNCTION df._ensure_runner(p_owner text)
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

CREATE FUNCTION df._drop_runner(p_owner text)
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

-- The engine (the catalog owner) sets a runner's SCRAM verifier when a login with the
-- derived password fails (first use, or after the secret changed). Registered runners only.
CREATE FUNCTION df._set_runner_password(p_runner text, verifier text)
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

REVOKE EXECUTE ON FUNCTION df._ensure_runner(text), df._drop_runner(text),
    df._set_runner_password(text, text) FROM PUBLIC;

-- df.grant_usage / df.revoke_usage keep their privilege work (now _grant_usage_privileges /
-- _revoke_usage_privileges: SECURITY INVOKER, so anyone may run them with what they hold)
-- and add the runner role when pgdurable runs with a secret.
ALTER FUNCTION df.grant_usage(text, boolean, boolean) RENAME TO _grant_usage_privileges;
ALTER FUNCTION df.revoke_usage(text) RENAME TO _revoke_usage_privileges;
GRANT EXECUTE ON FUNCTION df._grant_usage_privileges(text, boolean, boolean),
    df._revoke_usage_privileges(text) TO PUBLIC;

CREATE FUNCTION df.grant_usage(p_role text, include_http boolean DEFAULT false,
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

CREATE FUNCTION df.revoke_usage(p_role text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM df._drop_runner(p_role);
    PERFORM df._revoke_usage_privileges(p_role);
END
$$;

REVOKE EXECUTE ON FUNCTION df.grant_usage(text, boolean, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION df.revoke_usage(text) FROM PUBLIC;
