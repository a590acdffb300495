-- Moderation: app-wide bans (on the user row, so every read of a user carries it at no extra
-- cost), and the audit trail of moderation acts. Identical on SQLite and PostgreSQL.

-- Banned while banned_until is in the future (9223372036854775807: until lifted).
ALTER TABLE users ADD COLUMN banned_until BIGINT;
ALTER TABLE users ADD COLUMN ban_reason TEXT;

CREATE TABLE audit_log (
    id            TEXT PRIMARY KEY,
    app_id        TEXT NOT NULL,
    at            BIGINT NOT NULL,
    -- A user's public id, or NULL for the app itself (the server API, the command line).
    actor         TEXT,
    action        TEXT NOT NULL,
    target_user   TEXT,
    target_group  TEXT,
    reason        TEXT,
    -- What else the act carried, as JSON (e.g. a ban's end).
    data          TEXT
);
CREATE INDEX audit_by_app ON audit_log (app_id, at, id);

-- A user's own blocks: direct messages from a blocked user are refused and stored nowhere, and
-- their presence and typing are not pushed to the blocker. Group messages are not filtered.
CREATE TABLE blocks (
    app_id       TEXT NOT NULL,
    user_key     BIGINT NOT NULL,
    blocked_key  BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (app_id, user_key, blocked_key)
);
