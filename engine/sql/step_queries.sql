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
          (SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) i.submitted_by)
          AS owner, i.database;
