-- Upgrade to catalog version 20 (the first catalog, engine/sql/catalog) from a database built
-- by the pre-release numbered migrations, at migration 17, 18 or 19. Every statement here is
-- conditional or idempotent; the installer then re-runs the catalog's code files (CREATE OR
-- REPLACE), in the same transaction. Rows in df.instances, df.nodes and the engine's tables
-- are kept: running instances go on.

-- Migration 18: an in-step advance grant is bound to the instance and node whose lease token
-- earned it. Grants live for one transaction, so none can be pending here.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute
                   WHERE attrelid = 'df._apply_grants'::regclass AND attname = 'instance_id'
                     AND NOT attisdropped) THEN
        DELETE FROM df._apply_grants;
        ALTER TABLE df._apply_grants ADD COLUMN instance_id text NOT NULL,
                                     ADD COLUMN node_id text NOT NULL;
    END IF;
END
$$;

-- Migration 18: an instance's _advance rows are keyed by the node that asked ('' for
-- df.start, df.cancel, df.signal and timers); the rows already there are keyed ''.
ALTER TABLE df._advance ADD COLUMN IF NOT EXISTS node_id text NOT NULL DEFAULT '';
DO $$
BEGIN
    IF (SELECT cardinality(conkey) FROM pg_constraint
        WHERE conrelid = 'df._advance'::regclass AND conname = '_advance_pkey') = 1 THEN
        ALTER TABLE df._advance DROP CONSTRAINT _advance_pkey,
                                ADD CONSTRAINT _advance_pkey PRIMARY KEY (instance_id, node_id);
    END IF;
END
$$;

-- Migration 18: df.vars users keep SELECT, column INSERT and UPDATE (value), and delete
-- through df.unsetvar/df.clearvars, so no user holds a table-level privilege that lets
-- LOCK TABLE stall everyone else's df.start and df.setvar. (Nothing to do once done.)
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT DISTINCT a.grantee::regrole AS grantee, bool_or(a.is_grantable) AS grantable
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'df.vars'::regclass AND a.grantee <> c.relowner AND a.grantee <> 0
          AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE')
        GROUP BY a.grantee
    LOOP
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON df.vars FROM %s CASCADE', g.grantee);
        EXECUTE format('GRANT INSERT (name, value, owner), UPDATE (value) ON df.vars TO %s', g.grantee)
                || CASE WHEN g.grantable THEN ' WITH GRANT OPTION' ELSE '' END;
    END LOOP;
END
$$;

-- Migration 19: a large step result (or execution output) keeps its column names instead
-- of a second copy of its text.
ALTER TABLE df._node_state ADD COLUMN IF NOT EXISTS result_columns text[];
ALTER TABLE df._executions ADD COLUMN IF NOT EXISTS output_columns text[];

-- Functions migration 18 replaced by others of another signature.
DROP FUNCTION IF EXISTS df._apply_as_step(text, uuid, jsonb);
DROP FUNCTION IF EXISTS df._poll(uuid, double precision, integer, integer);
DROP FUNCTION IF EXISTS df._first_state(text, uuid);

-- Dead or merged: df.explain now checks a graph with df.start's walk (df._graph_walk, whose
-- result type differs from the recursive walk of that name it replaces).
DROP FUNCTION df._flatten(df._walk);
DROP FUNCTION df._validate_graph(jsonb);
DROP FUNCTION df._check_walk(df._walk);
DROP FUNCTION df._walk_of(jsonb);
DROP FUNCTION df._graph_walk(jsonb);
DROP TYPE df._walk;
DROP FUNCTION df._durofut_text(jsonb);  -- called by nothing
