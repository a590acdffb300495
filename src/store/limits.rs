//! Rate-limit counters shared by every node (fixed windows, one row per key).

use super::{Store, observe};

/// A limit that was hit: how long until its window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub retry_after_secs: i64,
}

impl Store {
    /// Counts one hit for `key`; `Err` once more than `limit` hits fall in the current window.
    pub async fn hit(&self, key: &str, limit: u32, window_secs: i64) -> Result<Result<(), Exceeded>, sqlx::Error> {
        let started = std::time::Instant::now();
        let now = crate::domain::now_millis();
        let window_ms = window_secs * 1000;
        let mut tx = self.begin_write().await?;
        let (hits, window_start): (i64, i64) = sqlx::query_as(
            "INSERT INTO rate_limits (key, window_start, hits) VALUES ($1, $2, 1) \
             ON CONFLICT (key) DO UPDATE SET \
             hits = CASE WHEN rate_limits.window_start <= $3 THEN 1 ELSE rate_limits.hits + 1 END, \
             window_start = CASE WHEN rate_limits.window_start <= $3 THEN $2 ELSE rate_limits.window_start END \
             RETURNING hits, window_start",
        )
        .bind(key)
        .bind(now)
        .bind(now - window_ms)
        .fetch_one(&mut **tx)
        .await?;
        tx.commit().await?;
        observe("rate_limit", started);
        if hits > i64::from(limit) {
            let retry_after_secs = ((window_start + window_ms - now) / 1000).max(1);
            return Ok(Err(Exceeded { retry_after_secs }));
        }
        Ok(Ok(()))
    }

    /// Forgets counters whose window ended long ago.
    pub async fn purge_rate_limits(&self, before: i64) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query("DELETE FROM rate_limits WHERE window_start < $1")
            .bind(before)
            .execute(self.pool())
            .await?
            .rows_affected())
    }
}
