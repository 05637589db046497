-- SQLite serves one instance: no other reader of the outbox, nothing to decide by visibility.
-- Kept so both backends share migration names; pruning's floor is only needed on PostgreSQL.
SELECT 1;
