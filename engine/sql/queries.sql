-- Named queries the engine runs (loaded once by engine/queries.py).
--
-- Some run on a workflow owner's step session, after the owner's own SQL, whose search_path,
-- temporary objects and role defaults the owner controls: a name resolved through it could
-- be the owner's (a pg_temp.jsonb domain whose CHECK saw every plan). So every type,
-- function, operator and table here is schema-qualified; tests/unit/test_engine_sql.py
-- checks each statement. (OPERATOR(...) binds as any operator: parenthesise its operands.)

-- name: poll
-- One scheduler pass: $1 = this engine, $2 = lease seconds, $3 = most advances, $4 = most
-- tasks to claim, $5 = instances whose first step this engine is taking (left out), $6 =
-- most new instances to hand over with their state. Rows of kind 'new' (a new instance,
-- with its owner and, in payload, its state), 'advance', 'task' (claimed) and one 'due'.
SELECT * FROM df._poll($1, $2, $3, $4, $5::pg_catalog.text[], $6);

-- name: renew_leases
-- Renew this engine's leases; the tokens still leased to it come back (a token missing was
-- lost: taken over, or its task dropped). A task row locked by a transaction (its step
-- recording its result, an advance dropping it) is not waited for: it is still ours, and
-- a renewal that waited on a busy instance let every other lease expire.
WITH mine AS (
    SELECT t.instance_id, t.node_id, t.lease_token FROM df._tasks t
    WHERE t.lease_owner OPERATOR(pg_catalog.=) $1
      AND t.lease_token OPERATOR(pg_catalog.=) ANY ($3::pg_catalog.uuid[])
), renewed AS (
    UPDATE df._tasks t
    SET lease_until = pg_catalog.now() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $2)
    WHERE (t.instance_id, t.node_id) OPERATOR(pg_catalog.=) ANY (
        SELECT l.instance_id, l.node_id FROM df._tasks l
        WHERE l.lease_owner OPERATOR(pg_catalog.=) $1
          AND l.lease_token OPERATOR(pg_catalog.=) ANY ($3::pg_catalog.uuid[])
        FOR UPDATE SKIP LOCKED)
)
SELECT lease_token FROM mine;

-- name: load_for_advance
SELECT df._load_for_advance($1)::pg_catalog.text;

-- name: apply_plan
SELECT df._apply_plan($1, $2::pg_catalog.jsonb);

-- name: load_many
-- load_for_advance for several instances, in the order given (state NULL: held elsewhere).
SELECT u.id, df._load_for_advance(u.id)::pg_catalog.text AS state
FROM pg_catalog.unnest($1::pg_catalog.text[]) WITH ORDINALITY AS u(id, n) ORDER BY u.n;

-- name: apply_many
SELECT df._apply_plan(u.id, u.plan::pg_catalog.jsonb)
FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[]))
     AS u(id, plan);

-- name: complete_step
SELECT df._complete_step($1, $2, $3, $4, $5);

-- name: fail_or_retry_step
SELECT df._fail_or_retry($1, $2, $3, $4, $5, $6, $7);

-- name: publish_setting
INSERT INTO df._settings (name, value) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET value = excluded.value;

-- name: server_values
-- pg_durable's names as the server's configuration sets them for the engine's own session
-- (postgresql.conf, ALTER SYSTEM, or a superuser's ALTER ROLE/DATABASE SET): unknown
-- dotted names never reach pg_settings, so they are read one by one.
SELECT name, pg_catalog.current_setting(name, true) AS value
FROM pg_catalog.unnest($1::pg_catalog.text[]) AS name
WHERE pg_catalog.current_setting(name, true) IS NOT NULL;

-- name: may_read_config_files
SELECT pg_catalog.has_function_privilege('pg_catalog.pg_show_all_file_settings()', 'EXECUTE');

-- name: config_file_values
-- The last line of each pg_durable.* name in the configuration files: where it came from.
SELECT DISTINCT ON (name) name, setting AS value, sourcefile, sourceline
FROM pg_catalog.pg_file_settings
WHERE name LIKE 'pg\_durable.%' AND error IS NULL
ORDER BY name, seqno DESC;

-- name: worker_ready
INSERT INTO _duroxide._worker_ready (sentinel, schema_version) VALUES (true, $1)
ON CONFLICT (sentinel) DO UPDATE SET schema_version = excluded.schema_version;

-- name: hold_epoch
-- On the presence connection: hold this engine's epoch lock while the session lives.
SELECT df._hold_epoch($1);

-- name: heartbeat
-- On the presence connection: refresh this engine's df._worker_epoch row, remove dead ones.
SELECT df._heartbeat($1, $2);

-- name: live_engines
-- On the presence connection, after a heartbeat: the engines alive (the heartbeats remove
-- the rows of those whose session is gone), in the order that shares out wake-ups.
SELECT w.epoch_id FROM df._worker_epoch w ORDER BY w.epoch_id;

-- name: in_flight
-- At start-up: the instances not finished, and the steps leased to an engine (after a
-- crash, an engine gone: taken over once their lease expires).
SELECT (SELECT pg_catalog.count(*) FROM df.instances WHERE status IN ('pending', 'running')),
       (SELECT pg_catalog.count(*) FROM df._tasks WHERE lease_owner IS NOT NULL);

-- name: reset_step_session
-- Leave a pooled step connection as a fresh login would find it (RESET ALL skips role).
SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; UNLISTEN *;
SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES;

-- name: as_login_role
-- Until the transaction ends, act as the session's login role: a runner may cancel only its
-- own backends, and a step session runs as the owner.
SET LOCAL ROLE NONE;

-- name: cancel_backend
SELECT pg_catalog.pg_cancel_backend($1);

-- name: complete_and_load
SELECT df._complete_and_load($1, $2, $3, $4, $5);

-- name: apply_as_step
SELECT df._apply_as_step($1, $2, $3, $4::pg_catalog.jsonb);

-- name: new_start_ack
-- A transaction_mode => 'new' request was taken up; old answers are cleared on the way.
WITH pruned AS (
    DELETE FROM df._new_starts
    WHERE created_at OPERATOR(pg_catalog.<)
          (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) '10 minutes'::pg_catalog.interval)
)
INSERT INTO df._new_starts (request) VALUES ($1) ON CONFLICT (request) DO NOTHING;

-- name: new_start_answer
UPDATE df._new_starts SET instance_id = $2, error = $3, sqlstate = $4
WHERE request OPERATOR(pg_catalog.=) $1;

-- name: may_act_as
-- May a session that logged in as $1 start instances as $2 (as SET ROLE would allow)?
SELECT $1::pg_catalog.text OPERATOR(pg_catalog.=) $2::pg_catalog.text
       OR coalesce(pg_catalog.pg_has_role($1::pg_catalog.text::pg_catalog.name,
                                          $2::pg_catalog.text::pg_catalog.name, 'MEMBER'), false)
FROM pg_catalog.pg_roles
WHERE rolname OPERATOR(pg_catalog.=) $1
  AND EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) $2);

-- name: start_in_this_transaction
SELECT df.start($1, $2, $3, 'caller',
                coalesce(($4::pg_catalog.jsonb OPERATOR(pg_catalog.->>) 'max_attempts')::pg_catalog.int4, 1),
                coalesce(pg_catalog.make_interval(secs => ($4::pg_catalog.jsonb OPERATOR(pg_catalog.->>) 'max_backoff')::pg_catalog.float8), '16s'),
                'fail');

-- name: runner_of
SELECT runner::pg_catalog.text FROM df._runners WHERE owner OPERATOR(pg_catalog.=) $1;

-- name: set_runner_password
SELECT df._set_runner_password($1, $2);

-- name: http_privilege
-- May the role of OID $1 run HTTP steps now? EXECUTE on builder $2, and whether it is a
-- superuser (no row: the role is gone).
SELECT pg_catalog.has_function_privilege(r.oid, $2::pg_catalog.text, 'EXECUTE') AS allowed,
       r.rolsuper
FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) $1::pg_catalog.oid;

-- name: complete_held
SELECT df._complete_held($1, $2, $3, $4, $5, $6::pg_catalog.jsonb);

-- name: complete_held_or_record
SELECT df._complete_held_or_record($1, $2, $3, $4, $5, $6::pg_catalog.jsonb);

-- name: held_state_check
-- The stored state of an instance and whether a change waits for an advance (one snapshot).
SELECT df._instance_state($1)::pg_catalog.text AS state,
       EXISTS (SELECT 1 FROM df._advance a WHERE a.instance_id OPERATOR(pg_catalog.=) $1) AS pending;

-- name: leased_or_refuse
SELECT df._leased_or_refuse($1, $2, $3);

-- name: first_still_due
SELECT df._first_still_due($1, $2, $3);

-- name: apply_first_or_refuse
SELECT df._apply_first_or_refuse($1, $2, $3, $4::pg_catalog.jsonb);

-- name: promote_first
SELECT df._promote_first($1, $2, $3::pg_catalog.jsonb);

-- name: advances_due
-- Of these instances, those with an advance due now (one that a lock made us skip).
SELECT DISTINCT a.instance_id::pg_catalog.text FROM df._advance a
WHERE a.instance_id OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[])
  AND a.requested_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp();

-- name: record_signal
-- df.signal through pgdurable: store the signal now if the session that logged in as $1
-- may send it as $2 (catalog control.sql: df._record_signal). True: stored.
SELECT df._record_signal($1, $2, $3, $4, $5, $6::pg_catalog.jsonb);

-- name: prune_finished
-- One retention batch (df._prune_finished): $1 = retention window, $2 = finished instances
-- kept at most (0: no cap), $3 = most instances deleted. No row: another process prunes now.
SELECT by_age, by_cap FROM df._prune_finished($1::pg_catalog.interval, $2, $3);

-- name: catalog_gauges
-- /metrics' view of the catalog (engine/catalog_gauges.py), read at most once a second.
-- Each count walks one index range and stops at $1 rows, so that a scrape costs the same
-- with a million finished instances as with none: unfinished instances by status
-- (idx_instances_status), due tasks no engine holds (idx_tasks_due) or whose lease expired
-- (idx_tasks_lease), due advances (idx_advance_due); each oldest is the first entry of the
-- same range. The size of df.instances is PostgreSQL's estimate, not a count.
SELECT
    (SELECT pg_catalog.count(*) FROM (SELECT FROM df.instances i
         WHERE i.status OPERATOR(pg_catalog.=) 'pending' LIMIT $1) s) AS pending,
    (SELECT pg_catalog.count(*) FROM (SELECT FROM df.instances i
         WHERE i.status OPERATOR(pg_catalog.=) 'running' LIMIT $1) s) AS running,
    (SELECT pg_catalog.count(*) FROM (SELECT FROM df._tasks t
         WHERE t.lease_owner IS NULL AND t.due_at OPERATOR(pg_catalog.<=) pg_catalog.now()
         LIMIT $1) s) AS tasks_unclaimed,
    (SELECT pg_catalog.count(*) FROM (SELECT FROM df._tasks t
         WHERE t.lease_owner IS NOT NULL AND t.lease_until OPERATOR(pg_catalog.<) pg_catalog.now()
         LIMIT $1) s) AS tasks_lease_expired,
    pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) least(
        (SELECT pg_catalog.min(t.due_at) FROM df._tasks t
         WHERE t.lease_owner IS NULL AND t.due_at OPERATOR(pg_catalog.<=) pg_catalog.now()),
        (SELECT pg_catalog.min(t.lease_until) FROM df._tasks t
         WHERE t.lease_owner IS NOT NULL
           AND t.lease_until OPERATOR(pg_catalog.<) pg_catalog.now()))) AS tasks_oldest_seconds,
    (SELECT pg_catalog.count(*) FROM (SELECT FROM df._advance a
         WHERE a.requested_at OPERATOR(pg_catalog.<=) pg_catalog.now() LIMIT $1) s) AS advances_due,
    pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-)
        (SELECT pg_catalog.min(a.requested_at) FROM df._advance a
         WHERE a.requested_at OPERATOR(pg_catalog.<=) pg_catalog.now())) AS advances_oldest_seconds,
    (SELECT c.reltuples FROM pg_catalog.pg_class c
     WHERE c.oid OPERATOR(pg_catalog.=) 'df.instances'::pg_catalog.regclass)::pg_catalog.float8
        AS instances_estimate;
