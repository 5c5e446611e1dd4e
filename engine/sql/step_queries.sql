-- Named queries about running steps (loaded with queries.sql by engine/queries.py).

-- name: task_still_leased
-- Does the step's task row still carry this lease token? A step's transaction deletes that
-- row when it records the result (df._record_step, df._complete_held), so after a
-- connection died mid-step: true means the transaction did not commit (run it again),
-- false that it committed, or that the lease went to another engine (leave it).
SELECT EXISTS (SELECT 1 FROM df._tasks
               WHERE instance_id = $1 AND node_id = $2 AND lease_token = $3);

-- name: claim_own_leases
-- The due tasks of instance $1 leased to this engine ($2) that it does not run (their
-- tokens are not among $3): a step's COMMIT that lost its connection may have leased the
-- instance's next steps to this engine without the engine learning of it. They are taken
-- now, with fresh tokens, instead of after their leases expire ($4: lease seconds).
UPDATE df._tasks t
SET lease_token = gen_random_uuid(), lease_until = now() + make_interval(secs => $4),
    attempts = t.attempts + 1
FROM df.instances i
WHERE i.id = t.instance_id
  AND (t.instance_id, t.node_id) IN (
      SELECT c.instance_id, c.node_id FROM df._tasks c
      WHERE c.instance_id = $1 AND c.lease_owner = $2 AND c.lease_token <> ALL ($3::uuid[])
        AND c.due_at <= now()
      FOR UPDATE SKIP LOCKED)
RETURNING t.instance_id, t.node_id, t.node_type, t.payload, t.lease_token, t.attempts,
          (SELECT r.rolname FROM pg_roles r WHERE r.oid = i.submitted_by) AS owner, i.database;
