//! The audit trail of moderation: who did what to whom, when and why. Rows are written in the
//! transaction of the act they record, so an act and its record stand or fall together.

use sqlx::Row;

use super::{Store, WriteTx};
use crate::domain::AppId;

/// An act to record.
#[derive(Debug, Clone, Default)]
pub struct NewAudit<'a> {
    /// A user's public id; `None` for the app itself (server API, command line).
    pub actor: Option<&'a str>,
    pub action: &'a str,
    pub target_user: Option<&'a str>,
    pub target_group: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub data: Option<&'a serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditEntry {
    pub id: String,
    pub at: i64,
    pub actor: Option<String>,
    pub action: String,
    pub target_user: Option<String>,
    pub target_group: Option<String>,
    pub reason: Option<String>,
    /// What else the act carried (JSON), e.g. a ban's end.
    pub data: Option<serde_json::Value>,
}

/// Which entries to read: newest first, before a cursor.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery<'a> {
    pub user: Option<&'a str>,
    pub group: Option<&'a str>,
    /// `(at, id)` of the last entry of the previous page.
    pub before: Option<(i64, &'a str)>,
    pub limit: i64,
}

pub(super) async fn record(tx: &mut WriteTx, app: &AppId, entry: &NewAudit<'_>) -> Result<(), sqlx::Error> {
    // Time-ordered ids: entries of one millisecond still page in the order they were written.
    let id = uuid::Uuid::now_v7().simple().to_string();
    sqlx::query(
        "INSERT INTO audit_log (id, app_id, at, actor, action, target_user, target_group, reason, data) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(app.as_str())
    .bind(crate::domain::now_millis())
    .bind(entry.actor)
    .bind(entry.action)
    .bind(entry.target_user)
    .bind(entry.target_group)
    .bind(entry.reason)
    .bind(entry.data.map(serde_json::Value::to_string))
    .execute(&mut ***tx)
    .await?;
    Ok(())
}

impl Store {
    /// Records an act that has no transaction of its own to join.
    pub async fn audit(&self, app: &AppId, entry: &NewAudit<'_>) -> Result<(), sqlx::Error> {
        let mut tx = self.begin_write().await?;
        record(&mut tx, app, entry).await?;
        tx.commit().await
    }

    /// The app's audit trail, newest first.
    pub async fn audit_log(&self, app: &AppId, q: &AuditQuery<'_>) -> Result<Vec<AuditEntry>, sqlx::Error> {
        let mut sql = super::sql::Sql::new(
            self.dialect(),
            "SELECT id, at, actor, action, target_user, target_group, reason, data FROM audit_log WHERE app_id = ",
        );
        sql.push_bind(app.as_str());
        if let Some(user) = q.user {
            sql.push(" AND target_user = ").push_bind(user);
        }
        if let Some(group) = q.group {
            sql.push(" AND target_group = ").push_bind(group);
        }
        if let Some((at, id)) = q.before {
            sql.push(" AND (at < ").push_bind(at).push(" OR (at = ").push_bind(at).push(" AND id < ").push_bind(id);
            sql.push("))");
        }
        sql.push(" ORDER BY at DESC, id DESC LIMIT ").push_bind(q.limit);
        let rows = sql.build()?.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                let data: Option<String> = r.try_get("data")?;
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target_user: r.try_get("target_user")?,
                    target_group: r.try_get("target_group")?,
                    reason: r.try_get("reason")?,
                    data: data
                        .as_deref()
                        .map(serde_json::from_str)
                        .transpose()
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                })
            })
            .collect()
    }
}
