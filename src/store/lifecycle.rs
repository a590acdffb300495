//! What happens to a message after it is sent: edits, recalls, deletions (for everyone, or hidden
//! for one member) and reactions. Each change is one transaction: the message row is locked and
//! checked against the caller's rule, changed, and stamped with the conversation's next change
//! number, which is how a device that was away learns the final state of messages it already
//! holds (`changes_after`). A change that changes nothing (a reaction already there) takes no
//! number and sends no event.

use std::time::Instant;

use sqlx::Row;

use super::{Dialect, Store, WriteTx, observe, outbox};
use crate::domain::{AppId, UserKey};

/// A message as a change's rule sees it.
#[derive(Debug, Clone)]
pub struct Current {
    pub sender: UserKey,
    pub created_at: i64,
    pub recalled: bool,
    pub deleted: bool,
}

impl Current {
    /// Recalled or deleted for everyone: nothing is left to change.
    pub fn is_gone(&self) -> bool {
        self.recalled || self.deleted
    }
}

/// One change to one message.
#[derive(Debug, Clone)]
pub enum Change<'a> {
    /// New content; `meta` replaced when given (`Some(None)` clears it), kept otherwise.
    Edit {
        content: &'a str,
        meta: Option<Option<&'a str>>,
    },
    Recall,
    /// Erased for everyone.
    DeleteForAll,
    /// Hidden from one member's devices.
    Hide {
        user: UserKey,
    },
    React {
        user: UserKey,
        key: &'a str,
        on: bool,
    },
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// False when there was nothing to do (a reaction already in that state).
    pub changed: bool,
    pub at: i64,
    /// The conversation's change number this change took (0 when nothing changed).
    pub change_seq: i64,
    /// For reactions: how many users now react with the key.
    pub count: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeError<E> {
    #[error("no such message")]
    NotFound,
    /// The caller's rule refused the change.
    #[error("refused")]
    Refused(E),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A webhook event written in the change's transaction.
pub struct HookEvent<'a> {
    pub event: &'static str,
    pub data: &'a serde_json::Value,
}

impl Store {
    /// A message of a conversation by its id: its seq and sender. Reads the conversation's
    /// messages (there is no index by id: it would cost every insert), so it is for rare calls
    /// (RongCloud's recall by `messageUID`).
    pub async fn message_by_id(
        &self,
        app: &AppId,
        conversation: &str,
        id: &str,
    ) -> Result<Option<(i64, UserKey)>, sqlx::Error> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT seq, sender_key FROM messages WHERE app_id = $1 AND conversation_id = $2 AND id = $3",
        )
        .bind(app.as_str())
        .bind(conversation)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(seq, sender)| (seq, UserKey(sender))))
    }

    /// Applies `change` to the message at `seq` if `rule` allows it given the message's current
    /// state (checked under the row lock, so two changes cannot both pass a rule the first one
    /// breaks).
    pub async fn change_message<E>(
        &self,
        app: &AppId,
        conversation: &str,
        seq: i64,
        rule: impl FnOnce(&Current) -> Result<(), E>,
        change: Change<'_>,
        hook: Option<HookEvent<'_>>,
    ) -> Result<Changed, ChangeError<E>> {
        let started = Instant::now();
        let mut tx = self.begin_write().await?;
        let lock = if self.dialect() == Dialect::Postgres { " FOR UPDATE" } else { "" };
        let row = sqlx::query(&format!(
            "SELECT sender_key, created_at, recalled_at, deleted_at FROM messages \
             WHERE app_id = $1 AND conversation_id = $2 AND seq = $3{lock}"
        ))
        .bind(app.as_str())
        .bind(conversation)
        .bind(seq)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(ChangeError::NotFound)?;
        let current = Current {
            sender: UserKey(row.try_get("sender_key")?),
            created_at: row.try_get("created_at")?,
            recalled: row.try_get::<Option<i64>, _>("recalled_at")?.is_some(),
            deleted: row.try_get::<Option<i64>, _>("deleted_at")?.is_some(),
        };
        rule(&current).map_err(ChangeError::Refused)?;

        let at = crate::domain::now_millis();
        let target = (app.as_str(), conversation, seq);
        let changed = apply(&mut tx, target, &change, at).await?;
        let mut out = Changed { changed, at, change_seq: 0, count: 0 };
        if changed {
            out.change_seq = sqlx::query_scalar(
                "UPDATE conversations SET change_seq = change_seq + 1 WHERE app_id = $1 AND id = $2 RETURNING change_seq",
            )
            .bind(app.as_str())
            .bind(conversation)
            .fetch_one(&mut **tx)
            .await?;
            let stamp = match change {
                // Only this member's view changed: the hidden row carries the number.
                Change::Hide { user } => sqlx::query(
                    "UPDATE hidden_messages SET change_seq = $1 \
                     WHERE app_id = $2 AND conversation_id = $3 AND seq = $4 AND user_key = $5",
                )
                .bind(out.change_seq)
                .bind(app.as_str())
                .bind(conversation)
                .bind(seq)
                .bind(user.0),
                _ => sqlx::query(
                    "UPDATE messages SET change_seq = $1 WHERE app_id = $2 AND conversation_id = $3 AND seq = $4",
                )
                .bind(out.change_seq)
                .bind(app.as_str())
                .bind(conversation)
                .bind(seq),
            };
            stamp.execute(&mut **tx).await?;
            if let Some(hook) = hook {
                outbox::enqueue(&mut tx, app.as_str(), hook.event, hook.data).await?;
            }
        }
        if let Change::React { key, .. } = change {
            out.count = sqlx::query_scalar(
                "SELECT COUNT(*) FROM reactions WHERE app_id = $1 AND conversation_id = $2 AND seq = $3 AND reaction = $4",
            )
            .bind(app.as_str())
            .bind(conversation)
            .bind(seq)
            .bind(key)
            .fetch_one(&mut **tx)
            .await?;
        }
        tx.commit().await?;
        observe("message_change", started);
        Ok(out)
    }
}

/// Writes the change; whether it changed anything.
async fn apply(
    tx: &mut WriteTx,
    (app, conversation, seq): (&str, &str, i64),
    change: &Change<'_>,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let done = match change {
        Change::Edit { content, meta } => {
            let (replace_meta, meta) = match meta {
                Some(m) => (true, *m),
                None => (false, None),
            };
            sqlx::query(
                "UPDATE messages SET content = $1, meta = CASE WHEN $2 THEN $3 ELSE meta END, edited_at = $4 \
                 WHERE app_id = $5 AND conversation_id = $6 AND seq = $7",
            )
            .bind(*content)
            .bind(replace_meta)
            .bind(meta)
            .bind(at)
            .bind(app)
            .bind(conversation)
            .bind(seq)
            .execute(&mut ***tx)
            .await?
            .rows_affected()
        }
        Change::Recall | Change::DeleteForAll => {
            let column = if matches!(change, Change::Recall) { "recalled_at" } else { "deleted_at" };
            // Erased, not hidden: what was said is gone from the store, with what hung on it.
            for table in ["reactions", "mentions"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE app_id = $1 AND conversation_id = $2 AND seq = $3"))
                    .bind(app)
                    .bind(conversation)
                    .bind(seq)
                    .execute(&mut ***tx)
                    .await?;
            }
            sqlx::query(&format!(
                "UPDATE messages SET content = '', meta = NULL, {column} = $1 \
                 WHERE app_id = $2 AND conversation_id = $3 AND seq = $4"
            ))
            .bind(at)
            .bind(app)
            .bind(conversation)
            .bind(seq)
            .execute(&mut ***tx)
            .await?
            .rows_affected()
        }
        Change::Hide { user } => sqlx::query(
            "INSERT INTO hidden_messages (app_id, conversation_id, user_key, seq, change_seq, hidden_at) \
             VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT (app_id, conversation_id, user_key, seq) DO NOTHING",
        )
        .bind(app)
        .bind(conversation)
        .bind(user.0)
        .bind(seq)
        .bind(at)
        .execute(&mut ***tx)
        .await?
        .rows_affected(),
        Change::React { user, key, on: true } => sqlx::query(
            "INSERT INTO reactions (app_id, conversation_id, seq, reaction, user_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (app_id, conversation_id, seq, reaction, user_key) DO NOTHING",
        )
        .bind(app)
        .bind(conversation)
        .bind(seq)
        .bind(*key)
        .bind(user.0)
        .bind(at)
        .execute(&mut ***tx)
        .await?
        .rows_affected(),
        Change::React { user, key, on: false } => sqlx::query(
            "DELETE FROM reactions WHERE app_id = $1 AND conversation_id = $2 AND seq = $3 AND reaction = $4 AND user_key = $5",
        )
        .bind(app)
        .bind(conversation)
        .bind(seq)
        .bind(*key)
        .bind(user.0)
        .execute(&mut ***tx)
        .await?
        .rows_affected(),
    };
    Ok(done > 0)
}
