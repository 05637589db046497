-- Pulse schema, SQLite flavour. Keep in step with migrations/postgres (same names, same columns).
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'manager', 'staff')),
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    department TEXT NOT NULL,
    description TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'in_progress', 'completed')),
    assignee TEXT REFERENCES users (username),
    created_by TEXT NOT NULL REFERENCES users (username),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    completed_at TIMESTAMP
);
-- Filtered, newest-first listings.
CREATE INDEX tasks_status_id ON tasks (status, id);
CREATE INDEX tasks_department_id ON tasks (department, id);
CREATE INDEX tasks_assignee_id ON tasks (assignee, id);

CREATE TABLE conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    guest_name TEXT NOT NULL,
    channel TEXT NOT NULL,
    subject TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'escalated', 'resolved')),
    escalation_reason TEXT,
    created_by TEXT NOT NULL REFERENCES users (username),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    resolved_at TIMESTAMP
);
CREATE INDEX conversations_state_id ON conversations (state, id);

CREATE TABLE approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    summary TEXT NOT NULL,
    payload TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'executed')),
    requested_by TEXT NOT NULL REFERENCES users (username),
    decided_by TEXT REFERENCES users (username),
    decision_reason TEXT,
    decided_at TIMESTAMP,
    executed_by TEXT REFERENCES users (username),
    executed_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX approvals_status_id ON approvals (status, id);

-- The event log (transactional outbox): one row per event, written in the change's transaction.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    actor TEXT NOT NULL,
    event TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX events_created_at ON events (created_at);

-- Stats kept by the database itself, in the writing transaction, so reading them costs
-- the same whatever the size of the tables. One row per (topic, bucket) on SQLite (one writer).
CREATE TABLE stats_counters (
    topic TEXT NOT NULL,
    bucket TEXT NOT NULL,
    shard INTEGER NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (topic, bucket, shard)
);

CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO stats_counters (topic, bucket, shard, n) VALUES ('tasks', NEW.status, 0, 1)
        ON CONFLICT (topic, bucket, shard) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tasks_count_update AFTER UPDATE OF status ON tasks WHEN OLD.status <> NEW.status BEGIN
    INSERT INTO stats_counters (topic, bucket, shard, n) VALUES ('tasks', OLD.status, 0, -1)
        ON CONFLICT (topic, bucket, shard) DO UPDATE SET n = n - 1;
    INSERT INTO stats_counters (topic, bucket, shard, n) VALUES ('tasks', NEW.status, 0, 1)
        ON CONFLICT (topic, bucket, shard) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks BEGIN
    INSERT INTO stats_counters (topic, bucket, shard, n) VALUES ('tasks', OLD.status, 0, -1)
        ON CONFLICT (topic, bucket, shard) DO UPDATE SET n = n - 1;
END;

CREATE TRIGGER conversations_count_insert AFTER INSERT ON conversations BEGIN
    INSERT INTO stats_counters (topic, bucket, shard, n) VALUES ('conversations', NEW.state, 0, 1)
        ON CONFLICT (topic, bucket, shard) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER conversations_count_update AFTER UPDATE OF state ON conversations WHEN OLD.state <> NEW.state BEGIN
    INSERT INTO stats_counters (topic, bucket, shard, n) VALUES ('conversations', OLD.state, 0, -1)
        ON CONFLICT (topic, bucket, shard) DO UPDATE SET n = n - 1;
    INSERT INTO stats_counters (topic, bucket, shard, n) VALUES ('conversations', NEW.state, 0, 1)
        ON CONFLICT (topic, bucket, shard) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER conversations_count_delete AFTER DELETE ON conversations BEGIN
    INSERT INTO stats_counters (topic, bucket, shard, n) VALUES ('conversations', OLD.state, 0, -1)
        ON CONFLICT (topic, bucket, shard) DO UPDATE SET n = n - 1;
END;

CREATE TRIGGER approvals_count_insert AFTER INSERT ON approvals BEGIN
    INSERT INTO stats_counters (topic, bucket, shard, n) VALUES ('approvals', NEW.status, 0, 1)
        ON CONFLICT (topic, bucket, shard) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER approvals_count_update AFTER UPDATE OF status ON approvals WHEN OLD.status <> NEW.status BEGIN
    INSERT INTO stats_counters (topic, bucket, shard, n) VALUES ('approvals', OLD.status, 0, -1)
        ON CONFLICT (topic, bucket, shard) DO UPDATE SET n = n - 1;
    INSERT INTO stats_counters (topic, bucket, shard, n) VALUES ('approvals', NEW.status, 0, 1)
        ON CONFLICT (topic, bucket, shard) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER approvals_count_delete AFTER DELETE ON approvals BEGIN
    INSERT INTO stats_counters (topic, bucket, shard, n) VALUES ('approvals', OLD.status, 0, -1)
        ON CONFLICT (topic, bucket, shard) DO UPDATE SET n = n - 1;
END;
