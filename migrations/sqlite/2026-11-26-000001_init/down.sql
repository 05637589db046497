DROP TABLE stats_counters;
DROP TABLE events;
DROP TABLE approvals;
DROP TABLE conversations;
DROP TABLE tasks;
DROP TABLE users;
