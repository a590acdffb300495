-- Natter schema (SQLite). Keep in step with migrations/postgres: same tables, columns and indexes.
-- Timestamps are unix milliseconds; every row belongs to exactly one app.

CREATE TABLE apps (
    id          TEXT PRIMARY KEY,
    api_key     TEXT NOT NULL UNIQUE,
    api_secret  TEXT NOT NULL,
    settings    TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    secret      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    user_key       INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id         TEXT NOT NULL REFERENCES apps (id),
    public_id      TEXT NOT NULL,
    email          TEXT,
    password_hash  TEXT,
    first_name     TEXT NOT NULL,
    last_name      TEXT NOT NULL,
    nickname       TEXT,
    avatar_url     TEXT,
    kind           TEXT NOT NULL,
    token_version  BIGINT NOT NULL DEFAULT 0,
    last_seen_at   BIGINT,
    created_at     BIGINT NOT NULL,
    UNIQUE (app_id, public_id)
);
CREATE UNIQUE INDEX users_email ON users (app_id, email) WHERE email IS NOT NULL;

-- One row per login (a device session); refresh tokens rotate within it.
CREATE TABLE auth_sessions (
    id          TEXT PRIMARY KEY,
    app_id      TEXT NOT NULL,
    user_key    BIGINT NOT NULL REFERENCES users (user_key) ON DELETE CASCADE,
    device_id   TEXT,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX auth_sessions_user ON auth_sessions (user_key);

CREATE TABLE refresh_tokens (
    hash        TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- Direct conversations and groups; last_seq is bumped under the row lock with each insert.
CREATE TABLE conversations (
    app_id      TEXT NOT NULL,
    id          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    name        TEXT,
    created_by  BIGINT NOT NULL,
    last_seq    BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (app_id, id)
);

-- Who may read which seqs: (joined_seq, left_seq]; left_seq NULL while a member.
CREATE TABLE members (
    app_id           TEXT NOT NULL,
    conversation_id  TEXT NOT NULL,
    user_key         BIGINT NOT NULL,
    role             TEXT NOT NULL,
    joined_seq       BIGINT NOT NULL,
    left_seq         BIGINT,
    read_seq         BIGINT NOT NULL DEFAULT 0,
    joined_at        BIGINT NOT NULL,
    PRIMARY KEY (app_id, conversation_id, user_key)
);
CREATE INDEX members_by_user ON members (app_id, user_key, conversation_id);

-- sender_key 0 is the app itself (system messages).
CREATE TABLE messages (
    app_id           TEXT NOT NULL,
    conversation_id  TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    id               TEXT NOT NULL,
    sender_key       BIGINT NOT NULL,
    recipient_key    BIGINT,
    client_msg_id    TEXT NOT NULL,
    kind             TEXT,
    content          TEXT NOT NULL,
    meta             TEXT,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (app_id, conversation_id, seq)
);
CREATE UNIQUE INDEX messages_idempotency ON messages (app_id, conversation_id, sender_key, client_msg_id);
