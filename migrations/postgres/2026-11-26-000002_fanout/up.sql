-- Cross-instance fan-out (crates/pg-fanout): which instance wrote an event. The connection's
-- application_name names the instance (the server sets it), so services need not know.
ALTER TABLE events ADD COLUMN origin TEXT NOT NULL DEFAULT current_setting('application_name');
