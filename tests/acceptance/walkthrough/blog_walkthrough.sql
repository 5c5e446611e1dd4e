-- The public pg_durable walkthrough (Franck Pachot's "try it yourself" blog post), as the
-- project's own psql script: the post's statements in the post's order, each followed by
-- checks of what the post shows. tests/acceptance/test_walkthrough.py runs it through
-- pgdurable on every test run; run it by hand with:
--
--   psql "postgresql://postgres@127.0.0.1:<pgdurable port>/postgres" -X -v ON_ERROR_STOP=1 -f blog_walkthrough.sql
--
-- Connect as a role that can create roles and call df.grant_usage. The script can run again
-- on the same database (franck is created only once), and other instances may exist.
--
-- Sleeps are shorter than the post's so that the script takes a few seconds: the sequence
-- sleeps 1 s (post: 5 s), the parallel branches 3 s and 2 s (post: 20 s and 10 s), the
-- race 2 s against 20 s (post: 30 s against 90 s). Timestamps, instance ids, node ids and
-- durations differ on every run: the checks are about what stays the same, and about the
-- timing only where it is the point (a sleep is waited for; parallel branches overlap).
--
-- A failed check raises "blog walkthrough: <what>" (ON_ERROR_STOP makes psql exit 3); the
-- last line echoed is the one the test looks for.

\set ON_ERROR_STOP on
\pset pager off

-- Checks, created again in each session (pg_temp goes away with \c): expect(what, ok) and
-- same(what, got, want) raise when the check fails and return 'ok: <what>' otherwise.
\set define_checks 'CREATE FUNCTION pg_temp.expect(what text, ok boolean) RETURNS text LANGUAGE plpgsql AS $f$ BEGIN IF ok IS NOT TRUE THEN RAISE EXCEPTION ''blog walkthrough: %'', what; END IF; RETURN ''ok: '' || what; END $f$; CREATE FUNCTION pg_temp.same(what text, got text, want text) RETURNS text LANGUAGE plpgsql AS $f$ BEGIN IF got IS DISTINCT FROM want THEN RAISE EXCEPTION ''blog walkthrough: %: got %, expected %'', what, coalesce(got, ''NULL''), coalesce(want, ''NULL''); END IF; RETURN ''ok: '' || what; END $f$;'

SELECT current_user AS admin \gset
:define_checks

-- ===========================================================================================
-- Installing pg_durable
-- ===========================================================================================
-- The post builds the extension, sets shared_preload_libraries and pg_durable.worker_role,
-- lists `\dconfig pg_durable.*` and creates the superworker role. pgdurable needs none of
-- that: it installed its catalog when it started, in the database of its upstream DSN (what
-- pg_durable.database names), and CREATE EXTENSION is a no-op.
SELECT pg_temp.same('df.target_database() is the database the post connects to',
                    df.target_database(), current_database());
CREATE EXTENSION pg_durable;
SELECT pg_temp.expect('after CREATE EXTENSION the df schema is there',
                      to_regnamespace('df') IS NOT NULL);

-- ===========================================================================================
-- Hello World
-- ===========================================================================================
-- A user that will execute workflows, with access to pg_durable (created once).
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'franck') AS create_franck \gset
\if :create_franck
CREATE USER franck;
\endif
SELECT format('GRANT CREATE ON DATABASE %I TO franck', current_database()) \gexec
SELECT df.grant_usage('franck');
SELECT pg_temp.expect('franck may use df', has_schema_privilege('franck', 'df', 'USAGE')
                      AND (SELECT bool_and(has_function_privilege('franck', p.oid, 'EXECUTE'))
                           FROM pg_proc p
                           WHERE p.proname = 'start' AND p.pronamespace = 'df'::regnamespace));

-- The post reads df.metrics() after hello world; keep the counts from before it.
SELECT total_instances AS before_total, completed_instances AS before_completed
FROM df.metrics() \gset

\c - franck
:define_checks
SELECT pg_temp.same('connected as franck', current_user::text, 'franck');

-- Start a durable workflow.
SELECT df.start(
$$SELECT 'Hello, durable world!' AS message$$
) AS hello \gset
SELECT pg_temp.expect('df.start returns an 8-hex-digit instance id', :'hello' ~ '^[0-9a-f]{8}$');

-- "One second later, it is completed": wait for it rather than sleep.
SELECT pg_temp.same('hello world finishes', df.await_instance(:'hello', 10), 'completed');
SELECT df.status(:'hello') AS status \gset
SELECT pg_temp.same('df.status', :'status', 'completed');

-- The result is a document with the list of rows (jsonb text form, a space after ':' and ',').
SELECT df.result(:'hello') AS result \gset
SELECT pg_temp.same('df.result', :'result',
                    '{"rows": [{"message": "Hello, durable world!"}], "row_count": 1}');

-- df.list_instances(): the latest instance first; its output is the compact JSON text.
SELECT instance_id AS li_id, coalesce(label, '<null>') AS li_label, function_name AS li_function,
       status AS li_status, execution_count AS li_executions, output AS li_output
FROM df.list_instances() LIMIT 1 \gset
SELECT pg_temp.same('df.list_instances: record 1 is hello world', :'li_id', :'hello');
SELECT pg_temp.same('df.list_instances: no label', :'li_label', '<null>');
SELECT pg_temp.same('df.list_instances: function_name', :'li_function',
                    'pg_durable::orchestration::execute-function-graph');
SELECT pg_temp.same('df.list_instances: status', :'li_status', 'completed');
SELECT pg_temp.same('df.list_instances: execution_count', :'li_executions', '1');
SELECT pg_temp.same('df.list_instances: output', :'li_output',
                    '{"rows":[{"message":"Hello, durable world!"}],"row_count":1}');

-- df.explain(): the instance, its status and output, then the single completed SQL node.
SELECT df.explain(:'hello') AS explain \gset
SELECT pg_temp.same('df.explain line 1', split_part(:'explain', E'\n', 1), 'Instance: ' || :'hello');
SELECT pg_temp.same('df.explain line 2',
                    regexp_replace(split_part(:'explain', E'\n', 2), '^Status: +', 'Status: '),
                    'Status: ✓ Completed');
SELECT pg_temp.same('df.explain line 3',
                    regexp_replace(split_part(:'explain', E'\n', 3), '^Output: +', 'Output: '),
                    'Output: {"rows":[{"message":"Hello, durable world!"}],"row_count":1}');
SELECT pg_temp.same('df.explain line 4', split_part(:'explain', E'\n', 4), '');
SELECT pg_temp.same('df.explain line 5', rtrim(split_part(:'explain', E'\n', 5)),
                    'SQL: SELECT ''Hello, durable world!'' AS message ✓');

-- df.instance_nodes(): a single SQL node, no name, no children, completed, with the result.
\x
SELECT * FROM df.instance_nodes(:'hello');
\x
SELECT pg_temp.expect('df.instance_nodes: one completed SQL leaf with the result',
         count(*) = 1
         AND bool_and(node_id ~ '^[0-9a-f]{8}$')
         AND bool_and(node_type = 'SQL')
         AND bool_and(query = 'SELECT ''Hello, durable world!'' AS message')
         AND bool_and(result_name IS NULL AND left_node IS NULL AND right_node IS NULL)
         AND bool_and(status = 'completed')
         AND bool_and(result = '{"rows": [{"message": "Hello, durable world!"}], "row_count": 1}')
         AND bool_and(updated_at IS NOT NULL))
FROM df.instance_nodes(:'hello');

-- df.instance_executions(): executed once.
SELECT * FROM df.instance_executions(:'hello');
SELECT count(*) AS ex_count, min(execution_id) AS ex_id, min(status) AS ex_status,
       min(event_count) AS ex_events, min(duration_ms) AS ex_ms, min(output) AS ex_output
FROM df.instance_executions(:'hello') \gset
SELECT pg_temp.same('df.instance_executions: one execution', :'ex_count', '1');
SELECT pg_temp.same('df.instance_executions: execution_id', :'ex_id', '1');
SELECT pg_temp.same('df.instance_executions: status', :'ex_status', 'Completed');
SELECT pg_temp.expect('df.instance_executions: events and duration',
                      :'ex_events'::bigint > 0 AND :'ex_ms'::bigint >= 0);
SELECT pg_temp.same('df.instance_executions: output', :'ex_output',
                    '{"rows":[{"message":"Hello, durable world!"}],"row_count":1}');

-- df.metrics(): the post shows 1 instance, 1 completed, 0 failed, 1 execution. The post ran
-- it as franck; since pg_durable 0.2.4 df.grant_usage does not grant it, so ask as the admin,
-- and count relative to before hello world (the database may hold other instances).
\c - :admin
:define_checks
SELECT * FROM df.metrics();
SELECT pg_temp.expect('df.metrics counts hello world as one more completed instance',
         total_instances = :before_total + 1
         AND completed_instances >= :before_completed + 1
         AND total_executions >= 1
         AND total_events >= :ex_events)
FROM df.metrics();

-- ===========================================================================================
-- Beyond a Single Query: sequential execution (~>), with named results (|=>) and a label
-- ===========================================================================================
\c - franck
:define_checks
SELECT df.start(
'SELECT now() as step1' |=> 't1'
~> 'SELECT pg_sleep(1)'
~> 'SELECT now() as step2' |=> 't2'
~> 'SELECT now() as step3' |=> 't3',
'sequential-timing'
) as i \gset

-- "Check the results after five seconds" (here: when it finishes).
SELECT pg_temp.same('the sequence finishes', df.await_instance(:'i', 15), 'completed');
SELECT df.result(:'i');
SELECT pg_temp.expect('df.result is the last step''s rows, one step3 timestamp',
         df.result(:'i')::jsonb ->> 'row_count' = '1'
         AND (df.result(:'i')::jsonb #>> '{rows,0,step3}')::timestamptz IS NOT NULL);
SELECT pg_temp.same('the label is kept', label, 'sequential-timing')
FROM df.list_instances() WHERE instance_id = :'i';

SELECT node_type, result_name, result, node_id, left_node, right_node FROM df.instance_nodes(:'i');
-- The post's 7 nodes: PostgreSQL groups the operators from the left, so t1 names the first
-- SQL node while t2 and t3 name THEN nodes; a THEN's result is its right child's.
WITH n AS (SELECT * FROM df.instance_nodes(:'i'))
SELECT pg_temp.expect('the sequence is the post''s tree of 3 THEN and 4 SQL nodes',
         (SELECT count(*) FROM n) = 7
         AND (SELECT count(*) FROM n WHERE status = 'completed') = 7
         AND EXISTS (
           SELECT 1
           FROM n t3
           JOIN n t2 ON t2.node_id = t3.left_node
           JOIN n s3 ON s3.node_id = t3.right_node
           JOIN n th ON th.node_id = t2.left_node
           JOIN n s2 ON s2.node_id = t2.right_node
           JOIN n t1 ON t1.node_id = th.left_node
           JOIN n sl ON sl.node_id = th.right_node
           WHERE t3.node_type = 'THEN' AND t3.result_name = 't3' AND t3.result = s3.result
             AND t2.node_type = 'THEN' AND t2.result_name = 't2' AND t2.result = s2.result
             AND th.node_type = 'THEN' AND th.result_name IS NULL AND th.result = sl.result
             AND t1.node_type = 'SQL' AND t1.result_name = 't1' AND t1.query = 'SELECT now() as step1'
             AND sl.node_type = 'SQL' AND sl.result_name IS NULL AND sl.query = 'SELECT pg_sleep(1)'
             AND s2.node_type = 'SQL' AND s2.result_name IS NULL AND s2.query = 'SELECT now() as step2'
             AND s3.node_type = 'SQL' AND s3.result_name IS NULL AND s3.query = 'SELECT now() as step3'
             AND sl.result = '{"rows": [{"pg_sleep": null}], "row_count": 1}'
             AND t3.result = df.result(:'i')
             AND t1.left_node IS NULL AND t1.right_node IS NULL))
FROM (SELECT 1) AS one;

-- "steps 2 and 3 occur 5 seconds after step 1" (here: at least the 1 s sleep after it).
WITH t AS (
  SELECT (SELECT (result::jsonb #>> '{rows,0,step1}')::timestamptz FROM df.instance_nodes(:'i') WHERE result_name = 't1') AS step1,
         (SELECT (result::jsonb #>> '{rows,0,step2}')::timestamptz FROM df.instance_nodes(:'i') WHERE result_name = 't2') AS step2,
         (SELECT (result::jsonb #>> '{rows,0,step3}')::timestamptz FROM df.instance_nodes(:'i') WHERE result_name = 't3') AS step3
)
SELECT pg_temp.expect('step 2 runs after the sleep, step 3 after step 2',
         step2 - step1 >= interval '1 second' AND step3 >= step2)
FROM t;

-- ===========================================================================================
-- Parallel execution (&): the join waits for both branches, which run at the same time
-- ===========================================================================================
SELECT df.start(
('SELECT now() as branch1' |=> 'b1' ~> 'SELECT pg_sleep(3)')
&
('SELECT now() as branch2' |=> 'b2' ~> 'SELECT pg_sleep(2)')
~> 'SELECT now() as after_join' |=> 'final',
'parallel-sleep'
) as i \gset
SELECT pg_temp.same('the join finishes', df.await_instance(:'i', 15), 'completed');

SELECT node_type, result_name, result, node_id, left_node, right_node FROM df.instance_nodes(:'i');
WITH n AS (SELECT * FROM df.instance_nodes(:'i'))
SELECT pg_temp.expect('the join is the post''s tree of 9 nodes (1 JOIN, 3 THEN, 5 SQL)',
         (SELECT count(*) FROM n) = 9
         AND (SELECT count(*) FROM n WHERE node_type = 'JOIN') = 1
         AND (SELECT count(*) FROM n WHERE node_type = 'THEN') = 3
         AND (SELECT count(*) FROM n WHERE node_type = 'SQL') = 5
         AND EXISTS (
           SELECT 1
           FROM n fin
           JOIN n j ON j.node_id = fin.left_node
           JOIN n aj ON aj.node_id = fin.right_node
           JOIN n l ON l.node_id = j.left_node
           JOIN n r ON r.node_id = j.right_node
           JOIN n b1 ON b1.node_id = l.left_node
           JOIN n w1 ON w1.node_id = l.right_node
           JOIN n b2 ON b2.node_id = r.left_node
           JOIN n w2 ON w2.node_id = r.right_node
           WHERE fin.node_type = 'THEN' AND fin.result_name = 'final' AND fin.result = aj.result
             AND aj.node_type = 'SQL' AND aj.query = 'SELECT now() as after_join'
             AND j.node_type = 'JOIN' AND j.result_name IS NULL
             AND l.node_type = 'THEN' AND r.node_type = 'THEN'
             AND b1.node_type = 'SQL' AND b1.result_name = 'b1' AND b1.query = 'SELECT now() as branch1'
             AND b2.node_type = 'SQL' AND b2.result_name = 'b2' AND b2.query = 'SELECT now() as branch2'
             AND w1.query = 'SELECT pg_sleep(3)' AND w2.query = 'SELECT pg_sleep(2)'
             -- a JOIN's result is the array of its branches' results, in order
             AND j.result = '[{"rows": [{"pg_sleep": null}], "row_count": 1}, {"rows": [{"pg_sleep": null}], "row_count": 1}]'
             AND fin.result = df.result(:'i')))
FROM (SELECT 1) AS one;

-- "b1 and b2 started at the same time ... the final step started after 20 seconds" (here:
-- after the 3 s branch, and before 5 s, what running the branches one after the other takes).
WITH t AS (
  SELECT (SELECT (result::jsonb #>> '{rows,0,branch1}')::timestamptz FROM df.instance_nodes(:'i') WHERE result_name = 'b1') AS b1,
         (SELECT (result::jsonb #>> '{rows,0,branch2}')::timestamptz FROM df.instance_nodes(:'i') WHERE result_name = 'b2') AS b2,
         (SELECT (result::jsonb #>> '{rows,0,after_join}')::timestamptz FROM df.instance_nodes(:'i') WHERE result_name = 'final') AS fin
)
SELECT pg_temp.expect('the branches start together and the join waits for the longer one only',
         abs(extract(epoch FROM b1 - b2)) < 1
         AND fin - least(b1, b2) >= interval '3 seconds'
         AND fin - least(b1, b2) < interval '5 seconds')
FROM t;

SELECT * FROM df.instance_executions(:'i');
SELECT pg_temp.expect('one completed execution of 3 s, not 5 s, whose output is the final step''s',
         count(*) = 1
         AND bool_and(execution_id = 1 AND status = 'Completed' AND event_count > 0)
         AND bool_and(duration_ms >= 3000 AND duration_ms < 5000)
         AND bool_and(output::jsonb = df.result(:'i')::jsonb))
FROM df.instance_executions(:'i');

-- ===========================================================================================
-- Race (|): continue as soon as one branch has a result
-- ===========================================================================================
SELECT clock_timestamp() AS race_start \gset
SELECT df.start(
'SELECT pg_sleep(2)' | 'SELECT pg_sleep(20)' ~> 'SELECT ''fast'' as winner',
'race-test'
) as i \gset

-- The post watches pg_stat_activity: both branches run at once, in franck's sessions.
-- (Poll with a COMMIT per round: a transaction sees a frozen pg_stat_activity.)
DO $$
BEGIN
  FOR round IN 1..100 LOOP
    EXIT WHEN (SELECT count(*) FROM pg_stat_activity
               WHERE usename = current_user AND pid <> pg_backend_pid() AND state = 'active'
                 AND wait_event = 'PgSleep'
                 AND query IN ('SELECT pg_sleep(2)', 'SELECT pg_sleep(20)')) = 2;
    PERFORM pg_sleep(0.02);
    COMMIT;
  END LOOP;
END $$;
SELECT pg_temp.expect('both race branches run at the same time as franck',
         count(*) = 2)
FROM pg_stat_activity
WHERE usename = user AND pid <> pg_backend_pid() AND state = 'active' AND wait_event = 'PgSleep'
  AND query IN ('SELECT pg_sleep(2)', 'SELECT pg_sleep(20)');

SELECT pg_temp.same('the race finishes', df.await_instance(:'i', 15), 'completed');
SELECT pg_temp.expect('the race finishes with the fast branch, not the 20 s one',
                      clock_timestamp() - :'race_start'::timestamptz < interval '15 seconds');
SELECT pg_temp.same('the step after the race runs', df.result(:'i'),
                    '{"rows": [{"winner": "fast"}], "row_count": 1}');
WITH n AS (SELECT * FROM df.instance_nodes(:'i'))
SELECT pg_temp.expect('THEN(RACE(2 s, 20 s), winner); the RACE''s result is the 2 s branch''s',
         (SELECT count(*) FROM n) = 5
         AND EXISTS (
           SELECT 1
           FROM n th
           JOIN n race ON race.node_id = th.left_node
           JOIN n w ON w.node_id = th.right_node
           JOIN n fast ON fast.node_id = race.left_node
           JOIN n slow ON slow.node_id = race.right_node
           WHERE th.node_type = 'THEN' AND race.node_type = 'RACE'
             AND w.query = 'SELECT ''fast'' as winner'
             AND fast.query = 'SELECT pg_sleep(2)' AND fast.status = 'completed'
             AND slow.query = 'SELECT pg_sleep(20)'
             AND race.result = fast.result
             AND fast.result = '{"rows": [{"pg_sleep": null}], "row_count": 1}'))
FROM (SELECT 1) AS one;

-- The post's watch then shows pg_sleep(90) still running after the race ended. pgdurable
-- deliberately cancels a race's losing SQL (README, "Where pgdurable deliberately differs"),
-- so here the 20 s sleep goes away.
DO $$
BEGIN
  FOR round IN 1..100 LOOP
    EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity
                          WHERE usename = current_user AND state = 'active'
                            AND query = 'SELECT pg_sleep(20)');
    PERFORM pg_sleep(0.05);
    COMMIT;
  END LOOP;
END $$;
SELECT pg_temp.expect('the losing branch no longer runs',
         NOT EXISTS (SELECT 1 FROM pg_stat_activity
                     WHERE usename = user AND state = 'active' AND query = 'SELECT pg_sleep(20)'));

\echo 'blog walkthrough: all checks passed'
