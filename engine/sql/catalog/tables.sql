-- pgdurable catalog: schemas, tables, row-level security and the engine's private tables.
-- Installed first (see engine/sql/README.md); the one function here is the CHECK rule that
-- df.nodes needs before it can be created.

CREATE SCHEMA df;
CREATE SCHEMA _duroxide;

-- pg_durable's nodes_structure_chk; NULL (accepted) for a type the rule does not name
-- (nodes_node_type_chk refuses unknown types). Operators are qualified: a CHECK's own
-- expression is bound when it is created, a function body when it runs. Like everything in
-- this file it is not run again on an upgrade: a change to it needs an upgrade file.
CREATE FUNCTION df._node_structure_ok(node_type text, left_node text, right_node text,
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

CREATE TABLE df._migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------------------
-- User-visible tables (pg_durable §2)
-- ---------------------------------------------------------------------------------------
CREATE TABLE df.instances (
    id           varchar(8) PRIMARY KEY,
    label        text,
    root_node    varchar(8) NOT NULL,
    status       text DEFAULT 'pending',
    submitted_by regrole NOT NULL,
    database     text,
    created_at   timestamptz DEFAULT now(),
    updated_at   timestamptz DEFAULT now(),
    completed_at timestamptz,
    -- df.start's failure policy (max_attempts > 1): {"max_attempts", "initial_backoff",
    -- "max_backoff" (seconds), "on_failure"}; NULL: a failing step fails at once (as with
    -- max_attempts 1, written for a graph with df.retry nodes: no first-step shortcut)
    failure_policy jsonb,
    CONSTRAINT instances_id_format_chk CHECK (id ~ '^[0-9a-f]{8}$'),
    CONSTRAINT instances_root_node_format_chk CHECK (root_node ~ '^[0-9a-f]{8}$'),
    CONSTRAINT instances_status_chk
        CHECK (status = ANY ('{pending,running,paused,completed,failed,cancelled,compensated}'::text[])),
    CONSTRAINT instances_identity_key UNIQUE (id, submitted_by)
);
CREATE INDEX idx_instances_status ON df.instances (status, created_at DESC, id);
CREATE INDEX idx_instances_created_at ON df.instances (created_at DESC, id);
CREATE INDEX idx_instances_label ON df.instances (label, created_at DESC, id)
    WHERE label IS NOT NULL;
-- Retention (df._prune_finished): finished instances by age, oldest first.
CREATE INDEX idx_instances_finished ON df.instances ((coalesce(completed_at, created_at)), id)
    WHERE status = ANY ('{completed,failed,cancelled,compensated}'::text[]);

CREATE TABLE df.nodes (
    id             varchar(8) NOT NULL,
    instance_id    varchar(8) NOT NULL,
    node_type      text NOT NULL,
    query          text,
    result_name    text,
    left_node      varchar(8),
    right_node     varchar(8),
    status         text DEFAULT 'pending',
    result         jsonb,
    error          text,
    submitted_by   regrole,
    database       text,
    created_at     timestamptz DEFAULT now(),
    updated_at     timestamptz DEFAULT now(),
    status_details jsonb,
    CONSTRAINT nodes_pkey PRIMARY KEY (instance_id, id),
    CONSTRAINT nodes_id_format_chk CHECK (id ~ '^[0-9a-f]{8}$'),
    -- Each list is one array constant and the structure rule one function call: PostgreSQL
    -- reads a table's CHECK expressions back from their node trees in every statement that
    -- writes the table, and written out they came to 12.6 kB per UPDATE of df.nodes.
    CONSTRAINT nodes_node_type_chk CHECK (node_type = ANY (
        '{SQL,THEN,IF,JOIN,LOOP,BREAK,RACE,SLEEP,WAIT_SCHEDULE,HTTP,HTTP_MULTIPART,SIGNAL,RETRY,TIMEOUT,COMPENSATED}'::text[])),
    CONSTRAINT nodes_result_name_chk CHECK (result_name ~ '^[A-Za-z_][A-Za-z0-9_]*$'),
    CONSTRAINT nodes_status_chk CHECK (status = ANY ('{pending,running,completed,failed}'::text[])),
    CONSTRAINT nodes_result_status_chk
        CHECK (result IS NULL OR status = ANY ('{completed,failed}'::text[])),
    CONSTRAINT nodes_structure_chk
        CHECK (df._node_structure_ok(node_type, left_node, right_node, query)),
    CONSTRAINT nodes_instance_identity_fkey FOREIGN KEY (instance_id, submitted_by)
        REFERENCES df.instances (id, submitted_by) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT nodes_left_node_same_instance_fkey FOREIGN KEY (instance_id, left_node)
        REFERENCES df.nodes (instance_id, id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT nodes_right_node_same_instance_fkey FOREIGN KEY (instance_id, right_node)
        REFERENCES df.nodes (instance_id, id) DEFERRABLE INITIALLY DEFERRED
);
-- An instance's nodes are found through the primary key. pg_durable's idx_nodes_instance
-- (instance_id) is left out: the foreign keys' checks of a node by (instance_id, id), run
-- once per node inserted or deleted, took it instead of the primary key whenever the planner
-- guessed one node per instance (a fresh database, or mostly one-step workflows), and read
-- all the instance's nodes each time. The two indexes below serve the checks of a deleted
-- node's parents. Without them, deleting an instance of 10,000 nodes (retention,
-- df._prune_finished) took over a minute.
CREATE INDEX idx_nodes_left_node ON df.nodes (instance_id, left_node) WHERE left_node IS NOT NULL;
CREATE INDEX idx_nodes_right_node ON df.nodes (instance_id, right_node) WHERE right_node IS NOT NULL;

ALTER TABLE df.instances ADD CONSTRAINT instances_root_node_same_instance_fkey
    FOREIGN KEY (id, root_node) REFERENCES df.nodes (instance_id, id)
    DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE df.vars (
    name  text NOT NULL,
    value text,
    owner regrole NOT NULL DEFAULT current_user::regrole,
    PRIMARY KEY (owner, name)
);

CREATE TABLE df._worker_epoch (
    epoch_id      uuid PRIMARY KEY,
    started_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    -- the process's --lease-seconds: how long its silence may last before it counts as gone
    -- (each process its own, since processes on one database may differ)
    lease_seconds double precision NOT NULL DEFAULT 30
);

CREATE TABLE _duroxide._worker_ready (
    sentinel       boolean PRIMARY KEY DEFAULT true,
    schema_version integer NOT NULL,
    initialized_at timestamptz DEFAULT now()
);

-- ---------------------------------------------------------------------------------------
-- Row-level security (enabled, not forced: the owner, i.e. pgdurable, sees everything)
-- ---------------------------------------------------------------------------------------
ALTER TABLE df.instances ENABLE ROW LEVEL SECURITY;
ALTER TABLE df.nodes ENABLE ROW LEVEL SECURITY;
ALTER TABLE df.vars ENABLE ROW LEVEL SECURITY;
CREATE POLICY instances_user_isolation ON df.instances FOR ALL
    USING (submitted_by = quote_ident(current_user)::regrole)
    WITH CHECK (submitted_by = quote_ident(current_user)::regrole);
CREATE POLICY nodes_user_isolation ON df.nodes FOR ALL
    USING (submitted_by = quote_ident(current_user)::regrole)
    WITH CHECK (submitted_by = quote_ident(current_user)::regrole);
CREATE POLICY vars_user_isolation ON df.vars FOR ALL
    USING (owner = quote_ident(current_user)::regrole)
    WITH CHECK (owner = quote_ident(current_user)::regrole);

-- ---------------------------------------------------------------------------------------
-- Engine-private tables: no grants to anyone but the owner.
-- ---------------------------------------------------------------------------------------

-- Configuration the engine publishes for the SQL functions (written at every start).
CREATE TABLE df._settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);

-- Leaf work to do: SQL/HTTP steps, timers, signal waits. A row is claimed by setting a lease;
-- an expired lease may be taken over by any pgdurable process.
-- Like df._node_state, it has no foreign key to df.instances: its rows are only written by
-- df._apply_plan, which holds the instance's row lock, and by df._record_step, whose
-- transaction also inserts an _advance row (that foreign key stays); triggers
-- (engine.sql) remove them with their instance.
CREATE TABLE df._tasks (
    instance_id varchar(8) NOT NULL,
    node_id     varchar(8) NOT NULL,
    node_type   text NOT NULL,
    payload     text,
    due_at      timestamptz NOT NULL DEFAULT now(),
    lease_owner uuid,
    lease_token uuid,
    lease_until timestamptz,
    attempts    integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, node_id)
);
CREATE INDEX idx_tasks_due ON df._tasks (due_at) WHERE lease_owner IS NULL;
CREATE INDEX idx_tasks_lease ON df._tasks (lease_until) WHERE lease_owner IS NOT NULL;
-- The claim's order (df._poll): when a task became claimable, its due time if no engine
-- holds it, else its lease's expiry; due time breaks ties (one engine's leases are renewed
-- together). A claim reads the first entries of this one range, however long the queue
-- and however many leases are held.
CREATE INDEX idx_tasks_claimable ON df._tasks
    ((CASE WHEN lease_owner IS NULL THEN due_at ELSE lease_until END), due_at);

-- Instances whose graph must be advanced (a child finished, a start, a cancel), from
-- requested_at on (a loop pacing its iterations asks for a later time). An instance's rows
-- are keyed by the node that asked ('' for df.start, df.cancel, df.signal and timers), so
-- sibling steps do not wait for each other. A scheduler pass that hands a row to its engine
-- claims it until claimed_until (df._poll): the other pgdurable processes pass it over
-- until then, and take it once the claim ran out (its engine died).
CREATE TABLE df._advance (
    instance_id varchar(8) NOT NULL REFERENCES df.instances (id) ON DELETE CASCADE,
    requested_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    node_id text NOT NULL DEFAULT '',
    claimed_by uuid,
    claimed_until timestamptz,
    CONSTRAINT _advance_pkey PRIMARY KEY (instance_id, node_id)
);
CREATE INDEX idx_advance_due ON df._advance (requested_at);

-- Per-node engine state: the raw (column-ordered) result used for $name substitution, the
-- delivery guarantee the step got, and counters.
CREATE TABLE df._node_state (
    instance_id varchar(8) NOT NULL,
    node_id     varchar(8) NOT NULL,
    raw_result  text,
    delivery    text,
    iteration   integer NOT NULL DEFAULT 0,
    iteration_started_at timestamptz,
    result_columns text[],  -- a large SQL result's column names, instead of raw_result
    PRIMARY KEY (instance_id, node_id)
);

-- One row per execution (generation) of an instance: pg_durable's engine history summary.
CREATE TABLE df._executions (
    instance_id  varchar(8) NOT NULL REFERENCES df.instances (id) ON DELETE CASCADE,
    execution_id bigint NOT NULL,
    submitted_by regrole NOT NULL,
    status       text NOT NULL DEFAULT 'Running',
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at timestamptz,
    event_count  bigint NOT NULL DEFAULT 1,
    output       text,
    version      bigint NOT NULL DEFAULT 0,  -- bumped by every plan applied (df._complete_held)
    output_columns text[],  -- a large output's column names, instead of output
    PRIMARY KEY (instance_id, execution_id)
);

-- Signals sent with df.signal, kept until a wait_for_signal node consumes them (pg_durable
-- drops a signal sent before the wait starts; pgdurable keeps it).
CREATE TABLE df._signals (
    id          bigserial PRIMARY KEY,
    instance_id varchar(8) NOT NULL REFERENCES df.instances (id) ON DELETE CASCADE,
    signal_name text NOT NULL,
    data        jsonb,
    sent_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    consumed_by varchar(8)
);
CREATE INDEX idx_signals_waiting ON df._signals (instance_id, id) WHERE consumed_by IS NULL;

-- Variables captured at df.start (immutable for the instance).
CREATE TABLE df._instance_vars (
    instance_id varchar(8) PRIMARY KEY REFERENCES df.instances (id) ON DELETE CASCADE,
    vars        jsonb NOT NULL DEFAULT '{}'
);

-- The fast path: a SQL step's transaction records its result and advances the instance
-- itself, saving a transaction per step. The owner's connection calls two SECURITY DEFINER
-- functions; a grant row only this transaction can see (written by the first, consumed by
-- the second, both behind the lease token) keeps anyone else from applying a plan. A grant
-- is bound to the instance and node whose lease token earned it.
CREATE TABLE df._apply_grants (
    txid        bigint PRIMARY KEY,
    secret      uuid NOT NULL,
    instance_id text NOT NULL,
    node_id     text NOT NULL
);

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

-- df.signal through pgdurable (control.sql: df._signal_at_once): pgdurable stores the signal
-- on its own connection and answers here, stored (sent) or refused; the caller polls its
-- row, or claims it (sent = false) when it stores the signal itself, so that a signal is
-- stored once. Rows go after 10 minutes.
CREATE TABLE df._signal_requests (
    request    uuid PRIMARY KEY,
    sent       boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX idx_signal_requests_created ON df._signal_requests (created_at);

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

-- Users may read their own execution history (df.grant_usage grants SELECT).
ALTER TABLE df._executions ENABLE ROW LEVEL SECURITY;
CREATE POLICY executions_user_isolation ON df._executions FOR SELECT
    USING (submitted_by = quote_ident(current_user)::regrole);

-- A node waiting on df._explain_tree's stack: its plan key, its line's prefix and connector
-- (NULL: a section header line), and the prefix of its children's lines.
CREATE TYPE df._explain_item AS (key text, prefix text, connector text, child_prefix text);

REVOKE ALL ON ALL TABLES IN SCHEMA df FROM PUBLIC;
GRANT USAGE ON SCHEMA _duroxide TO PUBLIC;
GRANT SELECT ON _duroxide._worker_ready TO PUBLIC;

-- Retention deletes finished instances in batches while df.start inserts new ones: autovacuum
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
