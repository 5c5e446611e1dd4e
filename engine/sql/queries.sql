-- Named queries the engine runs (loaded once by engine/queries.py).

-- name: poll
-- One scheduler pass: $1 = this engine, $2 = lease seconds, $3 = most advances, $4 = most
-- tasks to claim. Rows of kind 'advance', 'task' (claimed) and one 'due'.
SELECT * FROM df._poll($1, $2, $3, $4);

-- name: renew_leases
UPDATE df._tasks SET lease_until = now() + make_interval(secs => $2)
WHERE lease_owner = $1 AND lease_token = ANY ($3::uuid[])
RETURNING lease_token;

-- name: load_for_advance
SELECT df._load_for_advance($1)::text;

-- name: apply_plan
SELECT df._apply_plan($1, $2::jsonb);

-- name: load_many
-- load_for_advance for several instances, in the order given (state NULL: held elsewhere).
SELECT u.id, df._load_for_advance(u.id)::text AS state
FROM unnest($1::text[]) WITH ORDINALITY AS u(id, n) ORDER BY u.n;

-- name: apply_many
SELECT df._apply_plan(u.id, u.plan::jsonb) FROM unnest($1::text[], $2::text[]) AS u(id, plan);

-- name: complete_step
SELECT df._complete_step($1, $2, $3, $4, $5);

-- name: fail_step
SELECT df._fail_step($1, $2, $3, $4, $5);

-- name: publish_setting
INSERT INTO df._settings (name, value) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET value = excluded.value;

-- name: worker_ready
INSERT INTO _duroxide._worker_ready (sentinel, schema_version) VALUES (true, $1)
ON CONFLICT (sentinel) DO UPDATE SET schema_version = excluded.schema_version;

-- name: heartbeat
INSERT INTO df._worker_epoch (epoch_id) VALUES ($1)
ON CONFLICT (epoch_id) DO UPDATE SET last_seen_at = now();

-- name: reset_step_session
-- Leave a pooled step connection as a fresh login would find it (RESET ALL skips role).
SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; UNLISTEN *;
SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES;

-- name: as_login_role
-- Until the transaction ends, act as the session's login role: a runner may cancel only its
-- own backends, and a step session runs as the owner.
SET LOCAL ROLE NONE;

-- name: cancel_backend
SELECT pg_cancel_backend($1);

-- name: complete_and_load
SELECT df._complete_and_load($1, $2, $3, $4, $5);

-- name: apply_as_step
SELECT df._apply_as_step($1, $2, $3::jsonb);

-- name: new_start_ack
-- A transaction_mode => 'new' request was taken up; old answers are cleared on the way.
WITH pruned AS (
    DELETE FROM df._new_starts WHERE created_at < clock_timestamp() - interval '10 minutes'
)
INSERT INTO df._new_starts (request) VALUES ($1) ON CONFLICT (request) DO NOTHING;

-- name: new_start_answer
UPDATE df._new_starts SET instance_id = $2, error = $3, sqlstate = $4 WHERE request = $1;

-- name: may_act_as
-- May a session that logged in as $1 start instances as $2 (as SET ROLE would allow)?
SELECT $1::text = $2::text
       OR coalesce(pg_has_role($1::text::name, $2::text::name, 'MEMBER'), false)
FROM pg_roles WHERE rolname = $1 AND EXISTS (SELECT FROM pg_roles r WHERE r.rolname = $2);

-- name: start_in_this_transaction
SELECT df.start($1, $2, $3);

-- name: runner_of
SELECT runner::text FROM df._runners WHERE owner = $1;

-- name: set_runner_password
SELECT df._set_runner_password($1, $2);

-- name: http_privilege
-- May role $1 run HTTP steps now? EXECUTE on builder $2 (no row: the role is gone).
SELECT has_function_privilege(r.oid, $2::text, 'EXECUTE') FROM pg_roles r WHERE r.rolname = $1;

-- name: complete_held
SELECT df._complete_held($1, $2, $3, $4, $5, $6::jsonb);

-- name: held_state_check
-- The stored state of an instance and whether a change waits for an advance (one snapshot).
SELECT df._instance_state($1)::text AS state,
       EXISTS (SELECT 1 FROM df._advance a WHERE a.instance_id = $1) AS pending;

-- name: first_state
SELECT df._first_state($1, $2);

-- name: apply_first
SELECT df._apply_first($1, $2, $3, $4::jsonb);

-- name: promote_first
SELECT df._promote_first($1, $2, $3::jsonb);

-- name: advances_due
-- Of these instances, those with an advance due now (one that a lock made us skip).
SELECT a.instance_id::text FROM df._advance a
WHERE a.instance_id = ANY ($1::text[]) AND a.requested_at <= clock_timestamp();
