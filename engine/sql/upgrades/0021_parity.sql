-- Upgrade to catalog version 21 (pg_durable 0.2.8 parity) from version 20. The installer
-- then re-runs the catalog's code files (CREATE OR REPLACE), in the same transaction, so a
-- function whose body changed needs nothing here; table changes, dropped or renamed
-- functions and changed result types do. Every statement is written to run on any
-- database at version 20.
SELECT 1;

-- df.loop(body, condition, continue_on_failure) (issue 14, item 15): the two-argument
-- df.loop goes; the code files create the three-argument one, which calls with one or two
-- arguments (and df.loop_prefix_op, behind @>) find. RESTRICT: an object of the
-- administrator's that depends on the old signature must be changed first.
DROP FUNCTION IF EXISTS df.loop(text, text);

-- Retries (issue 15, item 1): df.start's failure policy on its instance, and df.start's
-- new arguments (max_attempts, max_backoff, on_failure): the four-argument df.start goes,
-- the code files create the seven-argument one (calls with up to four arguments find it).
ALTER TABLE df.instances ADD COLUMN IF NOT EXISTS failure_policy jsonb;
DROP FUNCTION IF EXISTS df.start(text, text, text, text);
DROP FUNCTION IF EXISTS df._start_new(text, text, text);
DROP FUNCTION IF EXISTS df._submit(text);
