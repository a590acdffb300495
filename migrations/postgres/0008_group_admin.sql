-- Group administration: a group's profile and its switches, a member's mute, and a group's end.
-- Identical on SQLite and PostgreSQL.

ALTER TABLE conversations ADD COLUMN avatar_url TEXT;
ALTER TABLE conversations ADD COLUMN announcement TEXT;
-- 1: only the owner and admins may send (the app always may).
ALTER TABLE conversations ADD COLUMN muted BIGINT NOT NULL DEFAULT 0;
-- Set when the owner or the app dissolves the group: history stays readable, sends are refused.
ALTER TABLE conversations ADD COLUMN dissolved_at BIGINT;

-- A member silenced by the owner or an admin until this time (unix ms). Not members.muted_until,
-- which is the member's own choice not to be notified.
ALTER TABLE members ADD COLUMN silenced_until BIGINT;
