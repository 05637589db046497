-- SQLite serves one instance: presence lives in memory. Kept so both backends share migration names.
SELECT 1;
