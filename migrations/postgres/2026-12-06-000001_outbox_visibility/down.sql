DROP INDEX events_tx_id;
DROP TABLE events_pruned;
ALTER TABLE events ALTER COLUMN seq DROP DEFAULT;
DROP FUNCTION pulse_next_event_seq();
ALTER SEQUENCE pulse_event_seq OWNED BY NONE;
DROP SEQUENCE pulse_event_seq;
ALTER TABLE events ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY;
SELECT setval(pg_get_serial_sequence('events', 'seq'), coalesce((SELECT max(seq) FROM events), 0) + 1, false);
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
    IF old_bucket IS NOT NULL THEN
        INSERT INTO stats_counters AS c (topic, bucket, shard, n) VALUES (v_topic, old_bucket, v_shard, -1)
            ON CONFLICT (topic, bucket, shard) DO UPDATE SET n = c.n - 1;
    END IF;
    IF new_bucket IS NOT NULL THEN
        INSERT INTO stats_counters AS c (topic, bucket, shard, n) VALUES (v_topic, new_bucket, v_shard, 1)
            ON CONFLICT (topic, bucket, shard) DO UPDATE SET n = c.n + 1;
    END IF;
    RETURN NULL;
END
$$;
DROP FUNCTION pulse_count_add(TEXT, TEXT, INTEGER, INTEGER);
