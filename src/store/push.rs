//! The push outbox.
//!
//! The message writer adds a job per device of each recipient who is offline, in the batch's own
//! transaction (`enqueue`), so a crash loses none. A job gathers the conversation's messages
//! until its coalescing window ends (a burst is one push); then a node claims it for a while, as
//! webhook events are claimed (`FOR UPDATE SKIP LOCKED` on PostgreSQL, the write gate on
//! SQLite), and a claim that expires because its node died is taken by another. Delivered and
//! skipped jobs are deleted; dead ones stay for `natter push list` until retried or purged.

use std::{collections::HashSet, time::Instant};

use sqlx::{Row, any::AnyRow};

use super::{Dialect, Store, WriteTx, observe, sql::Sql};
use crate::domain::{AppId, UserKey};

/// One conversation's newest message in a batch, for the push jobs it may start.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stored<'a> {
    pub app: &'a str,
    pub conversation: &'a str,
    pub seq: i64,
    pub sender: i64,
    /// Messages of the batch in this conversation (all coalesced into the one job).
    pub messages: i64,
}

/// Adds (or extends) a gathering job per device of every member of these conversations who is
/// not the sender, is offline on every node, is not banned, has not muted the conversation and
/// does not block the sender. One statement for the whole batch.
pub(super) async fn enqueue(
    tx: &mut WriteTx,
    dialect: Dialect,
    stored: &[Stored<'_>],
    now: i64,
    window_ms: i64,
) -> Result<u64, sqlx::Error> {
    if stored.is_empty() {
        return Ok(0);
    }
    let mut sql = Sql::new(
        dialect,
        "INSERT INTO push_jobs (app_id, device_id, user_key, conversation_id, seq, sender_key, messages, created_at, \
         status, attempts, next_attempt_at) SELECT d.app_id, d.id, d.user_key, v.column2, v.column3, v.column4, \
         v.column5, ",
    );
    sql.push_bind(now).push(", 'pending', 0, ").push_bind(now + window_ms).push(" FROM (VALUES ");
    sql.push_tuples(stored, |row, s| {
        row.push_bind(s.app).push_bind(s.conversation).push_bind(s.seq).push_bind(s.sender).push_bind(s.messages);
    });
    sql.push(
        ") v JOIN members m ON m.app_id = v.column1 AND m.conversation_id = v.column2 AND m.left_seq IS NULL \
         JOIN devices d ON d.app_id = m.app_id AND d.user_key = m.user_key \
         JOIN users u ON u.app_id = m.app_id AND u.user_key = m.user_key \
         WHERE m.user_key <> v.column4 AND (m.muted_until IS NULL OR m.muted_until <= ",
    );
    sql.push_bind(now).push(") AND (u.banned_until IS NULL OR u.banned_until <= ").push_bind(now).push(
        ") AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.app_id = m.app_id AND b.user_key = m.user_key \
         AND b.blocked_key = v.column4) \
         AND NOT EXISTS (SELECT 1 FROM presence p JOIN nodes n ON n.id = p.node_id \
         WHERE p.app_id = m.app_id AND p.user_key = m.user_key AND n.lease_until > ",
    );
    sql.push_bind(now).push(
        ") ON CONFLICT (device_id, conversation_id) WHERE status = 'pending' AND attempts = 0 \
         DO UPDATE SET seq = excluded.seq, sender_key = excluded.sender_key, \
         messages = push_jobs.messages + excluded.messages",
    );
    let added = sql.build()?.execute(&mut ***tx).await?.rows_affected();
    if added > 0 {
        metrics::counter!("natter_push_jobs_total").increment(added);
    }
    Ok(added)
}

/// A claimed job.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushJob {
    pub id: i64,
    pub app_id: String,
    pub device_id: String,
    #[serde(skip)]
    pub user_key: UserKey,
    pub conversation_id: String,
    pub seq: i64,
    #[serde(skip)]
    pub sender_key: UserKey,
    /// Messages coalesced into this push.
    pub messages: i64,
    pub created_at: i64,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

const COLUMNS: &str = "id, app_id, device_id, user_key, conversation_id, seq, sender_key, messages, created_at, \
                       status, attempts, next_attempt_at, last_error";

fn job(r: &AnyRow) -> Result<PushJob, sqlx::Error> {
    Ok(PushJob {
        id: r.try_get("id")?,
        app_id: r.try_get("app_id")?,
        device_id: r.try_get("device_id")?,
        user_key: UserKey(r.try_get("user_key")?),
        conversation_id: r.try_get("conversation_id")?,
        seq: r.try_get("seq")?,
        sender_key: UserKey(r.try_get("sender_key")?),
        messages: r.try_get("messages")?,
        created_at: r.try_get("created_at")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_error: r.try_get("last_error")?,
    })
}

impl Store {
    /// Claims up to `limit` due jobs (and jobs whose claim expired) for `node` until
    /// `now + lease_ms`. A claimed job stops gathering: a message after this starts a new one.
    pub async fn claim_pushes(
        &self,
        node: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<PushJob>, sqlx::Error> {
        let started = Instant::now();
        let lock = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "UPDATE push_jobs SET status = 'sending', claimed_by = $1, claimed_until = $2 WHERE id IN (\
             SELECT id FROM push_jobs WHERE (status = 'pending' AND next_attempt_at <= $3) \
             OR (status = 'sending' AND claimed_until < $3) ORDER BY next_attempt_at LIMIT $4{lock}) \
             RETURNING {COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&sql).bind(node).bind(now + lease_ms).bind(now).bind(limit).fetch_all(&mut **tx).await?;
        tx.commit().await?;
        observe("push_claim", started);
        rows.iter().map(job).collect()
    }

    /// These jobs are finished (delivered, or not needed): they go, in one statement.
    pub async fn pushes_finished(&self, ids: &[i64]) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut sql = Sql::new(self.dialect(), "DELETE FROM push_jobs WHERE id IN (");
        sql.push_list(ids.iter().copied()).push(")");
        let mut tx = self.begin_write().await?;
        sql.build()?.execute(&mut **tx).await?;
        tx.commit().await?;
        observe("push_finish", started);
        Ok(())
    }

    /// Hands the job to the app: a `push.needed` webhook event, written in the transaction that
    /// finishes the job (neither is lost, neither happens twice).
    pub async fn push_to_webhook<T: serde::Serialize>(&self, id: i64, app: &str, event: &T) -> Result<(), sqlx::Error> {
        let mut tx = self.begin_write().await?;
        super::outbox::enqueue(&mut tx, app, "push.needed", event).await?;
        sqlx::query("DELETE FROM push_jobs WHERE id = $1").bind(id).execute(&mut **tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn push_retry_later(&self, id: i64, attempts: i64, at: i64, error: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE push_jobs SET status = 'pending', attempts = $1, next_attempt_at = $2, last_error = $3, \
             claimed_by = NULL, claimed_until = NULL WHERE id = $4",
        )
        .bind(attempts)
        .bind(at)
        .bind(error)
        .bind(id)
        .execute(&mut **tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Gives up on a job (dead letter), visible in `natter push list` and the metrics.
    pub async fn push_dead(&self, id: i64, attempts: i64, error: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE push_jobs SET status = 'dead', attempts = $1, last_error = $2, done_at = $3, claimed_by = NULL, \
             claimed_until = NULL WHERE id = $4",
        )
        .bind(attempts)
        .bind(error)
        .bind(crate::domain::now_millis())
        .bind(id)
        .execute(&mut **tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Jobs by status (pending, sending, dead), newest first.
    pub async fn pushes(&self, app: Option<&AppId>, status: &str, limit: i64) -> Result<Vec<PushJob>, sqlx::Error> {
        let mut sql = Sql::new(self.dialect(), format!("SELECT {COLUMNS} FROM push_jobs WHERE status = "));
        sql.push_bind(status);
        if let Some(app) = app {
            sql.push(" AND app_id = ").push_bind(app.as_str());
        }
        sql.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(limit);
        let rows = sql.build()?.fetch_all(self.pool()).await?;
        rows.iter().map(job).collect()
    }

    /// Puts an app's dead jobs (or one) back in the queue, due now, with the whole retry
    /// schedule again (`attempts = 1`: it is a retry, never a gathering job).
    pub async fn retry_dead_pushes(&self, app: &AppId, id: Option<i64>) -> Result<u64, sqlx::Error> {
        let mut sql =
            Sql::new(self.dialect(), "UPDATE push_jobs SET status = 'pending', attempts = 1, next_attempt_at = ");
        sql.push_bind(crate::domain::now_millis()).push(" WHERE status = 'dead' AND app_id = ").push_bind(app.as_str());
        if let Some(id) = id {
            sql.push(" AND id = ").push_bind(id);
        }
        let mut tx = self.begin_write().await?;
        let done = sql.build()?.execute(&mut **tx).await?.rows_affected();
        tx.commit().await?;
        Ok(done)
    }

    /// Deletes dead jobs that died before `before`.
    pub async fn purge_dead_pushes(&self, before: i64) -> Result<u64, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM push_jobs WHERE status = 'dead' AND done_at < $1")
            .bind(before)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(done)
    }

    /// Counts by status, for metrics.
    pub async fn push_counts(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows =
            sqlx::query("SELECT status, COUNT(*) AS n FROM push_jobs GROUP BY status").fetch_all(self.pool()).await?;
        rows.iter().map(|r| Ok((r.try_get("status")?, r.try_get("n")?))).collect()
    }

    /// Which of the app's `users` have a session on some live node now (their pushes are not
    /// needed), in one statement.
    pub async fn online_among(&self, app: &AppId, users: &[UserKey]) -> Result<HashSet<UserKey>, sqlx::Error> {
        if users.is_empty() {
            return Ok(HashSet::new());
        }
        let mut sql = Sql::new(
            self.dialect(),
            "SELECT DISTINCT p.user_key FROM presence p JOIN nodes n ON n.id = p.node_id WHERE p.app_id = ",
        );
        sql.push_bind(app.as_str()).push(" AND n.lease_until > ").push_bind(crate::domain::now_millis());
        sql.push(" AND p.user_key IN (").push_list(users.iter().map(|u| u.0)).push(")");
        let keys: Vec<i64> = sql.build_scalar()?.fetch_all(self.pool()).await?;
        Ok(keys.into_iter().map(UserKey).collect())
    }
}
