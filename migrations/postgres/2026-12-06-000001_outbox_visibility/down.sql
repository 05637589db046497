DROP TABLE events_pruned;
ALTER TABLE events ALTER COLUMN seq DROP DEFAULT;
DROP FUNCTION pulse_next_event_seq();
ALTER SEQUENCE pulse_event_seq OWNED BY NONE;
DROP SEQUENCE pulse_event_seq;
ALTER TABLE events ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY;
SELECT setval(pg_get_serial_sequence('events', 'seq'), coalesce((SELECT max(seq) FROM events), 0) + 1, false);
