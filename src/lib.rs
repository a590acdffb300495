//! # Natter
//!
//! A self-hosted, horizontally scalable chat backend. One binary runs either embedded (SQLite and
//! an in-process bus) or as a node of a cluster (PostgreSQL and NATS).
//!
//! # Layout
//!
//! - [`config`]: layered configuration (`config/default.toml` → env file → `NATTER_…` → CLI).
//! - [`error`]: the one table of stable error codes, with their HTTP and WebSocket mappings.
//! - [`domain`]: domain values parsed once into newtypes (`Email`, `UserId`, …), then trusted.
//! - [`store`]: the source of truth; sqlx over SQLite or PostgreSQL, every query scoped by app.
//!   Its hot paths: `batch` (group commit of message appends on a thread of its own),
//!   `subjects` (connect-time reads batched across connections), `held` (connections kept past
//!   sqlx's release ping), `presence` (batched presence transitions), `outbox` (webhook events
//!   written in the same transaction as their change), `sql` (statements with a variable number
//!   of bound values, in each dialect's placeholders), `lifecycle` (edits, recalls, deletions,
//!   reactions, stamped with the conversation's change number), `inbox` (the conversation list
//!   and unread counts), `audit` (the moderation trail, written in each act's transaction),
//!   `devices` (devices registered for push), `push` (the push outbox, written with messages),
//!   `blocks` (users' own blocks), `groups` (groups, members, and each administrative act in one
//!   transaction under the group's row lock).
//! - [`batching`]: group commit, the one loop behind every batched write or read (message
//!   appends, connect reads, presence transitions).
//! - [`auth`]: password hashing (argon2id) and access tokens (JWT) with their signing keys.
//! - [`accounts`]: hosted accounts: register, login, guests, upgrade, refresh, logout.
//! - [`wire`]: how a stored message, a push and an event look on the wire (one encoding, by a
//!   JSON writer that cannot fail).
//! - [`chat`]: sending, history, sync, read markers and typing, shared by WebSocket and REST.
//! - [`lifecycle`]: a message's life after it is sent: edit, recall, delete, react (one
//!   permission table), with their events and webhooks.
//! - [`inbox`]: the conversation list (unread counts, mentions, previews, pinned / archived /
//!   muted) and the `unread` events.
//! - [`moderation`]: app-wide bans (refused at every way in, sockets closed everywhere), users'
//!   own blocks, and the audit trail of moderation acts.
//! - [`groups`]: group creation and membership, and `admin`: a group's profile and mute, roles,
//!   member mutes, kicks, leaving and dissolving, with the events, webhooks and audit entries
//!   they leave.
//! - [`roles`]: who may do what in a group: the one permission table, checked by `groups` and by
//!   the message writer.
//! - [`bus`]: fan-out between nodes: the `Bus` trait, its in-process and NATS implementations
//!   (publishing on async-nats, subscriptions on a lean protocol connection of our own, both
//!   failing over across a server list; `security`: TLS and NKey / `.creds` auth for both), and
//!   the envelope every payload travels in.
//! - [`fanout`]: every payload the node puts on the bus, built and published with one policy
//!   (ordered, bounded, never delaying a reply).
//! - [`presence`]: cluster-wide presence: node leases, transitions decided once, dead nodes reaped.
//! - [`hub`]: the node-local hub: `registry` (sessions, users, groups and presence watches, as
//!   plain data) and `router` (the actor that owns it and fans bus deliveries out to sessions).
//! - [`push`]: push notifications to offline users: `devices` (what may be registered), the
//!   `dispatcher` actor that sends due push jobs, `notice` (what a push says), and the providers:
//!   `webpush` (RFC 8291 / 8292), `fcm` (HTTP v1) and `apns` (HTTP/2), or the `push.needed`
//!   webhook.
//! - [`webhooks`]: the outbox dispatcher actor (signed, retried deliveries), safe targets, the
//!   before-send hook (`hook`; what it asks and may decide: `exchange`), and both in Tencent IM's
//!   callback shape (`tencent`).
//! - [`ws`]: the WebSocket endpoint: the handshake (an HTTP/1 upgrade that leaves actix-http),
//!   `protocol` (frames), `socket` (the lean transport: whole messages in, frames out),
//!   `cursor` (what a session delivered and what to do with the next push) and `session` (the
//!   per-connection actor).
//! - [`http`]: the REST API (client, server and health endpoints), JSON error rendering (also
//!   for requests HTTP itself refuses: `rejections`), `credentials` and `client_ip`, `openapi`
//!   (its machine-readable description, `docs/openapi.yaml`), and the vendors' server APIs
//!   mapped onto Natter's services: `rongcloud` (`/compat/rongcloud`) and `tencent`
//!   (`/compat/tencent/v4`).
//! - [`tencent`]: Tencent IM's message shape (`MsgBody` elements), shared by its REST mount and
//!   its callbacks.
//! - [`ratelimit`]: token buckets and windows for the limits each app and connection has.
//! - [`node`]: everything one running node shares (store, bus, router, keys, config).
//! - [`server`]: assembles a node and serves it; used by the binary and the tests.
//! - [`cli`]: the `natter` command line (serve, migrate, app management).
//! - [`launch`]: starting `natter serve` as a child process and learning its address (the
//!   cluster tests and the load-test harness).
//! - [`telemetry`]: logging, the Prometheus recorder, and `series`: the catalog of every series
//!   it exports (HELP text; docs/metrics.md lists the same).

pub mod accounts;
pub mod auth;
pub mod batching;
pub mod bus;
pub mod chat;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod fanout;
pub mod groups;
pub mod http;
pub mod hub;
pub mod inbox;
pub mod launch;
pub mod lifecycle;
pub mod moderation;
pub mod node;
pub mod presence;
pub mod push;
pub mod ratelimit;
pub mod roles;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tencent;
pub mod webhooks;
pub mod wire;
pub mod ws;
