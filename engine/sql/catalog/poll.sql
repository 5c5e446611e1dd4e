-- pgdurable catalog: the scheduler's pass (df._poll), called on the engine's admin
-- connection: what is due to advance, the tasks it claims, and when to look again.

-- Is the instance paused (df.pause)? Its tasks wait.
CREATE OR REPLACE FUNCTION df._paused(p_instance text)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM df.instances i WHERE i.id = p_instance AND i.status = 'paused')
$$;
REVOKE EXECUTE ON FUNCTION df._paused(text) FROM PUBLIC;

-- One round trip per scheduler pass: the instances due for an advance, the due tasks
-- claimed for this engine (at most p_claims), and the seconds until the next timer or paced
-- loop (NULL: nothing scheduled). An instance due for its first advance, whose steps run in
-- this database, comes as kind 'new' with its owner (df._instance_owner: OID and name),
-- and the first p_documents of them (as many first steps as the engine takes on now) with
-- the state to plan that from (df._first_document): the engine may then run its first step
-- in the same transaction as its first advance, on the owner's connection. The instances
-- in p_busy (first steps this engine is taking now) are left out while they are pending
-- (once promoted or cancelled, their advances are due as any). A claimed task comes with
-- its instance's owner too. An instance with a failure policy is advanced as usual: a
-- first step that fails in the first transaction runs again as a task, and that hidden
-- attempt must not count against (nor add to) its attempts. The tasks of a paused instance
-- are neither claimed nor counted as due (df.pause); while no instance is paused, which one
-- probe of idx_instances_status tells, that costs the claims nothing more.
--
-- Several pgdurable processes share the work: the _advance rows a pass hands out are
-- claimed for this engine for p_lease_seconds (claimed_by, claimed_until), and every other
-- pass leaves them alone until then, as a task's lease. A row this engine holds a claim on
-- already is locked, not written again: its version (xmin and ctid) is that of the first
-- document a relayed df.start announced (df._announce_first), which a claim's UPDATE would
-- make stale. Rows another transaction holds
-- (a pass of another process claiming them, a first transaction, an advance) are skipped,
-- and their instances left out of this pass. So each new instance is taken by one process,
-- whose first-transaction check (df._first_unchanged) also fails should its claim have run
-- out and another process claimed the row again (a new xmin). The next due time leaves out
-- the instances looked at in this pass, and the rows claimed by other processes (the poll
-- interval finds them once their claim ran out).
--
-- A pass costs about the same with 100,000 due tasks or new instances queued as with a
-- few (tests/bench/claims): each part reads the first entries of one index range. The
-- instances to advance are found among the first 4 × p_advances due _advance rows
-- (idx_advance_due), which hold the instances due first (fewer than p_advances when
-- instances have many rows: the rest, still due, make the engine poll again at once). The
-- claim takes the first entries of idx_tasks_claimable: tasks in the order they became
-- claimable (a task no engine holds from its due time, an expired lease from its expiry,
-- due time breaking ties), each looked up with its instance (a join could read all of
-- df.instances). The statements that read a list (the busy instances, those handed out)
-- run only when it has entries: on an empty one, PostgreSQL planned them afresh at every
-- pass once df.instances was large.
CREATE OR REPLACE FUNCTION df._poll(p_owner uuid, p_lease_seconds double precision,
                         p_advances integer, p_claims integer, p_busy text[],
                         p_documents integer)
RETURNS TABLE (kind text, instance_id text, node_id text, node_type text, payload text,
               lease_token uuid, attempts integer, owner name, owner_oid oid, database text,
               due double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    busy text[] := '{}';  -- of p_busy, the instances still pending
    looked text[];  -- the instances this pass chose: not due again for the next pass
    news text[];  -- of them, the new instances (first advance, steps in this database)
    documented text[];  -- of those, the first p_documents: handed out with their state
    taken text[] := '{}';  -- of them, those whose due rows it claimed: handed out
    leased integer := 0;  -- tasks claimed
    paused boolean := EXISTS (SELECT 1 FROM df.instances p WHERE p.status = 'paused');
BEGIN
    IF cardinality(p_busy) > 0 THEN
        SELECT coalesce(array_agg(i.id), '{}') INTO busy
        FROM df.instances i WHERE i.id = ANY (p_busy) AND i.status = 'pending';
    END IF;
    SELECT coalesce(array_agg(c.instance_id ORDER BY c.at), '{}'),
           coalesce(array_agg(c.instance_id) FILTER (WHERE c.new), '{}'),
           coalesce(array_agg(c.instance_id) FILTER (WHERE c.new AND c.n <= p_documents), '{}')
    INTO looked, news, documented
    FROM (SELECT d.instance_id, d.at, d.new,
                 row_number() OVER (PARTITION BY d.new ORDER BY d.at) AS n
          FROM (SELECT a.instance_id, min(a.requested_at) AS at,
                       bool_and(i.status = 'pending' AND i.database IS NULL
                                AND i.failure_policy IS NULL) AS new
                FROM (SELECT a.instance_id, a.requested_at FROM df._advance a
                      WHERE a.requested_at <= clock_timestamp() AND a.instance_id <> ALL (busy)
                        AND (a.claimed_by IS NULL OR a.claimed_by = p_owner
                             OR a.claimed_until < clock_timestamp())
                      ORDER BY a.requested_at LIMIT p_advances * 4) a
                     JOIN df.instances i ON i.id = a.instance_id
                GROUP BY a.instance_id) d) c;
    IF cardinality(looked) > p_advances THEN
        looked := looked[1:p_advances];
    END IF;
    IF cardinality(looked) > 0 THEN
        WITH free AS (
            SELECT x.instance_id, x.node_id,
                   x.claimed_by = p_owner AND x.claimed_until >= clock_timestamp() AS ours
            FROM df._advance x
            WHERE x.instance_id = ANY (looked) AND x.requested_at <= clock_timestamp()
              AND (x.claimed_by IS NULL OR x.claimed_by = p_owner
                   OR x.claimed_until < clock_timestamp())
            FOR UPDATE SKIP LOCKED),
        claim AS (
            UPDATE df._advance a
            SET claimed_by = p_owner,
                claimed_until = clock_timestamp() + make_interval(secs => p_lease_seconds)
            FROM free f
            WHERE a.instance_id = f.instance_id AND a.node_id = f.node_id
              AND f.ours IS NOT TRUE
            RETURNING a.instance_id)
        SELECT coalesce(array_agg(DISTINCT t.instance_id), '{}') INTO taken
        FROM (SELECT c.instance_id FROM claim c
              UNION ALL SELECT f.instance_id FROM free f WHERE f.ours) t;
        RETURN QUERY
        SELECT CASE WHEN t.id = ANY (news) THEN 'new' ELSE 'advance' END, t.id, NULL::text,
               NULL::text,
               CASE WHEN t.id = ANY (documented) THEN df._first_document(t.id) END,
               NULL::uuid, NULL::integer, r.rolname, o.owner::oid, NULL::text,
               NULL::double precision
        FROM unnest(looked) WITH ORDINALITY AS t(id, ord)
             CROSS JOIN LATERAL (SELECT CASE WHEN t.id = ANY (news)
                                             THEN df._instance_owner(t.id) END AS owner) o
             LEFT JOIN pg_roles r ON r.oid = o.owner
        WHERE t.id = ANY (taken)
        ORDER BY t.ord;
    END IF;
    IF p_claims > 0 THEN
        RETURN QUERY
        WITH claimed AS (
            UPDATE df._tasks t
            SET lease_owner = p_owner, lease_token = gen_random_uuid(),
                lease_until = now() + make_interval(secs => p_lease_seconds),
                attempts = t.attempts + 1
            WHERE (t.instance_id, t.node_id) IN (
                  SELECT c.instance_id, c.node_id FROM df._tasks c
                  WHERE CASE WHEN c.lease_owner IS NULL THEN c.due_at ELSE c.lease_until END
                        <= now()
                    AND c.due_at <= now() AND (c.lease_owner IS NULL OR c.lease_until < now())
                    AND NOT (paused AND df._paused(c.instance_id))
                    -- its instance exists (a scalar subquery: looked up per task, not joined)
                    AND (SELECT true FROM df.instances i WHERE i.id = c.instance_id)
                  ORDER BY CASE WHEN c.lease_owner IS NULL THEN c.due_at ELSE c.lease_until END,
                           c.due_at
                  LIMIT p_claims
                  FOR UPDATE SKIP LOCKED)
            RETURNING t.instance_id, t.node_id, t.node_type, t.payload, t.lease_token,
                      t.attempts)
        SELECT 'task', c.instance_id::text, c.node_id::text, c.node_type, c.payload,
               c.lease_token, c.attempts, r.rolname, o.owner::oid,
               (SELECT i.database FROM df.instances i WHERE i.id = c.instance_id),
               NULL::double precision
        FROM claimed c
             CROSS JOIN LATERAL (SELECT df._instance_owner(c.instance_id) AS owner) o
             LEFT JOIN pg_roles r ON r.oid = o.owner;
        GET DIAGNOSTICS leased = ROW_COUNT;
    END IF;
    IF leased = 0 AND cardinality(taken) > 0 THEN
        -- it wrote claims only: its COMMIT need not wait for its WAL to reach the disk (a
        -- claim lost in a crash of PostgreSQL is taken again; a first step checks the
        -- version of the row it read, df._first_unchanged)
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    RETURN QUERY
    SELECT 'due', NULL::text, NULL::text, NULL::text, NULL::text, NULL::uuid, NULL::integer,
           NULL::name, NULL::oid, NULL::text,
           extract(epoch FROM least(
               (SELECT min(a.requested_at) FROM df._advance a
                WHERE a.instance_id <> ALL (busy) AND a.instance_id <> ALL (looked)
                  AND (a.claimed_by IS NULL OR a.claimed_by = p_owner
                       OR a.claimed_until < clock_timestamp())),
               (SELECT min(t.due_at) FROM df._tasks t
                WHERE t.lease_owner IS NULL AND NOT (paused AND df._paused(t.instance_id))))
               - clock_timestamp())::double precision;
END
$$;
REVOKE EXECUTE ON FUNCTION df._poll(uuid, double precision, integer, integer, text[], integer) FROM PUBLIC;
