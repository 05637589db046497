-- Live operations insight (contract section 9, issue 17). Keep in step with migrations/postgres
-- (same names, same columns).

-- 1. When a conversation was last escalated. Existing rows: the last `conversation.escalated`
--    still in the event log; else, for a conversation escalated now, its last change (the
--    escalation, unless it was edited since); else unknown.
ALTER TABLE conversations ADD COLUMN escalated_at TIMESTAMP;
-- One pass over the log, grouped (not one scan of it per conversation).
UPDATE conversations SET escalated_at = last.at
FROM (
    SELECT json_extract(event, '$.data.id') AS id, max(created_at) AS at
    FROM events WHERE name = 'conversation.escalated' GROUP BY 1
) AS last
WHERE conversations.id = last.id;
UPDATE conversations SET escalated_at = updated_at WHERE state = 'escalated' AND escalated_at IS NULL;
-- The oldest escalation: the first entry of this index.
CREATE INDEX conversations_escalated_at ON conversations (escalated_at) WHERE state = 'escalated';

-- 2. Open tasks by age: the oldest is the first entry; those younger than the SLA deadline
--    are a range scan as long as the tasks created within one SLA period.
CREATE INDEX tasks_open_created_at ON tasks (created_at) WHERE status <> 'completed';

-- 3. Task counts per department and status, kept in the writing transaction. SQLite's
--    default (BINARY) collation orders UTF-8 text by code point. One writer: one shard.
CREATE TABLE department_counters (
    department TEXT NOT NULL,
    status TEXT NOT NULL,
    shard INTEGER NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (department, status, shard)
);
INSERT INTO department_counters (department, status, shard, n)
    SELECT department, status, 0, count(*) FROM tasks GROUP BY department, status;

CREATE TRIGGER tasks_departments_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO department_counters (department, status, shard, n) VALUES (NEW.department, NEW.status, 0, 1)
        ON CONFLICT (department, status, shard) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tasks_departments_update AFTER UPDATE OF status, department ON tasks
    WHEN OLD.status <> NEW.status OR OLD.department <> NEW.department BEGIN
    INSERT INTO department_counters (department, status, shard, n) VALUES (OLD.department, OLD.status, 0, -1)
        ON CONFLICT (department, status, shard) DO UPDATE SET n = n - 1;
    INSERT INTO department_counters (department, status, shard, n) VALUES (NEW.department, NEW.status, 0, 1)
        ON CONFLICT (department, status, shard) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tasks_departments_delete AFTER DELETE ON tasks BEGIN
    INSERT INTO department_counters (department, status, shard, n) VALUES (OLD.department, OLD.status, 0, -1)
        ON CONFLICT (department, status, shard) DO UPDATE SET n = n - 1;
END;

-- 4. A stats topic's value at the end of every minute in which it changed (`minute` is that
--    minute's end).
CREATE TABLE stats_history (
    topic TEXT NOT NULL,
    minute TIMESTAMP NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (topic, minute)
);

-- 5. Settings a cluster must agree on (kept for the same schema; SQLite serves one instance).
CREATE TABLE cluster_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
