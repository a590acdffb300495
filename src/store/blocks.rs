//! A user's own blocks. The message writer reads them with the batch's idempotency check (no
//! statement of their own on the send path); typing and presence ask here.

use std::collections::HashSet;

use sqlx::Row;

use super::{Store, sql::Sql};
use crate::domain::{AppId, UserKey};

/// One user blocked by another, as their list shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Blocked {
    pub user: String,
    pub since: i64,
}

impl Store {
    /// `user` blocks `blocked`; false when they already did.
    pub async fn block(&self, app: &AppId, user: UserKey, blocked: UserKey) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        let added = sqlx::query(
            "INSERT INTO blocks (app_id, user_key, blocked_key, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (app_id, user_key, blocked_key) DO NOTHING",
        )
        .bind(app.as_str())
        .bind(user.0)
        .bind(blocked.0)
        .bind(crate::domain::now_millis())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(added > 0)
    }

    /// Lifts a block; false when there was none.
    pub async fn unblock(&self, app: &AppId, user: UserKey, blocked: UserKey) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        let removed = sqlx::query("DELETE FROM blocks WHERE app_id = $1 AND user_key = $2 AND blocked_key = $3")
            .bind(app.as_str())
            .bind(user.0)
            .bind(blocked.0)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(removed > 0)
    }

    /// Whom the user blocks, newest first.
    pub async fn blocked_by(&self, app: &AppId, user: UserKey) -> Result<Vec<Blocked>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT u.public_id, b.created_at FROM blocks b JOIN users u ON u.user_key = b.blocked_key \
             WHERE b.app_id = $1 AND b.user_key = $2 ORDER BY b.created_at DESC, u.public_id",
        )
        .bind(app.as_str())
        .bind(user.0)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok(Blocked { user: r.try_get("public_id")?, since: r.try_get("created_at")? })).collect()
    }

    /// Which of `others` the user blocks.
    pub async fn blocked_among(
        &self,
        app: &AppId,
        user: UserKey,
        others: &[UserKey],
    ) -> Result<HashSet<UserKey>, sqlx::Error> {
        if others.is_empty() {
            return Ok(HashSet::new());
        }
        let mut sql = Sql::new(self.dialect(), "SELECT blocked_key FROM blocks WHERE app_id = ");
        sql.push_bind(app.as_str()).push(" AND user_key = ").push_bind(user.0).push(" AND blocked_key IN (");
        sql.push_list(others.iter().map(|k| k.0)).push(")");
        let keys: Vec<i64> = sql.build_scalar()?.fetch_all(self.pool()).await?;
        Ok(keys.into_iter().map(UserKey).collect())
    }
}
