-- User lifecycle (issue 13): deactivation, and retiring credentials issued before a role,
-- password or activity change. Keep in step with migrations/postgres (same names, same columns).
-- `tokens_valid_after_ms`: milliseconds since the Unix epoch; tokens and tickets issued
-- before it are refused (0: none retired).
ALTER TABLE users ADD COLUMN active BOOLEAN NOT NULL DEFAULT 1;
ALTER TABLE users ADD COLUMN tokens_valid_after_ms BIGINT NOT NULL DEFAULT 0;
-- The `iat` of the token a ticket was issued with (milliseconds), so a ticket is retired
-- with its token.
ALTER TABLE ws_tickets ADD COLUMN token_issued_at_ms BIGINT NOT NULL DEFAULT 0;
CREATE INDEX ws_tickets_user_id ON ws_tickets (user_id);
