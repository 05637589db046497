DROP TABLE cluster_settings;
DROP TABLE stats_history;
DROP TRIGGER tasks_count_departments ON tasks;
DROP FUNCTION pulse_count_departments();
DROP FUNCTION pulse_department_add(TEXT, TEXT, INTEGER, INTEGER);
DROP TABLE department_counters;
DROP INDEX tasks_open_created_at;
DROP INDEX conversations_escalated_at;
ALTER TABLE conversations DROP COLUMN escalated_at;
