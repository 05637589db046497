DROP TABLE cluster_settings;
DROP TABLE stats_history;
DROP TRIGGER tasks_departments_delete;
DROP TRIGGER tasks_departments_update;
DROP TRIGGER tasks_departments_insert;
DROP TABLE department_counters;
DROP INDEX tasks_open_created_at;
DROP INDEX conversations_escalated_at;
ALTER TABLE conversations DROP COLUMN escalated_at;
