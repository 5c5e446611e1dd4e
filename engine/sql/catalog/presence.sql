-- pgdurable catalog: the engine's presence in its database (spec §1, §2.4): the heartbeat
-- rows of df._worker_epoch, and whether an engine is ready for df.start.
--
-- Each running pgdurable has one df._worker_epoch row, keyed by the epoch id it drew at
-- start, and its presence connection (engine/presence.py) holds a session advisory lock on
-- that epoch for as long as the process lives. Its heartbeat refreshes last_seen_at and
-- removes the rows whose lock nobody holds: their process is gone (PostgreSQL releases a
-- session's locks when its client dies, SIGKILL included). So several processes keep one
-- row each, a dead one's row goes at the next heartbeat of a living one, and a pgdurable
-- that starts replaces the row its predecessor left: a database served by one pgdurable
-- has exactly one row. The last process to stop leaves its row, whose last_seen_at says
-- when an engine was last alive (pg_durable's documented liveness query).

-- The advisory lock of an epoch: (PRESENCE_LOCK, these 32 bits of its id). ASCII "pgde".
CREATE OR REPLACE FUNCTION df._epoch_lock_key(p_epoch uuid)
RETURNS integer LANGUAGE sql IMMUTABLE
RETURN ('x' || left(replace(p_epoch::text, '-', ''), 8))::bit(32)::integer;

-- Held by the engine's presence connection for the life of its session.
CREATE OR REPLACE FUNCTION df._hold_epoch(p_epoch uuid)
RETURNS boolean LANGUAGE sql
RETURN pg_catalog.pg_try_advisory_lock(1885824101, df._epoch_lock_key(p_epoch));
REVOKE EXECUTE ON FUNCTION df._hold_epoch(uuid) FROM PUBLIC;

-- One heartbeat (run on the presence connection, which holds the epoch's lock): this
-- engine's row, written again if a sibling took it for dead while this engine was
-- reconnecting, and the rows of engines whose lock is free removed (a free lock is taken
-- until the commit, so two heartbeats never both decide about the same row).
CREATE OR REPLACE FUNCTION df._heartbeat(p_epoch uuid, p_lease_seconds double precision)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM df._worker_epoch w
    WHERE w.epoch_id <> p_epoch
      AND pg_try_advisory_xact_lock(1885824101, df._epoch_lock_key(w.epoch_id));
    INSERT INTO df._worker_epoch (epoch_id, lease_seconds) VALUES (p_epoch, p_lease_seconds)
    ON CONFLICT (epoch_id) DO UPDATE SET last_seen_at = now(), lease_seconds = p_lease_seconds;
END
$$;
REVOKE EXECUTE ON FUNCTION df._heartbeat(uuid, double precision) FROM PUBLIC;

-- Wake an engine once the calling transaction commits. On a session pgdurable relays
-- (pg_durable.relay = on), a NOTICE its relay takes out of the stream: the relay wakes its
-- own engine when the session's transaction has ended. Any other session notifies df_wake,
-- which every engine listens on and shares by the sending backend's PID (each acts on its
-- share; the poll interval is the net). Relayed sessions notify nothing: PostgreSQL wakes
-- every listening backend of the database to read the queue for each notification, on
-- whatever channel (a transaction each), so each relayed df.start cost every pgdurable
-- process's listener that work. Any role may listen or notify: a notification says nothing.
-- A direct session that sets pg_durable.relay itself only loses its own wake-ups, which the
-- poll interval then catches.
CREATE OR REPLACE FUNCTION df._wake_engines()
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
SET client_min_messages = notice AS $$
BEGIN
    IF current_setting('pg_durable.relay', true) = 'on' THEN
        RAISE NOTICE USING MESSAGE = 'pgdurable:wake';
    ELSE
        PERFORM pg_notify('df_wake', '');
    END IF;
END
$$;

-- df.start's readiness check (§3.3 step 8): an engine is ready when it has initialised
-- the catalog (_duroxide._worker_ready, the row pg_durable's own check reads) and one was
-- alive within its lease: a heartbeat younger than that process's lease, the time after
-- which a silent process's tasks are taken over. A pgdurable killed and restarted within its lease
-- therefore never makes a start fail, and one gone for longer does. The time PostgreSQL
-- itself was down does not count against the engine, which cannot write then.
CREATE OR REPLACE FUNCTION df._require_engine()
RETURNS void LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM FROM _duroxide._worker_ready r, df._worker_epoch w
    WHERE r.schema_version >= 1
      AND greatest(w.last_seen_at, pg_postmaster_start_time())
          > statement_timestamp() - make_interval(secs => w.lease_seconds)
    LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'failed to start durable function: pg_durable background worker not yet initialized — try again in a moment'
            USING ERRCODE = '55000';
    END IF;
END
$$;
