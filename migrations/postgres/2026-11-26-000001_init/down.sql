DROP TABLE stats_counters;
DROP FUNCTION pulse_count_by_column();
DROP TABLE events;
DROP TABLE approvals;
DROP TABLE conversations;
DROP TABLE tasks;
DROP TABLE users;
