-- Single-use WebSocket tickets (POST /api/v1/ws-ticket): only a hash of the ticket is kept.
-- In the database, not in memory, so a ticket works on whichever instance the browser reaches.
CREATE TABLE ws_tickets (
    ticket_hash TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    username TEXT NOT NULL,
    role TEXT NOT NULL,
    session_expires_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX ws_tickets_expires_at ON ws_tickets (expires_at);
