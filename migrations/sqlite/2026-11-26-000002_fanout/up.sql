-- SQLite serves one instance: nothing to fan out. Kept so both backends share migration names.
SELECT 1;
