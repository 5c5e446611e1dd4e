-- pgdurable catalog: the operators of pg_durable (spec §3.2), over the builders' functions.
-- Installed once, after the functions (an upgrade that changes an operator says so).

-- pg_durable installs its operators into pg_catalog (a superuser-only extension), so they
-- resolve under any search_path. pgdurable must install without superuser (managed
-- services' admin roles are not superusers), so the operators live in schema public, which
-- every database has and the default search_path ("$user", public) contains; their
-- functions stay in df. pg_dump also keeps them (it skips pg_catalog). A session whose
-- search_path omits public can write OPERATOR(public.~>) or call the df.* functions.
--
-- None of these shadows a built-in: there is no built-in text ~> text, |=>, ?>, !>, and
-- the built-in &, | (integers, bit, inet, macaddr) and binary @> (arrays, jsonb, ranges,
-- geometry) keep their exact-type matches; only untyped literals now resolve to text,
-- where they were ambiguous (an error) before.
CREATE OPERATOR public.~> (LEFTARG = text, RIGHTARG = text, FUNCTION = df.seq);
CREATE OPERATOR public.|=> (LEFTARG = text, RIGHTARG = text, FUNCTION = df.as_op);
CREATE OPERATOR public.& (LEFTARG = text, RIGHTARG = text, FUNCTION = df.join);
CREATE OPERATOR public.| (LEFTARG = text, RIGHTARG = text, FUNCTION = df.race);
CREATE OPERATOR public.?> (LEFTARG = text, RIGHTARG = text, FUNCTION = df.if_then_op);
CREATE OPERATOR public.!> (LEFTARG = text, RIGHTARG = text, FUNCTION = df.if_else_op);
CREATE OPERATOR public.@> (RIGHTARG = text, FUNCTION = df.loop_prefix_op);
-- Compensation (pg_durable's proposal). There is no built-in text <-> text (the geometric
-- and tsquery ones keep their types); pg_trgm's similarity distance is one, and when it is
-- installed in public already the operator is left out (df.with_undo does the same).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_operator o
               WHERE o.oprname = '<->' AND o.oprnamespace = 'public'::regnamespace
                 AND o.oprleft = 'text'::regtype AND o.oprright = 'text'::regtype) THEN
        RAISE NOTICE 'public.<->(text, text) exists already (pg_trgm?): write df.with_undo(forward, undo) instead of <->';
    ELSE
        CREATE OPERATOR public.<-> (LEFTARG = text, RIGHTARG = text, FUNCTION = df.with_undo);
    END IF;
END
$$;
