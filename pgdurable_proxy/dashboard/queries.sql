-- Named queries the dashboard runs (loaded once by pgdurable_proxy/dashboard/queries.py).
--
-- Every one runs on the signed-in role's own connection, as that role: PostgreSQL's
-- privileges and the catalog's row-level security decide what comes back.

-- name: whoami
SELECT session_user::pg_catalog.text;

-- name: instances_page
-- One page of df.list_instances, newest first ($1 status, $2 page size, $3 label, $4 the
-- cursor of the page before), with each instance's owner.
SELECT l.instance_id, l.label, l.status, l.execution_count, l.created_at, l.completed_at,
       l.next_cursor, i.submitted_by::pg_catalog.text AS owner
FROM df.list_instances($1::pg_catalog.text, $2::pg_catalog.int4, $3::pg_catalog.text,
                       $4::pg_catalog.text) WITH ORDINALITY AS l
LEFT JOIN df.instances i ON i.id OPERATOR(pg_catalog.=) l.instance_id
ORDER BY l.ordinality;

-- name: instance
-- One instance, whether the signed-in role may act on it (is a member of its owner, as
-- df.cancel and df.signal require), and its latest execution.
SELECT i.id::pg_catalog.text AS instance_id, i.label, i.status,
       i.root_node::pg_catalog.text AS root_node, i.submitted_by::pg_catalog.text AS owner,
       pg_catalog.pg_has_role(session_user, i.submitted_by::pg_catalog.oid,
                              'MEMBER') AS may_act,
       i.created_at, i.completed_at, info.current_execution_id AS execution_count, info.output
FROM df.instances i
LEFT JOIN LATERAL df.instance_info(i.id::pg_catalog.text) info ON true
WHERE i.id OPERATOR(pg_catalog.=) $1::pg_catalog.text;

-- name: nodes
-- The instance's graph: every node with its inferred status; results cut at $2 characters.
SELECT n.node_id, n.node_type, n.query, n.result_name, n.left_node, n.right_node, n.status,
       n.inferred_status, pg_catalog.left(n.result, $2) AS result,
       pg_catalog.length(n.result) AS result_length, n.status_details, n.updated_at
FROM df.instance_nodes($1::pg_catalog.text) n
ORDER BY n.node_id;

-- name: executions
-- The latest $3 executions, outputs cut at $2 characters.
SELECT e.execution_id, e.status, e.event_count, e.duration_ms,
       pg_catalog.left(e.output, $2) AS output
FROM df.instance_executions($1::pg_catalog.text, $3::pg_catalog.int4) e;

-- name: explain
SELECT df.explain($1::pg_catalog.text);

-- name: cancel
SELECT df.cancel($1::pg_catalog.text);

-- name: signal
SELECT df.signal($1::pg_catalog.text, $2::pg_catalog.text, $3::pg_catalog.text);

-- name: stalled
-- df.instance_activity: the pending and running instances the role may see with no
-- progress for $1 (oldest progress first), one row per wait, at most $2 rows.
SELECT a.instance_id, a.label, a.status, a.last_progress, a.idle_for, a.node_id,
       a.node_type, a.wait_kind, a.waiting_for, a.since
FROM df.instance_activity($1::pg_catalog.interval) a
LIMIT $2::pg_catalog.int4;
