-- pgdurable catalog: df.instance_activity, "is it stuck?" (issue 17; the name pg_durable's
-- failure-policy proposal gives it): the caller's instances with no progress for a while,
-- and what each waits for.

-- What each of the instances `p_instances` waits for, one row per wait: each leaf task
-- (df._tasks: a timer, a step waiting for a slot, running, or whose lease expired), each
-- signal wait, else the advance it waits for. SECURITY DEFINER, since the engine's tables
-- are private: it answers only for instances of roles the session user is a member of (as
-- df._acting_owner does), and df.instance_activity hands it only the instances row-level
-- security shows the caller. An engine is alive while its heartbeat (every third of its
-- --lease-seconds, at most 5 s) is younger than its --lease-seconds.
CREATE OR REPLACE FUNCTION df._instance_waits(p_instances text[])
RETURNS TABLE (instance_id text, node_id text, node_type text, wait_kind text,
               waiting_for text, since timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH mine AS MATERIALIZED (
        SELECT i.id, i.status, i.created_at FROM df.instances i
        WHERE i.id = ANY (p_instances) AND pg_has_role(session_user, i.submitted_by, 'MEMBER')
    ), engine AS MATERIALIZED (
        SELECT coalesce(bool_or(e.last_seen_at > now() - make_interval(secs => e.lease_seconds)),
                        false) AS alive,
               CASE WHEN max(e.last_seen_at) IS NULL THEN 'an engine: none has run here'
                    ELSE format('an engine: none seen since %s', max(e.last_seen_at)::timestamptz(0))
               END AS none
        FROM df._worker_epoch e
    ), tasks AS (
        SELECT t.*, CASE WHEN t.lease_owner IS NULL AND t.due_at > now() THEN 'timer'
                         WHEN t.lease_owner IS NULL AND NOT engine.alive THEN 'engine'
                         WHEN t.lease_owner IS NULL THEN 'step slot'
                         WHEN t.lease_until < now() THEN 'lease expired'
                         ELSE 'running' END AS kind, engine.none
        FROM df._tasks t JOIN mine m ON m.id = t.instance_id CROSS JOIN engine
    ), signals AS (
        SELECT n.instance_id, n.id, coalesce(s.iteration_started_at, n.updated_at) AS since,
               df._inspect_jsonb(n.query) AS config
        FROM df.nodes n JOIN mine m ON m.id = n.instance_id AND m.status = 'running'
        LEFT JOIN df._node_state s ON s.instance_id = n.instance_id AND s.node_id = n.id
        WHERE n.node_type = 'SIGNAL' AND n.status = 'running'
    ), waits AS (
        SELECT t.instance_id::text, t.node_id::text, t.node_type, t.kind,
               CASE t.kind
                   WHEN 'timer' THEN format('timer until %s', t.due_at::timestamptz(0))
                   WHEN 'engine' THEN format('%s (due since %s)', t.none, t.due_at::timestamptz(0))
                   WHEN 'step slot' THEN format('a step slot (due since %s)', t.due_at::timestamptz(0))
                   WHEN 'lease expired' THEN format('lease expired at %s (engine gone?)',
                                                    t.lease_until::timestamptz(0))
                   ELSE format('%s step running for %s', t.node_type,
                               date_trunc('second', now() - t.created_at))
               END,
               CASE t.kind WHEN 'step slot' THEN t.due_at WHEN 'engine' THEN t.due_at
                           WHEN 'lease expired' THEN t.lease_until ELSE t.created_at END
        FROM tasks t
      UNION ALL
        SELECT s.instance_id::text, s.id::text, 'SIGNAL', 'signal',
               format('signal %L', s.config ->> 'signal_name')
               || CASE WHEN jsonb_typeof(s.config -> 'timeout_seconds') = 'number'
                       THEN format(' (times out at %s)', (s.since + make_interval(
                           secs => (s.config ->> 'timeout_seconds')::double precision))::timestamptz(0))
                       ELSE '' END,
               s.since
        FROM signals s
    )
    SELECT * FROM waits
  UNION ALL
    -- an instance with none of those waits for an advance: its first, a due one, or the
    -- time a loop's next iteration may start
    SELECT m.id::text, NULL, NULL,
           CASE WHEN a.requested_at > now() THEN 'timer' ELSE 'engine' END,
           CASE WHEN a.requested_at > now()
                    THEN format('timer until %s', a.requested_at::timestamptz(0))
                WHEN m.status = 'pending' THEN 'its first advance'
                WHEN a.requested_at IS NOT NULL
                    THEN format('an advance (due since %s)', a.requested_at::timestamptz(0))
                ELSE 'nothing recorded (being advanced now?)' END
           || CASE WHEN NOT engine.alive AND coalesce(a.requested_at <= now(), true)
                   THEN ': ' || engine.none ELSE '' END,
           CASE WHEN m.status = 'pending' THEN m.created_at ELSE a.requested_at END
    FROM mine m CROSS JOIN engine
    LEFT JOIN LATERAL (SELECT min(x.requested_at) AS requested_at FROM df._advance x
                       WHERE x.instance_id = m.id) a ON true
    WHERE m.id NOT IN (SELECT w.instance_id FROM waits w)
$$;

-- The caller's unfinished instances (row-level security) that have not changed for
-- `stalled_for` or longer, the longest quiet first, each with what it waits for (one row
-- per wait: a JOIN may wait for several). Progress is the instance's or one of its nodes'
-- last change (updated_at): a step that starts or ends, a timer that fires, a signal taken.
CREATE OR REPLACE FUNCTION df.instance_activity(stalled_for interval)
RETURNS TABLE (instance_id text, label text, status text, last_progress timestamptz,
               idle_for interval, node_id text, node_type text, wait_kind text,
               waiting_for text, since timestamptz)
LANGUAGE plpgsql VOLATILE STRICT AS $$
#variable_conflict use_column
BEGIN
    IF stalled_for < interval '0' THEN
        RAISE EXCEPTION 'stalled_for must not be negative' USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    WITH stalled AS MATERIALIZED (
        SELECT q.* FROM (
            SELECT i.id, i.label, i.status,
                   greatest(i.updated_at, (SELECT max(n.updated_at) FROM df.nodes n
                                           WHERE n.instance_id = i.id)) AS progress
            FROM df.instances i
            WHERE i.status IN ('pending', 'running')) q
        WHERE q.progress <= now() - stalled_for
    )
    SELECT s.id::text, s.label, s.status, s.progress, date_trunc('second', now() - s.progress),
           w.node_id, w.node_type, w.wait_kind, w.waiting_for, w.since
    FROM stalled s
    LEFT JOIN df._instance_waits(ARRAY(SELECT x.id::text FROM stalled x)) w
           ON w.instance_id = s.id
    ORDER BY s.progress, s.id, w.node_id;
END
$$;
