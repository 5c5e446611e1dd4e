-- Upgrade to catalog version 21 (pg_durable 0.2.8 parity) from version 20. The installer
-- then re-runs the catalog's code files (CREATE OR REPLACE), in the same transaction, so a
-- function whose body changed needs nothing here; table changes, dropped or renamed
-- functions and changed result types do. Every statement is written to run on any
-- database at version 20.
SELECT 1;

-- df.loop(body, condition, continue_on_failure) (issue 14, item 15): the two-argument
-- df.loop goes; the code files create the three-argument one, which calls with one or two
-- arguments (and df.loop_prefix_op, behind @>) find. RESTRICT: an object of the
-- administrator's that depends on the old signature must be changed first.
DROP FUNCTION IF EXISTS df.loop(text, text);

-- Issue 14, the owner fixed at first load (pg_durable 0.2.8 parity): df._poll hands the
-- engine each owner's role OID besides its name (a new result column); poll.sql creates
-- it again.
DROP FUNCTION IF EXISTS df._poll(uuid, double precision, integer, integer, text[], integer);

-- df.signal takes effect at once (issue 14, item 9): pgdurable's answers to signal requests.
CREATE TABLE IF NOT EXISTS df._signal_requests (
    request    uuid PRIMARY KEY,
    sent       boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS idx_signal_requests_created ON df._signal_requests (created_at);
REVOKE ALL ON df._signal_requests FROM PUBLIC;

-- Retries (issue 15, item 1): df.start's failure policy on its instance, and df.start's
-- new arguments (max_attempts, max_backoff, on_failure): the four-argument df.start goes,
-- the code files create the seven-argument one (calls with up to four arguments find it).
ALTER TABLE df.instances ADD COLUMN IF NOT EXISTS failure_policy jsonb;
DROP FUNCTION IF EXISTS df.start(text, text, text, text);
DROP FUNCTION IF EXISTS df._start_new(text, text, text);
DROP FUNCTION IF EXISTS df._submit(text);

-- Bounded growth (issue 17 item 6): retention finds finished instances (compensated ones
-- too) by age through an index (engine.sql, df._prune_finished), and deletes their nodes without scanning an
-- instance's nodes once per node (the foreign keys' checks: tables.sql, df.nodes).
CREATE INDEX IF NOT EXISTS idx_instances_finished
    ON df.instances ((coalesce(completed_at, created_at)), id)
    WHERE status = ANY ('{completed,failed,cancelled,compensated}'::text[]);
DROP INDEX IF EXISTS df.idx_nodes_instance;
CREATE INDEX IF NOT EXISTS idx_nodes_left_node ON df.nodes (instance_id, left_node)
    WHERE left_node IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_nodes_right_node ON df.nodes (instance_id, right_node)
    WHERE right_node IS NOT NULL;

-- Per-subgraph retries and timeouts (issue 15: df.retry, df.timeout): node types RETRY and
-- TIMEOUT (one child, a JSON config in the query); and compensation's COMPENSATED (issue 15,
-- item 3: a forward and its undo, no query).
CREATE OR REPLACE FUNCTION df._node_structure_ok(node_type text, left_node text, right_node text,
                                                 query text)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN CASE
        WHEN node_type OPERATOR(pg_catalog.=) ANY ('{SQL,SLEEP,WAIT_SCHEDULE,BREAK,HTTP,HTTP_MULTIPART,SIGNAL}'::text[])
            THEN left_node IS NULL AND right_node IS NULL AND query IS NOT NULL
        WHEN node_type OPERATOR(pg_catalog.=) 'THEN'
            THEN left_node IS NOT NULL AND right_node IS NOT NULL AND query IS NULL
        WHEN node_type OPERATOR(pg_catalog.=) 'IF'
            THEN left_node IS NOT NULL AND right_node IS NOT NULL AND query IS NOT NULL
        WHEN node_type OPERATOR(pg_catalog.=) 'LOOP'
            THEN left_node IS NOT NULL AND right_node IS NULL
        WHEN node_type OPERATOR(pg_catalog.=) 'JOIN'
            THEN left_node IS NOT NULL AND right_node IS NOT NULL
        WHEN node_type OPERATOR(pg_catalog.=) 'RACE'
            THEN left_node IS NOT NULL AND right_node IS NOT NULL AND query IS NULL
        WHEN node_type OPERATOR(pg_catalog.=) ANY ('{RETRY,TIMEOUT}'::text[])
            THEN left_node IS NOT NULL AND right_node IS NULL AND query IS NOT NULL
        WHEN node_type OPERATOR(pg_catalog.=) 'COMPENSATED'
            THEN left_node IS NOT NULL AND right_node IS NOT NULL AND query IS NULL
    END;
END
$$;
ALTER TABLE df.nodes DROP CONSTRAINT IF EXISTS nodes_node_type_chk;
ALTER TABLE df.nodes ADD CONSTRAINT nodes_node_type_chk CHECK (node_type = ANY (
    '{SQL,THEN,IF,JOIN,LOOP,BREAK,RACE,SLEEP,WAIT_SCHEDULE,HTTP,HTTP_MULTIPART,SIGNAL,RETRY,TIMEOUT,COMPENSATED}'::text[]));

-- Pause, resume, resume from failure (issue 15, item 4): an instance may be 'paused';
-- compensation (issue 15, item 3): or 'compensated'.
ALTER TABLE df.instances DROP CONSTRAINT IF EXISTS instances_status_chk;
ALTER TABLE df.instances ADD CONSTRAINT instances_status_chk
    CHECK (status = ANY ('{pending,running,paused,completed,failed,cancelled,compensated}'::text[]));

-- Each pgdurable's heartbeat row carries its own --lease-seconds (issue 14, item 13): how
-- long its silence may last before df.start counts it gone (processes on one database may
-- have different leases; a published setting would be the last one's).
ALTER TABLE df._worker_epoch ADD COLUMN IF NOT EXISTS lease_seconds double precision
    NOT NULL DEFAULT 30;
DROP FUNCTION IF EXISTS df._heartbeat(uuid);

-- Compensation (issue 15, item 3: `forward <-> undo`, df.with_undo): the operator <->,
-- whose function the code files create again right after this file (compensated counts as
-- finished for retention: idx_instances_finished above).
CREATE OR REPLACE FUNCTION df.with_undo(forward text, undo text) RETURNS text
LANGUAGE plpgsql STRICT AS $$ BEGIN RETURN df._pair('COMPENSATED', forward, undo); END $$;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_operator o
               WHERE o.oprname = '<->' AND o.oprnamespace = 'public'::regnamespace
                 AND o.oprleft = 'text'::regtype AND o.oprright = 'text'::regtype) THEN
        -- ours from an earlier run, or pg_trgm's: df.with_undo does the same
        RAISE NOTICE 'public.<->(text, text) exists already: <-> is not (re)created';
    ELSE
        CREATE OPERATOR public.<-> (LEFTARG = text, RIGHTARG = text, FUNCTION = df.with_undo);
    END IF;
END
$$;

-- Claims that cost the same with 100,000 due tasks queued (issue 16, item 5): df._poll
-- takes the first entries of idx_tasks_claimable (tasks in the order they became
-- claimable), and reads which of its busy instances are pending once per pass instead of
-- through df._first_step_busy for each row.
CREATE INDEX IF NOT EXISTS idx_tasks_claimable ON df._tasks
    ((CASE WHEN lease_owner IS NULL THEN due_at ELSE lease_until END), due_at);
DROP FUNCTION IF EXISTS df._first_step_busy(text, text[]);

-- No truncation by autovacuum (issue 17: retention beside df.start). Retention deletes finished instances in batches while df.start inserts new ones: autovacuum
-- truncating the emptied end of one of these tables would take an ACCESS EXCLUSIVE lock and
-- make an insert wait (a df.start waited 10 ms so beside a pass over 500,000 instances,
-- python -m tests.bench.scale); the emptied pages are reused by the rows that come next.
ALTER TABLE df.instances SET (vacuum_truncate = off);
ALTER TABLE df.nodes SET (vacuum_truncate = off);
ALTER TABLE df._node_state SET (vacuum_truncate = off);
ALTER TABLE df._executions SET (vacuum_truncate = off);
ALTER TABLE df._instance_vars SET (vacuum_truncate = off);
ALTER TABLE df._tasks SET (vacuum_truncate = off);
ALTER TABLE df._advance SET (vacuum_truncate = off);

-- Several pgdurable processes on one database (issue 16, item 4): a scheduler pass claims
-- the _advance rows it hands to its engine (df._poll), and the other processes leave them
-- alone until the claim runs out.
ALTER TABLE df._advance ADD COLUMN IF NOT EXISTS claimed_by uuid;
ALTER TABLE df._advance ADD COLUMN IF NOT EXISTS claimed_until timestamptz;
