DROP INDEX ws_tickets_user_id;
ALTER TABLE ws_tickets DROP COLUMN token_issued_at_ms;
ALTER TABLE users DROP COLUMN tokens_valid_after_ms;
ALTER TABLE users DROP COLUMN active;
