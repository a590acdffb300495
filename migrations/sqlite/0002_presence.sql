-- Cluster membership and presence (SQLite). Keep in step with migrations/postgres.
-- A node holds a lease it renews; a user is online while a live node holds a presence row for them.

CREATE TABLE nodes (
    id          TEXT PRIMARY KEY,
    started_at  BIGINT NOT NULL,
    lease_until BIGINT NOT NULL
);

CREATE TABLE presence (
    app_id    TEXT NOT NULL,
    user_key  BIGINT NOT NULL,
    node_id   TEXT NOT NULL,
    since     BIGINT NOT NULL,
    PRIMARY KEY (app_id, user_key, node_id)
);
CREATE INDEX presence_node ON presence (node_id);
