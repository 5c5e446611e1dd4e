-- pgdurable catalog, version 16: the same CHECK constraints, cheaper to apply; the engine's
-- node updates join by index.
--
-- PostgreSQL reads a table's CHECK expressions back from their stored node trees in every
-- statement that writes the table. Written out, ARRAY['SQL'::text, ...] is one constant node
-- per element, and nodes_structure_chk's CASE came to 7 kB of node text: with the other
-- checks, 12.6 kB read in every UPDATE of df.nodes, about a fifth of a step's bookkeeping.
-- Now the lists are single array constants and the structure rule is one function call;
-- names and meaning are unchanged (the integration tests try every rule). All the checks of
-- a table are replaced in one ALTER TABLE, which validates existing rows in a single pass.

-- pg_durable's nodes_structure_chk; NULL (accepted) for a type the rule does not name, as
-- the CASE it replaces (nodes_node_type_chk refuses unknown types). Operators are qualified:
-- a CHECK's own expression is bound when it is created, a function body when it runs.
CREATE FUNCTION df._node_structure_ok(node_type text, left_node text, right_node text,
                                      query text)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN CASE
        WHEN node_type OPERATOR(pg_catalog.=) ANY ('{SQL,SLEEP,WAIT_SCHEDULE,BREAK,HTTP,HTTP_MULTIPART,SIGNAL}'::text[])
            THEN left_node IS NULL AND right_node IS NULL AND query IS NOT NULL
        WHEN node_type OPERATOR(pg_catalog.=) 'THEN'
            THEN left_node IS NOT NULL AND right_node IS NOT NULL AND query IS NULL
        WHEN node_type OPERATOR(pg_catalog.=) 'IF'
            THEN left_node IS NOT NULL AND right_node IS NOT NULL AND query IS NOT NULL
        WHEN node_type OPERATOR(pg_catalog.=) 'LOOP'
            THEN left_node IS NOT NULL AND right_node IS NULL
        WHEN node_type OPERATOR(pg_catalog.=) 'JOIN'
            THEN left_node IS NOT NULL AND right_node IS NOT NULL
        WHEN node_type OPERATOR(pg_catalog.=) 'RACE'
            THEN left_node IS NOT NULL AND right_node IS NOT NULL AND query IS NULL
    END;
END
$$;

ALTER TABLE df.nodes
    DROP CONSTRAINT nodes_node_type_chk,
    DROP CONSTRAINT nodes_status_chk,
    DROP CONSTRAINT nodes_result_status_chk,
    DROP CONSTRAINT nodes_structure_chk,
    ADD CONSTRAINT nodes_node_type_chk CHECK (node_type = ANY (
        '{SQL,THEN,IF,JOIN,LOOP,BREAK,RACE,SLEEP,WAIT_SCHEDULE,HTTP,HTTP_MULTIPART,SIGNAL}'::text[])),
    ADD CONSTRAINT nodes_status_chk CHECK (status = ANY ('{pending,running,completed,failed}'::text[])),
    ADD CONSTRAINT nodes_result_status_chk
        CHECK (result IS NULL OR status = ANY ('{completed,failed}'::text[])),
    ADD CONSTRAINT nodes_structure_chk
        CHECK (df._node_structure_ok(node_type, left_node, right_node, query));

ALTER TABLE df.instances
    DROP CONSTRAINT instances_status_chk,
    ADD CONSTRAINT instances_status_chk
        CHECK (status = ANY ('{pending,running,completed,failed,cancelled}'::text[]));

-- df._apply_plan updates a few nodes of one instance from a JSON list. The planner, which
-- guesses 100 list entries and one node per instance, hashes all the instance's nodes (every
-- node of a 10,000-node graph, at every step) where a lookup per entry is what is wanted.
ALTER FUNCTION df._apply_plan(text, jsonb) SET enable_hashjoin = off SET enable_mergejoin = off;
