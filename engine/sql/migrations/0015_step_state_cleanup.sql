-- pgdurable catalog, version 15: the engine's per-step rows stop checking their instance.
--
-- Every step inserts a _tasks row (the next step's lease) and a _node_state row (its result
-- as written), and a foreign key made each insert look the instance up again under a share
-- lock: about six extra lookups per three-step workflow. Those rows are only ever written
-- by df._apply_plan, which holds the instance's row lock, and by df._record_step, whose
-- transaction also inserts an _advance row (that foreign key stays, with its share lock):
-- either way the instance exists and cannot go away before they commit. Their other duty,
-- removing the rows with their instance, is now done by triggers on df.instances (users
-- cannot delete instances; an administrator's DELETE or TRUNCATE ... CASCADE can).

ALTER TABLE df._tasks DROP CONSTRAINT _tasks_instance_id_fkey;
ALTER TABLE df._node_state DROP CONSTRAINT _node_state_instance_id_fkey;

CREATE FUNCTION df._forget_deleted_instances()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM df._tasks t USING gone g WHERE t.instance_id = g.id;
    DELETE FROM df._node_state s USING gone g WHERE s.instance_id = g.id;
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION df._forget_deleted_instances() FROM PUBLIC;
CREATE TRIGGER instances_forget_step_rows AFTER DELETE ON df.instances
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION df._forget_deleted_instances();

CREATE FUNCTION df._forget_truncated_instances()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    TRUNCATE df._tasks, df._node_state;
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION df._forget_truncated_instances() FROM PUBLIC;
CREATE TRIGGER instances_truncate_step_rows AFTER TRUNCATE ON df.instances
    FOR EACH STATEMENT EXECUTE FUNCTION df._forget_truncated_instances();
