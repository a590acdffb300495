-- Webhook outbox: one row per event, written in the same transaction as the change it reports.
-- Identical on SQLite and PostgreSQL.
CREATE TABLE webhook_outbox (
    id               TEXT PRIMARY KEY,
    app_id           TEXT NOT NULL,
    event            TEXT NOT NULL,
    payload          TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    -- pending | delivered | dead
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    -- A node's claim on a pending row; another node may take the row once the claim expires.
    claimed_by       TEXT,
    claimed_until    BIGINT,
    last_error       TEXT,
    done_at          BIGINT
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (status, next_attempt_at);

-- An endpoint that answered 410 Gone stays disabled until its URL is set again.
CREATE TABLE webhook_endpoints (
    app_id           TEXT PRIMARY KEY,
    url              TEXT NOT NULL,
    disabled_at      BIGINT NOT NULL,
    reason           TEXT NOT NULL
);
