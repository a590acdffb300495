//! The webhook outbox.
//!
//! Events are rows written by the same transaction as the change they report, so a crash loses
//! none. Delivery nodes claim due rows for a while (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so
//! concurrent nodes never claim the same row; on SQLite the write gate serialises claims); a row
//! whose claim expires, because its node died, is claimed again by another.

use std::{collections::HashSet, time::Instant};

use serde::Serialize;
use sqlx::{Row, any::AnyRow};

use super::{Dialect, Store, WriteTx, observe};
use crate::{config::AppSettings, domain::AppId};

/// Which events an app wants in its outbox (none while it has no webhook URL).
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    events: Option<HashSet<String>>,
}

/// Every event name, in the order the docs list them.
pub const EVENTS: &[&str] = &[
    "message.sent",
    "message.edited",
    "message.recalled",
    "message.deleted",
    "group.created",
    "group.member_added",
    "group.member_removed",
    "group.updated",
    "group.member_updated",
    "group.dissolved",
    "user.online",
    "user.offline",
    "user.registered",
    "push.needed",
];

impl Hooks {
    pub fn of(settings: &AppSettings) -> Self {
        if settings.webhook_url.is_empty() {
            return Hooks { events: None };
        }
        let wanted = if settings.webhook_events.is_empty() {
            EVENTS.iter().map(|e| e.to_string()).collect()
        } else {
            settings.webhook_events.iter().cloned().collect()
        };
        Hooks { events: Some(wanted) }
    }

    pub fn wants(&self, event: &str) -> bool {
        self.events.as_ref().is_some_and(|e| e.contains(event))
    }
}

/// The JSON body of a delivery: `{type, timestamp, app, data}` (timestamp in unix ms).
#[derive(Serialize)]
struct Payload<'a, T: Serialize> {
    r#type: &'a str,
    timestamp: i64,
    app: &'a str,
    data: &'a T,
}

/// Writes an event inside the caller's transaction.
pub async fn enqueue<T: Serialize>(tx: &mut WriteTx, app: &str, event: &str, data: &T) -> Result<(), sqlx::Error> {
    let now = crate::domain::now_millis();
    let payload = serde_json::to_string(&Payload { r#type: event, timestamp: now, app, data })
        .map_err(|e| sqlx::Error::Protocol(format!("webhook payload: {e}")))?;
    sqlx::query(
        "INSERT INTO webhook_outbox (id, app_id, event, payload, created_at, status, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, 'pending', $5)",
    )
    .bind(format!("evt_{}", uuid::Uuid::now_v7().simple()))
    .bind(app)
    .bind(event)
    .bind(payload)
    .bind(now)
    .execute(&mut ***tx)
    .await?;
    metrics::counter!("natter_webhook_events_total", "event" => event.to_string()).increment(1);
    Ok(())
}

#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: String,
    pub app_id: String,
    pub event: String,
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

fn row(r: &AnyRow) -> Result<OutboxRow, sqlx::Error> {
    Ok(OutboxRow {
        id: r.try_get("id")?,
        app_id: r.try_get("app_id")?,
        event: r.try_get("event")?,
        payload: r.try_get("payload")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_error: r.try_get("last_error")?,
    })
}

const COLUMNS: &str = "id, app_id, event, payload, status, attempts, next_attempt_at, last_error";

impl Store {
    /// Claims up to `limit` due events for `node` until `now + lease_ms`.
    pub async fn claim_webhooks(
        &self,
        node: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, sqlx::Error> {
        let started = Instant::now();
        let lock = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "UPDATE webhook_outbox SET claimed_by = $1, claimed_until = $2 WHERE id IN (\
             SELECT id FROM webhook_outbox WHERE status = 'pending' AND next_attempt_at <= $3 \
             AND (claimed_until IS NULL OR claimed_until < $3) ORDER BY next_attempt_at LIMIT $4{lock}) \
             RETURNING {COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&sql).bind(node).bind(now + lease_ms).bind(now).bind(limit).fetch_all(&mut **tx).await?;
        tx.commit().await?;
        observe("webhook_claim", started);
        rows.iter().map(row).collect()
    }

    pub async fn webhook_delivered(&self, id: &str, attempts: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE webhook_outbox SET status = 'delivered', attempts = $1, done_at = $2, claimed_by = NULL, \
             claimed_until = NULL, last_error = NULL WHERE id = $3",
        )
        .bind(attempts)
        .bind(crate::domain::now_millis())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn webhook_retry_later(&self, id: &str, attempts: i64, at: i64, error: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE webhook_outbox SET attempts = $1, next_attempt_at = $2, last_error = $3, claimed_by = NULL, \
             claimed_until = NULL WHERE id = $4",
        )
        .bind(attempts)
        .bind(at)
        .bind(error)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Gives up on an event (dead letter), visible in `natter webhooks list` and the metrics.
    pub async fn webhook_dead(&self, id: &str, attempts: i64, error: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE webhook_outbox SET status = 'dead', attempts = $1, last_error = $2, done_at = $3, claimed_by = NULL, \
             claimed_until = NULL WHERE id = $4",
        )
        .bind(attempts)
        .bind(error)
        .bind(crate::domain::now_millis())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Marks an app's endpoint (this URL) as gone (410).
    pub async fn disable_endpoint(&self, app: &str, url: &str, reason: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO webhook_endpoints (app_id, url, disabled_at, reason) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (app_id) DO UPDATE SET url = $2, disabled_at = $3, reason = $4",
        )
        .bind(app)
        .bind(url)
        .bind(crate::domain::now_millis())
        .bind(reason)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Whether this URL of the app was disabled by a 410 (a new URL starts enabled).
    pub async fn endpoint_disabled(&self, app: &str, url: &str) -> Result<bool, sqlx::Error> {
        let found: Option<String> = sqlx::query_scalar("SELECT url FROM webhook_endpoints WHERE app_id = $1")
            .bind(app)
            .fetch_optional(self.pool())
            .await?;
        Ok(found.as_deref() == Some(url))
    }

    /// Events by status (pending, delivered, dead), newest first.
    pub async fn webhooks(&self, app: Option<&AppId>, status: &str, limit: i64) -> Result<Vec<OutboxRow>, sqlx::Error> {
        let rows = match app {
            Some(app) => sqlx::query(&format!(
                "SELECT {COLUMNS} FROM webhook_outbox WHERE app_id = $1 AND status = $2 ORDER BY created_at DESC LIMIT $3"
            ))
            .bind(app.as_str())
            .bind(status)
            .bind(limit)
            .fetch_all(self.pool())
            .await?,
            None => sqlx::query(&format!("SELECT {COLUMNS} FROM webhook_outbox WHERE status = $1 ORDER BY created_at DESC LIMIT $2"))
                .bind(status)
                .bind(limit)
                .fetch_all(self.pool())
                .await?,
        };
        rows.iter().map(row).collect()
    }

    /// Puts dead events (one, or all of an app's) back in the queue, due now.
    pub async fn retry_dead_webhooks(&self, app: &AppId, id: Option<&str>) -> Result<u64, sqlx::Error> {
        let now = crate::domain::now_millis();
        let done = match id {
            Some(id) => sqlx::query(
                "UPDATE webhook_outbox SET status = 'pending', next_attempt_at = $1, attempts = 0 WHERE app_id = $2 AND id = $3 AND status = 'dead'",
            )
            .bind(now)
            .bind(app.as_str())
            .bind(id)
            .execute(self.pool())
            .await?,
            None => sqlx::query(
                "UPDATE webhook_outbox SET status = 'pending', next_attempt_at = $1, attempts = 0 WHERE app_id = $2 AND status = 'dead'",
            )
            .bind(now)
            .bind(app.as_str())
            .execute(self.pool())
            .await?,
        };
        sqlx::query("DELETE FROM webhook_endpoints WHERE app_id = $1").bind(app.as_str()).execute(self.pool()).await?;
        Ok(done.rows_affected())
    }

    /// Deletes finished events (delivered or dead) older than `before`.
    pub async fn purge_webhooks(&self, status: &str, before: i64) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query("DELETE FROM webhook_outbox WHERE status = $1 AND done_at < $2")
            .bind(status)
            .bind(before)
            .execute(self.pool())
            .await?
            .rows_affected())
    }

    /// Counts by status, for metrics.
    pub async fn webhook_counts(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM webhook_outbox GROUP BY status")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| Ok((r.try_get("status")?, r.try_get("n")?))).collect()
    }
}
