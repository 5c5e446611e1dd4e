-- Named queries about running steps (loaded with queries.sql by engine/queries.py).

-- name: task_still_leased
-- Does the step's task row still carry this lease token? A step's transaction deletes that
-- row when it records the result (df._record_step, df._complete_held), so after a
-- connection died mid-step: true means the transaction did not commit (run it again),
-- false that it committed, or that the lease went to another engine (leave it).
SELECT EXISTS (SELECT 1 FROM df._tasks
               WHERE instance_id = $1 AND node_id = $2 AND lease_token = $3);
