-- The outbox, readable by visibility instead of by clock (crates/pg-fanout/src/cursor.rs).
-- Stop instances of an older version before running it: none may write events meanwhile
-- (the lock below makes any that tries wait), and older pruning records no floor.
LOCK TABLE events IN ACCESS EXCLUSIVE MODE;
--
-- 1. A row's number comes from pulse_next_event_seq(), which gives the writing transaction
--    an id *before* it takes the number. A reader that sees row n but not row n-1 then knows
--    that whoever holds n-1 is already listed as running in its snapshot, so it can tell
--    "still in flight" from "rolled back" by waiting for the snapshot's xmin to pass, however
--    long that takes. (An identity column takes the number first; the id may come later.)
CREATE SEQUENCE pulse_event_seq;
SELECT setval(
    'pulse_event_seq',
    greatest(
        coalesce(pg_sequence_last_value(pg_get_serial_sequence('events', 'seq')), 0),
        coalesce((SELECT max(seq) FROM events), 0)
    ) + 1,
    false
);
ALTER TABLE events ALTER COLUMN seq DROP IDENTITY;
CREATE FUNCTION pulse_next_event_seq() RETURNS BIGINT LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_current_xact_id();
    RETURN nextval('pulse_event_seq');
END
$$;
ALTER TABLE events ALTER COLUMN seq SET DEFAULT pulse_next_event_seq();
ALTER SEQUENCE pulse_event_seq OWNED BY events.seq;

-- 2. Pruning removes a prefix of the outbox and records how far it went, only ever upward:
--    a reader that gives up a gap below this floor cannot rule out a pruned row and resyncs.
--    (The oldest row left is no such floor: a late commit of a low number lowers it again.)
CREATE TABLE events_pruned (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    below BIGINT NOT NULL
);
INSERT INTO events_pruned (below) VALUES (coalesce((SELECT min(seq) FROM events), 0));

-- A listener that started while transactions ran reads their rows by transaction id.
CREATE INDEX events_tx_id ON events (tx_id);

-- 3. Counter rows are locked in one order (by bucket), whichever way a row moves: escalating
--    (active → escalated) and de-escalating (escalated → active) on the same shard used to
--    take the two rows in opposite orders, a deadlock waiting to happen.
CREATE FUNCTION pulse_count_add(v_topic TEXT, v_bucket TEXT, v_shard INTEGER, v_delta INTEGER)
RETURNS VOID LANGUAGE sql AS $$
    INSERT INTO stats_counters AS c (topic, bucket, shard, n) VALUES (v_topic, v_bucket, v_shard, v_delta)
        ON CONFLICT (topic, bucket, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
$$;
CREATE OR REPLACE FUNCTION pulse_count_by_column() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_topic TEXT := TG_ARGV[0];
    v_col TEXT := TG_ARGV[1];
    v_shard INTEGER := pg_backend_pid() % 16;
    old_bucket TEXT;
    new_bucket TEXT;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN old_bucket := to_jsonb(OLD) ->> v_col; END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN new_bucket := to_jsonb(NEW) ->> v_col; END IF;
    IF old_bucket IS NOT DISTINCT FROM new_bucket THEN RETURN NULL; END IF;
    IF old_bucket IS NOT NULL AND (new_bucket IS NULL OR old_bucket < new_bucket) THEN
        PERFORM pulse_count_add(v_topic, old_bucket, v_shard, -1);
        old_bucket := NULL;
    END IF;
    IF new_bucket IS NOT NULL THEN
        PERFORM pulse_count_add(v_topic, new_bucket, v_shard, 1);
    END IF;
    IF old_bucket IS NOT NULL THEN
        PERFORM pulse_count_add(v_topic, old_bucket, v_shard, -1);
    END IF;
    RETURN NULL;
END
$$;
