-- Server API and app-signed tokens. Identical on SQLite and PostgreSQL.

-- Tokens issued before this instant (unix ms) are refused: revoke-tokens for app-signed tokens,
-- which carry no token version.
ALTER TABLE users ADD COLUMN tokens_revoked_at BIGINT;

-- Each (app, nonce) of a signed server-API request is accepted once, cluster-wide.
CREATE TABLE server_nonces (
    app_id      TEXT NOT NULL,
    nonce       TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (app_id, nonce)
);
CREATE INDEX server_nonces_expiry ON server_nonces (expires_at);
