//! Node leases and cluster-wide presence.
//!
//! Each node keeps a row with a lease it renews. A user is online while some node with a live lease
//! holds a presence row for them. Every change takes the user's row lock first, so when sessions
//! come and go on several nodes at once, exactly one of them sees each online/offline transition.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Instant,
};

use sqlx::Row;

use super::{
    Dialect, Store, WriteTx, observe,
    outbox::{Hooks, enqueue},
    sql::Sql,
};
use crate::domain::{AppId, UserKey};

/// Changes in one presence batch at most (a few bound values each: under every placeholder limit).
pub const MAX_CHANGES: usize = 256;

/// A user's first (online) or last (offline) session on this node.
#[derive(Debug, Clone)]
pub struct Change {
    pub app: AppId,
    pub user: UserKey,
    pub online: bool,
}

/// A user who went offline because the last node holding them died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departed {
    pub app_id: String,
    pub user: UserKey,
    pub public_id: String,
}

async fn lock_user(tx: &mut WriteTx, app: &str, user: i64) -> Result<Option<String>, sqlx::Error> {
    // A no-op update takes the row lock on PostgreSQL; SQLite is already serialised by the gate.
    sqlx::query_scalar(
        "UPDATE users SET token_version = token_version WHERE app_id = $1 AND user_key = $2 RETURNING public_id",
    )
    .bind(app)
    .bind(user)
    .fetch_optional(&mut ***tx)
    .await
}

async fn live_rows(tx: &mut WriteTx, app: &str, user: i64, now: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM presence p JOIN nodes n ON n.id = p.node_id \
         WHERE p.app_id = $1 AND p.user_key = $2 AND n.lease_until > $3",
    )
    .bind(app)
    .bind(user)
    .bind(now)
    .fetch_one(&mut ***tx)
    .await
}

/// Live presence rows (on nodes whose lease holds) per user.
///
/// One correlated count per key, not `user_key IN (…)`: before PostgreSQL has statistics for
/// a fresh `presence` table it takes `app_id = $1` for a handful of rows and reads every row of
/// the app through the primary key's prefix, filtering the IN list (measured: 2.8 ms a batch
/// and growing with the table during a connect storm); the correlated form can only probe the
/// key (app_id, user_key) per user.
async fn live_counts(
    tx: &mut WriteTx,
    dialect: Dialect,
    app: &str,
    keys: &[i64],
    now: i64,
) -> Result<HashMap<i64, i64>, sqlx::Error> {
    let mut sql = Sql::new(
        dialect,
        "SELECT v.column1, (SELECT COUNT(*) FROM presence p JOIN nodes n ON n.id = p.node_id WHERE p.app_id = ",
    );
    sql.push_bind(app).push(" AND p.user_key = v.column1 AND n.lease_until > ").push_bind(now);
    sql.push(") FROM (VALUES ").push_tuples(keys, |row, k| {
        row.push_bind(*k);
    });
    sql.push(") v");
    Ok(sql.build_as::<(i64, i64)>()?.fetch_all(&mut ***tx).await?.into_iter().collect())
}

impl Store {
    /// Announces this node (or renews its lease). Returns false when the row had vanished, i.e.
    /// other nodes declared this one dead and took its presence rows.
    pub async fn renew_lease(&self, node: &str, lease_ms: i64) -> Result<bool, sqlx::Error> {
        let now = crate::domain::now_millis();
        let renewed = sqlx::query("UPDATE nodes SET lease_until = $1 WHERE id = $2")
            .bind(now + lease_ms)
            .bind(node)
            .execute(self.pool())
            .await?
            .rows_affected();
        if renewed == 0 {
            sqlx::query(
                "INSERT INTO nodes (id, started_at, lease_until) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET lease_until = $3",
            )
            .bind(node)
            .bind(now)
            .bind(now + lease_ms)
            .execute(self.pool())
            .await?;
        }
        Ok(renewed > 0)
    }

    /// Refreshes PostgreSQL's statistics of `presence` once this node has changed many rows
    /// since the last time. A connect storm fills the table far faster than autovacuum notices
    /// (it looks once a minute); meanwhile the planner, taking `app_id = $1` for a few rows,
    /// serves a batch's `DELETE … user_key IN (…)` by reading every row of the app.
    pub async fn refresh_presence_stats(&self) {
        const EVERY: u64 = 2_000;
        if self.dialect() != super::Dialect::Postgres
            || self.presence_changes.load(std::sync::atomic::Ordering::Relaxed) < EVERY
        {
            return;
        }
        self.presence_changes.store(0, std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        if let Err(e) = sqlx::query("ANALYZE presence").execute(self.pool()).await {
            tracing::debug!(error = %e, "analysing the presence table failed; autovacuum will");
        }
        observe("presence_analyze", started);
    }

    /// Removes this node at a clean shutdown.
    pub async fn retire_node(&self, node: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM presence WHERE node_id = $1").bind(node).execute(self.pool()).await?;
        sqlx::query("DELETE FROM nodes WHERE id = $1").bind(node).execute(self.pool()).await?;
        Ok(())
    }

    /// Applies a batch of this node's presence changes in one transaction and a handful of
    /// set-based statements, whatever the batch size (a reconnect storm would otherwise cost six
    /// round trips per user). Each user may appear once per batch; at most [`MAX_CHANGES`].
    /// Returns, per change, whether it was a cluster-wide transition (first session anywhere, or
    /// last one gone: that user's `last_seen_at` is then `now`).
    pub async fn apply_presence(
        &self,
        node: &str,
        now: i64,
        changes: &[Change],
        hooks: &HashMap<String, Hooks>,
    ) -> Result<Vec<bool>, sqlx::Error> {
        let started = Instant::now();
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match self.try_apply_presence(node, now, changes, hooks).await {
                // A deadlock or serialization victim wrote nothing: applying it again is safe.
                Err(e) if attempt < 3 && super::batch::is_retryable(&e) => continue,
                other => break other,
            }
        };
        metrics::histogram!("natter_presence_batch_size").record(changes.len() as f64);
        self.presence_changes.fetch_add(changes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        observe("presence_batch", started);
        result
    }

    async fn try_apply_presence(
        &self,
        node: &str,
        now: i64,
        changes: &[Change],
        hooks: &HashMap<String, Hooks>,
    ) -> Result<Vec<bool>, sqlx::Error> {
        let mut transitions = vec![false; changes.len()];
        // Locks are taken app by app, users in key order within each: two nodes' batches over
        // the same users then lock in the same order and cannot deadlock.
        let mut by_app: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, c) in changes.iter().enumerate() {
            by_app.entry(c.app.as_str()).or_default().push(i);
        }
        let dialect = self.dialect();
        let mut tx = self.begin_write().await?;
        if dialect == Dialect::Postgres {
            // Presence is soft state: a crash loses at most the last moment's changes, which
            // the nodes' leases and reconnecting clients repair; waiting for the WAL flush
            // would only hold the batch (and its row locks) longer.
            sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut **tx).await?;
        }
        for (app, mut indices) in by_app {
            indices.sort_by_key(|i| changes[*i].user);
            let keys: Vec<i64> = indices.iter().map(|i| changes[*i].user.0).collect();
            // By primary key alone, the app checked on the rows: before PostgreSQL has statistics
            // for a fresh `users` table (autovacuum analyses it minutes later), `app_id = $1`
            // beside an IN list makes it scan every user of the app through the
            // (app_id, public_id) index (measured: 5-19 ms a batch, half the machine's CPU in a
            // connect storm). Keys are global, so the app check loses nothing.
            let mut lock = Sql::new(dialect, "SELECT user_key, app_id, public_id FROM users WHERE user_key IN (");
            lock.push_list(keys.iter().copied()).push(") ORDER BY user_key");
            // SQLite is already serialised by the write gate (and knows no FOR UPDATE).
            if dialect == Dialect::Postgres {
                lock.push(" FOR UPDATE");
            }
            let mut public_ids = HashMap::new();
            for row in lock.build()?.fetch_all(&mut **tx).await? {
                if row.try_get::<String, _>("app_id")? == app {
                    public_ids.insert(row.try_get::<i64, _>("user_key")?, row.try_get::<String, _>("public_id")?);
                }
            }
            let before = live_counts(&mut tx, dialect, app, &keys, now).await?;
            let (ups, downs): (Vec<usize>, Vec<usize>) = indices
                .iter()
                .copied()
                .filter(|i| public_ids.contains_key(&changes[*i].user.0))
                .partition(|i| changes[*i].online);
            if !ups.is_empty() {
                let mut insert = Sql::new(dialect, "INSERT INTO presence (app_id, user_key, node_id, since) VALUES ");
                insert.push_tuples(&ups, |row, i| {
                    row.push_bind(app).push_bind(changes[*i].user.0).push_bind(node).push_bind(now);
                });
                insert.push(" ON CONFLICT (app_id, user_key, node_id) DO NOTHING");
                insert.build()?.execute(&mut **tx).await?;
            }
            let mut removed = HashSet::new();
            if !downs.is_empty() {
                let mut delete = Sql::new(dialect, "DELETE FROM presence WHERE app_id = ");
                delete.push_bind(app).push(" AND node_id = ").push_bind(node).push(" AND user_key IN (");
                delete.push_list(downs.iter().map(|i| changes[*i].user.0)).push(") RETURNING user_key");
                removed.extend(delete.build_scalar::<i64>()?.fetch_all(&mut **tx).await?);
            }
            let after = live_counts(&mut tx, dialect, app, &keys, now).await?;
            let count = |counts: &HashMap<i64, i64>, k: i64| counts.get(&k).copied().unwrap_or(0);
            let mut gone = Vec::new();
            for i in ups.iter().chain(&downs) {
                let (online, key) = (changes[*i].online, changes[*i].user.0);
                transitions[*i] = if online {
                    count(&before, key) == 0 && count(&after, key) > 0
                } else {
                    removed.contains(&key) && count(&after, key) == 0
                };
                if transitions[*i] && !online {
                    gone.push(key);
                }
            }
            if !gone.is_empty() {
                // Keys only (these rows were locked above as the app's): see the lock's comment.
                let mut seen = Sql::new(dialect, "UPDATE users SET last_seen_at = ");
                seen.push_bind(now).push(" WHERE user_key IN (").push_list(gone.iter().copied()).push(")");
                seen.build()?.execute(&mut **tx).await?;
            }
            if let Some(hooks) = hooks.get(app) {
                for i in ups.iter().chain(&downs).filter(|i| transitions[**i]) {
                    let event = if changes[*i].online { "user.online" } else { "user.offline" };
                    if hooks.wants(event) {
                        let user = public_ids.get(&changes[*i].user.0);
                        enqueue(&mut tx, app, event, &serde_json::json!({ "user": user, "at": now })).await?;
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(transitions)
    }

    /// Claims nodes whose lease expired and takes their presence rows; returns the users that
    /// thereby went offline. Claims are exclusive: each dead node is reaped by one caller.
    pub async fn reap_expired_nodes(
        &self,
        now: i64,
        hooks: &std::collections::HashMap<String, Hooks>,
    ) -> Result<Vec<Departed>, sqlx::Error> {
        let started = Instant::now();
        let mut tx = self.begin_write().await?;
        let dead: Vec<String> = sqlx::query_scalar("DELETE FROM nodes WHERE lease_until <= $1 RETURNING id")
            .bind(now)
            .fetch_all(&mut **tx)
            .await?;
        let mut departed = Vec::new();
        for node in &dead {
            let rows = sqlx::query("DELETE FROM presence WHERE node_id = $1 RETURNING app_id, user_key")
                .bind(node)
                .fetch_all(&mut **tx)
                .await?;
            for row in rows {
                let app: String = row.try_get("app_id")?;
                let user: i64 = row.try_get("user_key")?;
                let Some(public_id) = lock_user(&mut tx, &app, user).await? else {
                    continue;
                };
                if live_rows(&mut tx, &app, user, now).await? == 0 {
                    sqlx::query("UPDATE users SET last_seen_at = $1 WHERE app_id = $2 AND user_key = $3")
                        .bind(now)
                        .bind(&app)
                        .bind(user)
                        .execute(&mut **tx)
                        .await?;
                    if hooks.get(&app).is_some_and(|h| h.wants("user.offline")) {
                        let data = serde_json::json!({ "user": public_id, "at": now, "reason": "node lost" });
                        enqueue(&mut tx, &app, "user.offline", &data).await?;
                    }
                    departed.push(Departed { app_id: app, user: UserKey(user), public_id });
                }
            }
        }
        tx.commit().await?;
        if !dead.is_empty() {
            tracing::warn!(nodes = ?dead, users = departed.len(), "reaped nodes whose lease expired");
        }
        observe("reap_nodes", started);
        Ok(departed)
    }

    /// Which of these users are online anywhere in the cluster.
    pub async fn online_users(&self, app: &AppId, users: &[UserKey]) -> Result<HashSet<UserKey>, sqlx::Error> {
        let now = crate::domain::now_millis();
        let mut online = HashSet::new();
        for chunk in users.chunks(200) {
            // Probed per user, for the reason `live_counts` gives.
            let mut sql = Sql::new(self.dialect(), "SELECT v.column1 FROM (VALUES ");
            sql.push_tuples(chunk, |row, u| {
                row.push_bind(u.0);
            });
            sql.push(") v WHERE EXISTS (SELECT 1 FROM presence p JOIN nodes n ON n.id = p.node_id WHERE p.app_id = ");
            sql.push_bind(app.as_str())
                .push(" AND p.user_key = v.column1 AND n.lease_until > ")
                .push_bind(now)
                .push(")");
            let q = sql.build_scalar::<i64>()?;
            online.extend(q.fetch_all(self.pool()).await?.into_iter().map(UserKey));
        }
        Ok(online)
    }
}
