-- Upgrade to catalog version 21 (pg_durable 0.2.8 parity) from version 20. The installer
-- then re-runs the catalog's code files (CREATE OR REPLACE), in the same transaction, so a
-- function whose body changed needs nothing here; table changes, dropped or renamed
-- functions and changed result types do. Every statement is written to run on any
-- database at version 20.
SELECT 1;
