-- Live operations insight (contract section 9, issue 17). Keep in step with migrations/sqlite
-- (same names, same columns).
-- Writers wait while the new counters are filled from the tables (once, at upgrade).
LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE;
LOCK TABLE conversations IN SHARE ROW EXCLUSIVE MODE;

-- 1. When a conversation was last escalated. Existing rows: the last `conversation.escalated`
--    still in the event log; else, for a conversation escalated now, its last change (the
--    escalation, unless it was edited since); else unknown.
ALTER TABLE conversations ADD COLUMN escalated_at TIMESTAMP;
UPDATE conversations AS c SET escalated_at = last.at
FROM (
    SELECT (event::jsonb -> 'data' ->> 'id')::BIGINT AS id, max(created_at) AS at
    FROM events WHERE name = 'conversation.escalated' GROUP BY 1
) AS last
WHERE c.id = last.id;
UPDATE conversations SET escalated_at = updated_at WHERE state = 'escalated' AND escalated_at IS NULL;
-- The oldest escalation: the first entry of this index.
CREATE INDEX conversations_escalated_at ON conversations (escalated_at) WHERE state = 'escalated';

-- 2. Open tasks by age: the oldest is the first entry; those younger than the SLA deadline
--    are a range scan as long as the tasks created within one SLA period.
CREATE INDEX tasks_open_created_at ON tasks (created_at) WHERE status <> 'completed';

-- 3. Task counts per department and status, kept in the writing transaction like
--    stats_counters (sharded by backend, so concurrent writers never wait on one row).
--    COLLATE "C": departments are listed in code-point order, straight from the key.
CREATE TABLE department_counters (
    department TEXT COLLATE "C" NOT NULL,
    status TEXT NOT NULL,
    shard INTEGER NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (department, status, shard)
);
INSERT INTO department_counters (department, status, shard, n)
    SELECT department, status, 0, count(*) FROM tasks GROUP BY department, status;

CREATE FUNCTION pulse_department_add(v_department TEXT, v_status TEXT, v_shard INTEGER, v_delta INTEGER)
RETURNS VOID LANGUAGE sql AS $$
    INSERT INTO department_counters AS c (department, status, shard, n)
        VALUES (v_department, v_status, v_shard, v_delta)
        ON CONFLICT (department, status, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
$$;
-- Counter rows are locked in one order (by department, then status), whichever way a task
-- moves, so two transactions never take the same two rows in opposite orders (see
-- pulse_count_by_column). This trigger fires after tasks_count (triggers fire by name), so
-- every writer takes stats_counters rows before department_counters rows.
CREATE FUNCTION pulse_count_departments() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_shard INTEGER := pg_backend_pid() % 16;
    old_key TEXT[];
    new_key TEXT[];
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN old_key := ARRAY[OLD.department, OLD.status]; END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN new_key := ARRAY[NEW.department, NEW.status]; END IF;
    IF old_key IS NOT DISTINCT FROM new_key THEN RETURN NULL; END IF;
    IF old_key IS NOT NULL AND (new_key IS NULL OR old_key COLLATE "C" < new_key COLLATE "C") THEN
        PERFORM pulse_department_add(old_key[1], old_key[2], v_shard, -1);
        old_key := NULL;
    END IF;
    IF new_key IS NOT NULL THEN
        PERFORM pulse_department_add(new_key[1], new_key[2], v_shard, 1);
    END IF;
    IF old_key IS NOT NULL THEN
        PERFORM pulse_department_add(old_key[1], old_key[2], v_shard, -1);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER tasks_count_departments AFTER INSERT OR UPDATE OF status, department OR DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION pulse_count_departments();

-- 4. A stats topic's value at the end of every minute in which it changed (`minute` is that
--    minute's end). Instances write the same minute with INSERT … ON CONFLICT DO NOTHING.
CREATE TABLE stats_history (
    topic TEXT NOT NULL,
    minute TIMESTAMP NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (topic, minute)
);

-- 5. Settings a cluster must agree on (TASK_SLA_SECONDS): the first instance stores its
--    value, an instance configured with another refuses to start.
CREATE TABLE cluster_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
