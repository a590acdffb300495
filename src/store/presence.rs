//! Node leases and cluster-wide presence.
//!
//! Each node keeps a row with a lease it renews. A user is online while some node with a live lease
//! holds a presence row for them. Every change takes the user's row lock first, so when sessions
//! come and go on several nodes at once, exactly one of them sees each online/offline transition.

use std::{collections::HashSet, time::Instant};

use sqlx::Row;

use super::{
    Store, WriteTx, observe,
    outbox::{Hooks, enqueue},
};
use crate::domain::{AppId, UserKey};

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

    /// Removes this node at a clean shutdown.
    pub async fn retire_node(&self, node: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM presence WHERE node_id = $1").bind(node).execute(self.pool()).await?;
        sqlx::query("DELETE FROM nodes WHERE id = $1").bind(node).execute(self.pool()).await?;
        Ok(())
    }

    /// Records that `node` holds sessions of the user; true when the user just came online.
    pub async fn presence_up(
        &self,
        app: &AppId,
        user: UserKey,
        node: &str,
        hooks: &Hooks,
    ) -> Result<bool, sqlx::Error> {
        let started = Instant::now();
        let now = crate::domain::now_millis();
        let mut tx = self.begin_write().await?;
        let Some(public_id) = lock_user(&mut tx, app.as_str(), user.0).await? else {
            return Ok(false);
        };
        let before = live_rows(&mut tx, app.as_str(), user.0, now).await?;
        sqlx::query(
            "INSERT INTO presence (app_id, user_key, node_id, since) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (app_id, user_key, node_id) DO NOTHING",
        )
        .bind(app.as_str())
        .bind(user.0)
        .bind(node)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        let after = live_rows(&mut tx, app.as_str(), user.0, now).await?;
        let came_online = before == 0 && after > 0;
        if came_online && hooks.wants("user.online") {
            enqueue(&mut tx, app.as_str(), "user.online", &serde_json::json!({ "user": public_id, "at": now })).await?;
        }
        tx.commit().await?;
        observe("presence_up", started);
        Ok(came_online)
    }

    /// Records that `node` holds no more sessions of the user; true when the user just went
    /// offline (their `last_seen_at` is then `now`).
    pub async fn presence_down(
        &self,
        app: &AppId,
        user: UserKey,
        node: &str,
        now: i64,
        hooks: &Hooks,
    ) -> Result<bool, sqlx::Error> {
        let started = Instant::now();
        let mut tx = self.begin_write().await?;
        let Some(public_id) = lock_user(&mut tx, app.as_str(), user.0).await? else {
            return Ok(false);
        };
        let removed = sqlx::query("DELETE FROM presence WHERE app_id = $1 AND user_key = $2 AND node_id = $3")
            .bind(app.as_str())
            .bind(user.0)
            .bind(node)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        let remaining = live_rows(&mut tx, app.as_str(), user.0, now).await?;
        let went_offline = removed > 0 && remaining == 0;
        if went_offline {
            sqlx::query("UPDATE users SET last_seen_at = $1 WHERE app_id = $2 AND user_key = $3")
                .bind(now)
                .bind(app.as_str())
                .bind(user.0)
                .execute(&mut **tx)
                .await?;
            if hooks.wants("user.offline") {
                enqueue(&mut tx, app.as_str(), "user.offline", &serde_json::json!({ "user": public_id, "at": now }))
                    .await?;
            }
        }
        tx.commit().await?;
        observe("presence_down", started);
        Ok(went_offline)
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
            let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
            let sql = format!(
                "SELECT DISTINCT p.user_key FROM presence p JOIN nodes n ON n.id = p.node_id \
                 WHERE p.app_id = $1 AND n.lease_until > $2 AND p.user_key IN ({})",
                placeholders.join(", ")
            );
            let mut q = sqlx::query_scalar::<_, i64>(&sql).bind(app.as_str()).bind(now);
            for u in chunk {
                q = q.bind(u.0);
            }
            online.extend(q.fetch_all(self.pool()).await?.into_iter().map(UserKey));
        }
        Ok(online)
    }
}
