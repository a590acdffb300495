-- Fixed-window counters for limits that must hold across the cluster (guest sign-ups, logins).
-- Identical on SQLite and PostgreSQL.
CREATE TABLE rate_limits (
    key           TEXT PRIMARY KEY,
    window_start  BIGINT NOT NULL,
    hits          BIGINT NOT NULL
);
CREATE INDEX rate_limits_window ON rate_limits (window_start);
