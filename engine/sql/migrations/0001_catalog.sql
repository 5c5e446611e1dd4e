-- pgdurable catalog, version 1: schema df with pg_durable's tables, row-level security and
-- the engine's private tables. Applied by engine/migrations.py under an advisory lock.

CREATE SCHEMA df;
CREATE SCHEMA _duroxide;

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
    CONSTRAINT instances_id_format_chk CHECK (id ~ '^[0-9a-f]{8}$'),
    CONSTRAINT instances_root_node_format_chk CHECK (root_node ~ '^[0-9a-f]{8}$'),
    CONSTRAINT instances_status_chk
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    CONSTRAINT instances_identity_key UNIQUE (id, submitted_by)
);
CREATE INDEX idx_instances_status ON df.instances (status, created_at DESC, id);
CREATE INDEX idx_instances_created_at ON df.instances (created_at DESC, id);
CREATE INDEX idx_instances_label ON df.instances (label, created_at DESC, id)
    WHERE label IS NOT NULL;

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
    CONSTRAINT nodes_node_type_chk CHECK (node_type IN ('SQL', 'THEN', 'IF', 'JOIN', 'LOOP',
        'BREAK', 'RACE', 'SLEEP', 'WAIT_SCHEDULE', 'HTTP', 'HTTP_MULTIPART', 'SIGNAL')),
    CONSTRAINT nodes_result_name_chk CHECK (result_name ~ '^[A-Za-z_][A-Za-z0-9_]*$'),
    CONSTRAINT nodes_status_chk CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    CONSTRAINT nodes_result_status_chk
        CHECK (result IS NULL OR status IN ('completed', 'failed')),
    CONSTRAINT nodes_structure_chk CHECK (CASE
        WHEN node_type IN ('SQL', 'SLEEP', 'WAIT_SCHEDULE', 'BREAK', 'HTTP', 'HTTP_MULTIPART',
                           'SIGNAL')
            THEN left_node IS NULL AND right_node IS NULL AND query IS NOT NULL
        WHEN node_type = 'THEN'
            THEN left_node IS NOT NULL AND right_node IS NOT NULL AND query IS NULL
        WHEN node_type = 'IF'
            THEN left_node IS NOT NULL AND right_node IS NOT NULL AND query IS NOT NULL
        WHEN node_type = 'LOOP' THEN left_node IS NOT NULL AND right_node IS NULL
        WHEN node_type = 'JOIN' THEN left_node IS NOT NULL AND right_node IS NOT NULL
        WHEN node_type = 'RACE'
            THEN left_node IS NOT NULL AND right_node IS NOT NULL AND query IS NULL
    END),
    CONSTRAINT nodes_instance_identity_fkey FOREIGN KEY (instance_id, submitted_by)
        REFERENCES df.instances (id, submitted_by) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT nodes_left_node_same_instance_fkey FOREIGN KEY (instance_id, left_node)
        REFERENCES df.nodes (instance_id, id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT nodes_right_node_same_instance_fkey FOREIGN KEY (instance_id, right_node)
        REFERENCES df.nodes (instance_id, id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX idx_nodes_instance ON df.nodes (instance_id);

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
    epoch_id     uuid PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
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
    PRIMARY KEY (instance_id, node_id),
    FOREIGN KEY (instance_id) REFERENCES df.instances (id) ON DELETE CASCADE
);
CREATE INDEX idx_tasks_due ON df._tasks (due_at) WHERE lease_owner IS NULL;
CREATE INDEX idx_tasks_lease ON df._tasks (lease_until) WHERE lease_owner IS NOT NULL;

-- Instances whose graph must be advanced (a child finished, a start, a cancel), from
-- requested_at on (a loop pacing its iterations asks for a later time).
CREATE TABLE df._advance (
    instance_id varchar(8) PRIMARY KEY REFERENCES df.instances (id) ON DELETE CASCADE,
    requested_at timestamptz NOT NULL DEFAULT clock_timestamp()
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
    PRIMARY KEY (instance_id, node_id),
    FOREIGN KEY (instance_id) REFERENCES df.instances (id) ON DELETE CASCADE
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

-- Users may read their own execution history (df.grant_usage grants SELECT).
ALTER TABLE df._executions ENABLE ROW LEVEL SECURITY;
CREATE POLICY executions_user_isolation ON df._executions FOR SELECT
    USING (submitted_by = quote_ident(current_user)::regrole);

REVOKE ALL ON ALL TABLES IN SCHEMA df FROM PUBLIC;
GRANT USAGE ON SCHEMA _duroxide TO PUBLIC;
GRANT SELECT ON _duroxide._worker_ready TO PUBLIC;
