//! Conversations (direct and group), their members and their messages.
//!
//! The one write that matters: [`Store::append_message`] bumps the conversation's `last_seq` under
//! the row lock and inserts the message in the same transaction, so seqs are gap-free per
//! conversation and a resend of a known `client_msg_id` stores nothing.

use std::time::Instant;

use sqlx::{Row, any::AnyRow};

use super::{Store, observe};
use crate::domain::{AppId, ConversationId, ConversationKind, Role, UserKey};

/// The sender key of messages the app itself sends.
pub const SYSTEM_SENDER: UserKey = UserKey(0);

/// A stored message as clients see it (public ids resolved).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub id: String,
    pub conversation_id: String,
    pub conversation_kind: ConversationKind,
    pub seq: i64,
    /// Public id of the sender; `None` for system messages.
    pub sender: Option<String>,
    /// Public id of the recipient of a direct message.
    pub recipient: Option<String>,
    pub client_msg_id: String,
    pub kind: Option<String>,
    pub content: String,
    pub meta: Option<String>,
    pub created_at: i64,
    pub edited_at: Option<i64>,
    /// Recalled by its sender (or a group owner/admin): content and meta are gone.
    pub recalled: bool,
    /// Deleted for everyone, or hidden for the reader ("delete for me"): content and meta are
    /// not shown.
    pub deleted: bool,
    pub reply_to: Option<i64>,
    /// Public ids of the users it mentions.
    pub mentions: Vec<String>,
    /// Per key, as the reader sees them (in key order).
    pub reactions: Vec<ReactionCount>,
    /// The conversation's change number when it last changed (0: never).
    pub change_seq: i64,
}

/// How many users react to a message with a key, and whether the reader is one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionCount {
    pub key: String,
    pub count: i64,
    pub me: bool,
}

/// Messages as `viewer` (the `$N` placeholder that binds the reader's key) sees them.
fn message_select(viewer: &str) -> String {
    format!(
        "SELECT m.id, m.conversation_id, c.kind AS conv_kind, m.seq, su.public_id AS sender, \
         ru.public_id AS recipient, m.client_msg_id, m.kind, m.content, m.meta, m.created_at, m.edited_at, \
         m.recalled_at, m.deleted_at, m.reply_to, m.mentions, m.change_seq, h.seq AS hidden, h.change_seq AS hidden_change \
         FROM messages m \
         JOIN conversations c ON c.app_id = m.app_id AND c.id = m.conversation_id \
         LEFT JOIN users su ON su.user_key = m.sender_key \
         LEFT JOIN users ru ON ru.user_key = m.recipient_key \
         LEFT JOIN hidden_messages h ON h.app_id = m.app_id AND h.conversation_id = m.conversation_id \
         AND h.seq = m.seq AND h.user_key = {viewer}"
    )
}

fn row_to_message(row: &AnyRow) -> Result<StoredMessage, sqlx::Error> {
    let kind: String = row.try_get("conv_kind")?;
    let recalled = row.try_get::<Option<i64>, _>("recalled_at")?.is_some();
    let deleted =
        row.try_get::<Option<i64>, _>("deleted_at")?.is_some() || row.try_get::<Option<i64>, _>("hidden")?.is_some();
    let gone = recalled || deleted;
    let mentions: Option<String> = row.try_get("mentions")?;
    let mentions = match mentions.as_deref() {
        Some(text) => serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        None => Vec::new(),
    };
    Ok(StoredMessage {
        id: row.try_get("id")?,
        conversation_id: row.try_get("conversation_id")?,
        conversation_kind: ConversationKind::parse(&kind).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        seq: row.try_get("seq")?,
        sender: row.try_get("sender")?,
        recipient: row.try_get("recipient")?,
        client_msg_id: row.try_get("client_msg_id")?,
        kind: row.try_get("kind")?,
        content: if gone { String::new() } else { row.try_get("content")? },
        meta: if gone { None } else { row.try_get("meta")? },
        created_at: row.try_get("created_at")?,
        edited_at: row.try_get("edited_at")?,
        recalled,
        deleted,
        reply_to: row.try_get("reply_to")?,
        mentions,
        reactions: Vec::new(),
        change_seq: row.try_get("change_seq")?,
    })
}

/// One user's standing in one conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub conversation_id: String,
    pub kind: ConversationKind,
    pub name: Option<String>,
    pub last_seq: i64,
    pub read_seq: i64,
    pub joined_seq: i64,
    pub left_seq: Option<i64>,
    pub role: Role,
    /// The conversation's change number (edits, recalls, deletions, reactions so far).
    pub change_seq: i64,
    /// When the group was dissolved (unix ms).
    pub dissolved_at: Option<i64>,
}

impl Membership {
    pub fn is_active(&self) -> bool {
        self.left_seq.is_none()
    }

    /// The highest seq this member may read.
    pub fn visible_upto(&self) -> i64 {
        self.left_seq.map_or(self.last_seq, |left| left.min(self.last_seq))
    }
}

const MEMBERSHIP_SELECT: &str = concat!(
    "SELECT c.id AS conversation_id, c.kind, c.name, c.last_seq, c.change_seq, ",
    read_seq_sql!(),
    " AS read_seq, m.joined_seq, m.left_seq, m.role, c.dissolved_at \
     FROM members m JOIN conversations c ON c.app_id = m.app_id AND c.id = m.conversation_id"
);

pub(super) fn row_to_membership(row: &AnyRow) -> Result<Membership, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    let role: String = row.try_get("role")?;
    let decode = |e: crate::domain::ParseError| sqlx::Error::Decode(Box::new(e));
    Ok(Membership {
        conversation_id: row.try_get("conversation_id")?,
        kind: ConversationKind::parse(&kind).map_err(decode)?,
        name: row.try_get("name")?,
        last_seq: row.try_get("last_seq")?,
        read_seq: row.try_get("read_seq")?,
        joined_seq: row.try_get("joined_seq")?,
        left_seq: row.try_get("left_seq")?,
        role: Role::parse(&role).map_err(decode)?,
        change_seq: row.try_get("change_seq")?,
        dissolved_at: row.try_get("dissolved_at")?,
    })
}

/// One message to append, owned so that another task may write it.
pub struct Job {
    pub app: String,
    pub conversation: String,
    pub kind: ConversationKind,
    pub sender: UserKey,
    pub recipient: Option<UserKey>,
    pub client_msg_id: String,
    pub message_kind: Option<String>,
    pub content: String,
    pub meta: Option<String>,
    pub sender_id: Option<String>,
    pub recipient_id: Option<String>,
    pub reply_to: Option<i64>,
    /// Mentioned users: their keys (for "an unread message mentions me") and public ids.
    pub mentions: Vec<(UserKey, String)>,
    /// The app wants a `message.sent` webhook event.
    pub hook: bool,
    /// Sent through the server API: mutes do not apply.
    pub bypass_mutes: bool,
}

impl Job {
    /// How the batch's maps name this message's conversation.
    pub(super) fn conversation_key(&self) -> (String, String) {
        (self.app.clone(), self.conversation.clone())
    }
}

pub struct NewMessage<'a> {
    pub app: &'a AppId,
    pub conversation: &'a ConversationId,
    pub kind: ConversationKind,
    pub sender: UserKey,
    /// For direct messages: the other participant (the conversation is created on first use).
    pub recipient: Option<UserKey>,
    pub client_msg_id: &'a str,
    pub message_kind: Option<&'a str>,
    pub content: &'a str,
    pub meta: Option<&'a str>,
    /// Public ids for the `message.sent` event (sender `None` for the app itself).
    pub sender_id: Option<&'a str>,
    pub recipient_id: Option<&'a str>,
    /// A seq of this conversation the sender may read (checked by the caller).
    pub reply_to: Option<i64>,
    /// Members of the conversation (checked by the caller).
    pub mentions: &'a [(UserKey, String)],
    pub hooks: &'a super::outbox::Hooks,
    /// Sent through the server API: mutes do not apply.
    pub bypass_mutes: bool,
}

/// Where an appended message landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub id: String,
    pub seq: i64,
    pub created_at: i64,
    /// False when the `client_msg_id` was known: nothing new was stored.
    pub created: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("conversation not found")]
    NotFound,
    #[error("sender is not a member")]
    NotAMember,
    /// The recipient of a direct message blocks its sender.
    #[error("the recipient blocks the sender")]
    Blocked,
    #[error("the group was dissolved")]
    Dissolved,
    #[error("the sender is muted: {0:?}")]
    Muted(crate::roles::SendRefusal),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A conversation a user is in, as a new session starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    pub id: String,
    pub group: bool,
    /// Its last seq when the session started.
    pub head: i64,
}

impl Store {
    /// Appends a message: the conversation's next seq, or the original answer for a known
    /// `client_msg_id`. Concurrent appends share a transaction (see `batch`); this returns once
    /// the message is committed.
    pub async fn append_message(&self, new: NewMessage<'_>) -> Result<Appended, AppendError> {
        let started = Instant::now();
        let answer = self
            .append_batched(Job {
                app: new.app.as_str().to_string(),
                conversation: new.conversation.as_str().to_string(),
                kind: new.kind,
                sender: new.sender,
                recipient: new.recipient,
                client_msg_id: new.client_msg_id.to_string(),
                message_kind: new.message_kind.map(str::to_string),
                content: new.content.to_string(),
                meta: new.meta.map(str::to_string),
                sender_id: new.sender_id.map(str::to_string),
                recipient_id: new.recipient_id.map(str::to_string),
                reply_to: new.reply_to,
                mentions: new.mentions.to_vec(),
                hook: new.hooks.wants("message.sent"),
                bypass_mutes: new.bypass_mutes,
            })
            .await;
        let op = match &answer {
            Ok(a) if !a.created => "message_append_duplicate",
            _ => "message_append",
        };
        observe(op, started);
        answer
    }

    /// Every conversation the user belongs or belonged to, ordered by id.
    pub async fn memberships(&self, app: &AppId, user: UserKey) -> Result<Vec<Membership>, sqlx::Error> {
        let started = Instant::now();
        let rows = sqlx::query(&format!("{MEMBERSHIP_SELECT} WHERE m.app_id = $1 AND m.user_key = $2 ORDER BY c.id"))
            .bind(app.as_str())
            .bind(user.0)
            .fetch_all(self.pool())
            .await?;
        observe("memberships", started);
        rows.iter().map(row_to_membership).collect()
    }

    pub async fn membership(
        &self,
        app: &AppId,
        conversation: &str,
        user: UserKey,
    ) -> Result<Option<Membership>, sqlx::Error> {
        let started = Instant::now();
        let row = sqlx::query(&format!(
            "{MEMBERSHIP_SELECT} WHERE m.app_id = $1 AND m.conversation_id = $2 AND m.user_key = $3"
        ))
        .bind(app.as_str())
        .bind(conversation)
        .bind(user.0)
        .fetch_optional(self.pool())
        .await?;
        observe("membership", started);
        row.as_ref().map(row_to_membership).transpose()
    }

    /// Messages with `after < seq <= upto`, oldest first, at most `limit`, as `viewer` sees them.
    pub async fn messages_after(
        &self,
        app: &AppId,
        conversation: &str,
        viewer: UserKey,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<StoredMessage>, sqlx::Error> {
        let started = Instant::now();
        let rows = sqlx::query(&format!(
            "{} WHERE m.app_id = $1 AND m.conversation_id = $2 AND m.seq > $3 AND m.seq <= $4 ORDER BY m.seq LIMIT $5",
            message_select("$6")
        ))
        .bind(app.as_str())
        .bind(conversation)
        .bind(after)
        .bind(upto)
        .bind(limit)
        .bind(viewer.0)
        .fetch_all(self.pool())
        .await?;
        let mut out: Vec<StoredMessage> = rows.iter().map(row_to_message).collect::<Result<_, _>>()?;
        self.attach_reactions(app, conversation, viewer, &mut out).await?;
        observe("messages_after", started);
        Ok(out)
    }

    /// The newest `limit` messages with `floor < seq < before`, returned oldest first, as
    /// `viewer` sees them.
    pub async fn messages_before(
        &self,
        app: &AppId,
        conversation: &str,
        viewer: UserKey,
        floor: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<StoredMessage>, sqlx::Error> {
        let started = Instant::now();
        let rows = sqlx::query(&format!(
            "{} WHERE m.app_id = $1 AND m.conversation_id = $2 AND m.seq > $3 AND m.seq < $4 ORDER BY m.seq DESC LIMIT $5",
            message_select("$6")
        ))
        .bind(app.as_str())
        .bind(conversation)
        .bind(floor)
        .bind(before)
        .bind(limit)
        .bind(viewer.0)
        .fetch_all(self.pool())
        .await?;
        let mut out: Vec<StoredMessage> = rows.iter().map(row_to_message).collect::<Result<_, _>>()?;
        out.reverse();
        self.attach_reactions(app, conversation, viewer, &mut out).await?;
        observe("messages_before", started);
        Ok(out)
    }

    /// Messages with `floor < seq <= upto` changed after the change number `after` (edited,
    /// recalled, deleted, reacted to, or hidden for `viewer`), in change order, at most `limit`,
    /// as `viewer` sees them now.
    pub async fn changes_after(
        &self,
        app: &AppId,
        conversation: &str,
        viewer: UserKey,
        (floor, upto): (i64, i64),
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredMessage>, sqlx::Error> {
        let started = Instant::now();
        let rows = sqlx::query(&format!(
            "{} WHERE m.app_id = $1 AND m.conversation_id = $2 AND m.seq > $3 AND m.seq <= $4 \
             AND (m.change_seq > $5 OR h.change_seq > $5) \
             ORDER BY CASE WHEN h.change_seq > m.change_seq THEN h.change_seq ELSE m.change_seq END LIMIT $6",
            message_select("$7")
        ))
        .bind(app.as_str())
        .bind(conversation)
        .bind(floor)
        .bind(upto)
        .bind(after)
        .bind(limit)
        .bind(viewer.0)
        .fetch_all(self.pool())
        .await?;
        let mut out: Vec<StoredMessage> = rows.iter().map(row_to_message).collect::<Result<_, _>>()?;
        for (m, row) in out.iter_mut().zip(&rows) {
            // The number the reader's cursor moves to: the later of the message's and its hiding.
            let hidden: Option<i64> = row.try_get("hidden_change")?;
            m.change_seq = m.change_seq.max(hidden.unwrap_or(0));
        }
        self.attach_reactions(app, conversation, viewer, &mut out).await?;
        observe("changes_after", started);
        Ok(out)
    }

    /// Fills in the reactions of a page of one conversation's messages. Every reaction stamps
    /// its message with a change number, so a page of never-changed messages costs no query.
    async fn attach_reactions(
        &self,
        app: &AppId,
        conversation: &str,
        viewer: UserKey,
        messages: &mut [StoredMessage],
    ) -> Result<(), sqlx::Error> {
        let changed: Vec<i64> =
            messages.iter().filter(|m| m.change_seq > 0 && !m.recalled && !m.deleted).map(|m| m.seq).collect();
        let (Some(lo), Some(hi)) = (changed.iter().min(), changed.iter().max()) else { return Ok(()) };
        let rows = sqlx::query(
            "SELECT seq, reaction, COUNT(*) AS n, SUM(CASE WHEN user_key = $1 THEN 1 ELSE 0 END) AS mine \
             FROM reactions WHERE app_id = $2 AND conversation_id = $3 AND seq >= $4 AND seq <= $5 \
             GROUP BY seq, reaction ORDER BY seq, reaction",
        )
        .bind(viewer.0)
        .bind(app.as_str())
        .bind(conversation)
        .bind(*lo)
        .bind(*hi)
        .fetch_all(self.pool())
        .await?;
        for row in rows {
            let seq: i64 = row.try_get("seq")?;
            if let Some(m) = messages.iter_mut().find(|m| m.seq == seq && !m.recalled && !m.deleted) {
                m.reactions.push(ReactionCount {
                    key: row.try_get("reaction")?,
                    count: row.try_get("n")?,
                    me: row.try_get::<i64, _>("mine")? > 0,
                });
            }
        }
        Ok(())
    }

    /// Raises the member's read marker (never lowers it); returns the marker now stored.
    pub async fn mark_read(
        &self,
        app: &AppId,
        conversation: &str,
        user: UserKey,
        seq: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        let started = Instant::now();
        let mut tx = self.begin_write().await?;
        let stored: Option<i64> = sqlx::query_scalar(
            "UPDATE members SET read_seq = CASE WHEN read_seq < $1 THEN $1 ELSE read_seq END \
             WHERE app_id = $2 AND conversation_id = $3 AND user_key = $4 RETURNING read_seq",
        )
        .bind(seq)
        .bind(app.as_str())
        .bind(conversation)
        .bind(user.0)
        .fetch_optional(&mut **tx)
        .await?;
        tx.commit().await?;
        observe("mark_read", started);
        Ok(stored)
    }

    /// The conversations the user is an active member of, with their last seq now: a new
    /// session subscribes to the groups, and counts pushes from those seqs on (a commit batch
    /// publishes its messages in any order, so the first push a session sees need not be the
    /// next one).
    pub async fn active_conversations(&self, app: &AppId, user: UserKey) -> Result<Vec<Active>, sqlx::Error> {
        let started = Instant::now();
        let mut conn = self.read().await?;
        let rows = sqlx::query(
            "SELECT m.conversation_id, c.kind, c.last_seq FROM members m \
             JOIN conversations c ON c.app_id = m.app_id AND c.id = m.conversation_id \
             WHERE m.app_id = $1 AND m.user_key = $2 AND m.left_seq IS NULL",
        )
        .bind(app.as_str())
        .bind(user.0)
        .fetch_all(&mut *conn)
        .await;
        let rows = conn.finish(rows)?;
        observe("active_conversations", started);
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                Ok(Active { id: r.try_get("conversation_id")?, group: kind == "group", head: r.try_get("last_seq")? })
            })
            .collect()
    }
}
