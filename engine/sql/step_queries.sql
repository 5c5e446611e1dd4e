-- Named queries about running steps (loaded with queries.sql by engine/queries.py). Every
-- name schema-qualified, as in queries.sql (tests/unit/test_engine_sql.py).

-- name: task_still_leased
-- Does the step's task row still carry this lease token? A step's transaction deletes that
-- row when it records the result (df._record_step, df._complete_held), so after a
-- connection died mid-step: true means the transaction did not commit (run it again),
-- false that it committed, or that the lease went to another engine (leave it).
SELECT EXISTS (SELECT 1 FROM df._tasks
               WHERE instance_id OPERATOR(pg_catalog.=) $1 AND node_id OPERATOR(pg_catalog.=) $2
                 AND lease_token OPERATOR(pg_catalog.=) $3);

-- name: claim_own_leases
-- The due tasks of instance $1 leased to this engine ($2) that it does not run (their
-- tokens are not among $3): a step's COMMIT that lost its connection may have leased the
-- instance's next steps to this engine without the engine learning of it. They are taken
-- now, with fresh tokens, instead of after their leases expire ($4: lease seconds).
UPDATE df._tasks t
SET lease_token = pg_catalog.gen_random_uuid(),
    lease_until = pg_catalog.now() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $4),
    attempts = t.attempts OPERATOR(pg_catalog.+) 1
FROM df.instances i
WHERE i.id OPERATOR(pg_catalog.=) t.instance_id
  AND (t.instance_id, t.node_id) OPERATOR(pg_catalog.=) ANY (
      SELECT c.instance_id, c.node_id FROM df._tasks c
      WHERE c.instance_id OPERATOR(pg_catalog.=) $1 AND c.lease_owner OPERATOR(pg_catalog.=) $2
        AND c.lease_token OPERATOR(pg_catalog.<>) ALL ($3::pg_catalog.uuid[])
        AND c.due_at OPERATOR(pg_catalog.<=) pg_catalog.now()
      FOR UPDATE SKIP LOCKED)
RETURNING t.instance_id, t.node_id, t.node_type, t.payload, t.lease_token, t.attempts,
          (SELECT r.rolname FROM pg_catalog.pg_roles r
           WHERE r.oid OPERATOR(pg_catalog.=) df._instance_owner(t.instance_id)) AS owner,
          df._instance_owner(t.instance_id)::pg_catalog.oid AS owner_oid, i.database;

-- name: begin_step
-- A step's BEGIN, with df._step_guard's verdict on its owner in the command tag
-- (SELECT 2: may run; 1: a superuser now; 0: gone), in one round trip.
BEGIN; SELECT FROM df._step_guard();

-- name: begin_step_or_refuse
-- A step's BEGIN when its statement follows unanswered: df._step_guard_or_refuse fails the
-- transaction if the owner may not run it, so the statement never runs. $1: superusers
-- allowed (written into the text: a simple Query has no parameters).
BEGIN; SELECT df._step_guard_or_refuse($1);

-- name: step_guard_elsewhere
-- df._step_guard's query, for a step in a database without the catalog (another round trip).
SELECT FROM pg_catalog.pg_roles r, (VALUES (true), (false)) AS v(any_role)
WHERE r.oid OPERATOR(pg_catalog.=) pg_catalog.current_setting('df.step_owner')::pg_catalog.oid
  AND (v.any_role OR NOT r.rolsuper);
