-- Who is online on each instance (crates/pg-fanout): each live instance keeps its row fresh;
-- a row not refreshed for 30 s belongs to a dead instance and is ignored.
CREATE TABLE presence (
    instance TEXT PRIMARY KEY,
    snapshot TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
