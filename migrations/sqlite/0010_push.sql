-- Push notifications: the devices users register, and the push outbox. Keep in step with the
-- other dialect (only the push job id's column type differs).

-- One row per device a user registered for push. `token` is the FCM / APNs token, or a Web Push
-- subscription's endpoint (with its p256dh and auth keys). A device registered under a hosted
-- session (`session_id`) is removed when that session ends.
CREATE TABLE devices (
    id               TEXT PRIMARY KEY,
    app_id           TEXT NOT NULL,
    user_key         BIGINT NOT NULL,
    platform         TEXT NOT NULL,
    token            TEXT NOT NULL,
    p256dh           TEXT,
    auth             TEXT,
    app_version      TEXT,
    session_id       TEXT,
    created_at       BIGINT NOT NULL
);
-- A token belongs to one user at a time: registering it again moves it.
CREATE UNIQUE INDEX devices_token ON devices (app_id, platform, token);
CREATE INDEX devices_by_user ON devices (app_id, user_key);
CREATE INDEX devices_by_session ON devices (session_id);

-- One row per device and conversation waiting to be pushed, written in the transaction that
-- stores the message. Messages arriving before the row is claimed update it (the newest seq,
-- the count), so a burst becomes one push per coalescing window.
-- status: pending (waiting for its window or a retry) | sending (claimed by a node until
-- claimed_until; another node takes it once that passes) | done | dead.
CREATE TABLE push_jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id           TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    user_key         BIGINT NOT NULL,
    conversation_id  TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    sender_key       BIGINT NOT NULL,
    messages         BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    claimed_by       TEXT,
    claimed_until    BIGINT,
    outcome          TEXT,
    last_error       TEXT,
    done_at          BIGINT
);
-- At most one row per device and conversation still gathering messages.
CREATE UNIQUE INDEX push_jobs_gathering ON push_jobs (device_id, conversation_id) WHERE status = 'pending' AND attempts = 0;
CREATE INDEX push_jobs_due ON push_jobs (status, next_attempt_at);
