-- Unread counts are the distance from the read marker to the conversation's end, less the
-- messages removed in between: this index finds those few without reading the rest.
-- Identical on SQLite and PostgreSQL.
CREATE INDEX messages_removed ON messages (app_id, conversation_id, seq)
    WHERE recalled_at IS NOT NULL OR deleted_at IS NOT NULL;
