//! A member's conversation list: each conversation with its last visible message, the member's
//! own settings (pinned, archived, muted), and unread counts.

use std::{collections::HashMap, time::Instant};

use sqlx::Row;

use super::{
    Store,
    conversations::{Membership, row_to_membership},
    observe,
    sql::Sql,
};
use crate::domain::{AppId, UserKey};

/// The last message a member may see, as the list previews it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LastMessage {
    pub seq: i64,
    pub sender: Option<String>,
    /// The first characters only (`chat.preview_chars`); empty when recalled or deleted.
    pub content: String,
    pub created_at: i64,
    pub recalled: bool,
    pub deleted: bool,
}

/// One conversation of the list: the member's standing in it, their own settings, and its last
/// visible message.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxEntry {
    pub member: Membership,
    pub pinned_at: Option<i64>,
    pub archived_at: Option<i64>,
    pub muted_until: Option<i64>,
    pub last_message: Option<LastMessage>,
    /// The last message's time, or when the member joined.
    pub last_activity: i64,
}

/// Unread messages of one conversation: others' messages after the read marker that are not
/// recalled, deleted or hidden for the member; and whether one of them mentions the member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unread {
    pub count: i64,
    pub mentioned: bool,
    /// The member muted the conversation until a time still to come.
    pub muted: bool,
}

/// A change to a member's own settings of a conversation (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct Prefs {
    pub pinned: Option<bool>,
    pub archived: Option<bool>,
    /// `Some(None)` unmutes.
    pub muted_until: Option<Option<i64>>,
}

/// Users counted in one unread statement, at most.
pub(crate) const UNREAD_MAX_USERS: usize = 512;
/// The sizes an unread statement is padded to (users), the last [`UNREAD_MAX_USERS`].
const UNREAD_SIZES: [usize; 5] = [1, 8, 64, 256, UNREAD_MAX_USERS];
/// A user key no user has (keys are positive): the padding of an unread statement.
const NO_USER: i64 = -1;

impl Store {
    /// Every conversation the user is or was in (or only `one`), with its last visible message,
    /// in one statement.
    pub async fn inbox(
        &self,
        app: &AppId,
        user: UserKey,
        one: Option<&str>,
        preview_chars: usize,
    ) -> Result<Vec<InboxEntry>, sqlx::Error> {
        let started = Instant::now();
        let rows = sqlx::query(
            concat!(
                "SELECT c.id AS conversation_id, c.kind, c.name, c.last_seq, c.change_seq, ",
                read_seq_sql!(),
                " AS read_seq, m.joined_seq, m.left_seq, m.role, c.dissolved_at, \
             m.joined_at, m.pinned_at, m.archived_at, m.muted_until, \
             lm.seq AS lm_seq, su.public_id AS lm_sender, SUBSTR(lm.content, 1, CAST($3 AS INTEGER)) AS lm_content, \
             lm.created_at AS lm_created, lm.recalled_at AS lm_recalled, lm.deleted_at AS lm_deleted, h.seq AS lm_hidden \
             FROM members m JOIN conversations c ON c.app_id = m.app_id AND c.id = m.conversation_id \
             LEFT JOIN messages lm ON lm.app_id = m.app_id AND lm.conversation_id = m.conversation_id \
             AND lm.seq = COALESCE(m.left_seq, c.last_seq) AND lm.seq > m.joined_seq \
             LEFT JOIN users su ON su.user_key = lm.sender_key \
             LEFT JOIN hidden_messages h ON h.app_id = lm.app_id AND h.conversation_id = lm.conversation_id \
             AND h.seq = lm.seq AND h.user_key = m.user_key \
             WHERE m.app_id = $1 AND m.user_key = $2 AND ($4 IS NULL OR m.conversation_id = $4)"
            ),
        )
        .bind(app.as_str())
        .bind(user.0)
        .bind(preview_chars as i64)
        .bind(one)
        .fetch_all(self.pool())
        .await?;
        observe("inbox", started);
        rows.iter()
            .map(|r| {
                let last_message = match r.try_get::<Option<i64>, _>("lm_seq")? {
                    None => None,
                    Some(seq) => {
                        let recalled = r.try_get::<Option<i64>, _>("lm_recalled")?.is_some();
                        let deleted = r.try_get::<Option<i64>, _>("lm_deleted")?.is_some()
                            || r.try_get::<Option<i64>, _>("lm_hidden")?.is_some();
                        let content: String = r.try_get("lm_content")?;
                        Some(LastMessage {
                            seq,
                            sender: r.try_get("lm_sender")?,
                            content: if recalled || deleted { String::new() } else { content },
                            created_at: r.try_get("lm_created")?,
                            recalled,
                            deleted,
                        })
                    }
                };
                let joined_at: i64 = r.try_get("joined_at")?;
                Ok(InboxEntry {
                    member: row_to_membership(r)?,
                    pinned_at: r.try_get("pinned_at")?,
                    archived_at: r.try_get("archived_at")?,
                    muted_until: r.try_get("muted_until")?,
                    last_activity: last_message.as_ref().map_or(joined_at, |m| m.created_at.max(joined_at)),
                    last_message,
                })
            })
            .collect()
    }

    /// Unread counts of the user's conversations (only `of` when given); conversations with
    /// nothing unread are left out.
    pub async fn unread(
        &self,
        app: &AppId,
        user: UserKey,
        of: Option<&[&str]>,
    ) -> Result<HashMap<String, Unread>, sqlx::Error> {
        let mut all = self.unread_of_users(app, &[user], of).await?;
        // A user without a row has nothing unread.
        Ok(all.remove(&user).unwrap_or_default())
    }

    /// Unread counts of several users' conversations (only `of` when given), in one statement
    /// per [`UNREAD_MAX_USERS`]; users and conversations with nothing unread are left out.
    pub async fn unread_of_users(
        &self,
        app: &AppId,
        users: &[UserKey],
        of: Option<&[&str]>,
    ) -> Result<HashMap<UserKey, HashMap<String, Unread>>, sqlx::Error> {
        let mut out = HashMap::new();
        if of.is_some_and(<[&str]>::is_empty) {
            return Ok(out);
        }
        for chunk in users.chunks(UNREAD_MAX_USERS) {
            out.extend(self.unread_of_some(app, chunk, of).await?);
        }
        Ok(out)
    }

    /// [`Store::unread_of_users`] for at most [`UNREAD_MAX_USERS`], in one statement.
    async fn unread_of_some(
        &self,
        app: &AppId,
        users: &[UserKey],
        of: Option<&[&str]>,
    ) -> Result<HashMap<UserKey, HashMap<String, Unread>>, sqlx::Error> {
        let started = Instant::now();
        // Nothing one sent lies past one's read marker (sending moves it), so a member's unread
        // count is the distance from the marker to the end of what they may read, less the
        // removed and the hidden messages in between: a few index probes per conversation,
        // however many messages are unread. Counting the unread messages themselves cost a
        // 1,000-member group at 100 msg/s its delivery p99 (27.9 ms -> 1,911 ms, one run).
        // The hidden and mentioned counts are driven by the member's own (usually empty) rows,
        // each message probed by its key in an EXISTS: written as joins, SQLite walked every
        // unread message of the conversation for every member (512 members of a group 1,500
        // messages behind: 620 ms a statement, against 6 ms so).
        let mut sql = Sql::new(
            self.dialect(),
            concat!(
                "SELECT m.user_key, m.conversation_id, \
                 COALESCE(m.left_seq, c.last_seq) - ",
                read_seq_sql!(),
                " - (SELECT COUNT(*) FROM messages r WHERE r.app_id = m.app_id AND r.conversation_id = m.conversation_id \
                   AND (r.recalled_at IS NOT NULL OR r.deleted_at IS NOT NULL) \
                   AND r.seq > ",
                read_seq_sql!(),
                " AND r.seq <= COALESCE(m.left_seq, c.last_seq)) \
                 - (SELECT COUNT(*) FROM hidden_messages h \
                   WHERE h.app_id = m.app_id AND h.conversation_id = m.conversation_id AND h.user_key = m.user_key \
                   AND h.seq > ",
                read_seq_sql!(),
                " AND h.seq <= COALESCE(m.left_seq, c.last_seq) \
                   AND EXISTS (SELECT 1 FROM messages hm WHERE hm.app_id = h.app_id \
                   AND hm.conversation_id = h.conversation_id AND hm.seq = h.seq \
                   AND hm.recalled_at IS NULL AND hm.deleted_at IS NULL)) AS n, \
                 (SELECT COUNT(*) FROM mentions mn \
                   WHERE mn.app_id = m.app_id AND mn.user_key = m.user_key AND mn.conversation_id = m.conversation_id \
                   AND mn.seq > ",
                read_seq_sql!(),
                " AND mn.seq <= COALESCE(m.left_seq, c.last_seq) \
                   AND EXISTS (SELECT 1 FROM messages mm WHERE mm.app_id = mn.app_id \
                   AND mm.conversation_id = mn.conversation_id AND mm.seq = mn.seq \
                   AND mm.recalled_at IS NULL AND mm.deleted_at IS NULL) \
                   AND NOT EXISTS (SELECT 1 FROM hidden_messages mh WHERE mh.app_id = mn.app_id \
                   AND mh.conversation_id = mn.conversation_id AND mh.user_key = mn.user_key AND mh.seq = mn.seq)) AS mentioned, \
                 CASE WHEN m.muted_until > "
            ),
        );
        // The users drive the statement (a VALUES list joined to their memberships), so its cost
        // is their conversations however large a group is: as `m.user_key IN (…)`, a group of
        // 10,000 not yet analyzed was planned as a scan of all its members, each checked against
        // the whole list (35 ms a statement idle, 100+ ms under load; PostgreSQL's CPU then held
        // up every commit and a 10,000-member room's delivery p99 went to 11-14× the floor's).
        // Padded to a few sizes with a key no user has, so a connection prepares a handful of
        // statements rather than one per count of users.
        sql.push_bind(crate::domain::now_millis()).push(" THEN 1 ELSE 0 END AS muted FROM (VALUES ");
        let size = UNREAD_SIZES.iter().copied().find(|s| *s >= users.len()).unwrap_or(UNREAD_MAX_USERS);
        sql.push_tuples(0..size, |row, i| {
            row.push_bind(users.get(i).map_or(NO_USER, |u| u.0));
        });
        // CROSS JOIN: SQLite keeps that order (the users, then each one's memberships); joined
        // with ON it scanned every membership of the app and the whole list for each.
        // PostgreSQL plans a CROSS JOIN like any other.
        sql.push(") v CROSS JOIN members m JOIN conversations c ON c.app_id = m.app_id AND c.id = m.conversation_id");
        sql.push(" WHERE m.app_id = ").push_bind(app.as_str()).push(" AND m.user_key = v.column1");
        sql.push(" AND COALESCE(m.left_seq, c.last_seq) > ").push(read_seq_sql!());
        if let Some(of) = of {
            sql.push(" AND m.conversation_id IN (").push_list(of.iter().copied()).push(")");
        }
        let rows = sql.build()?.fetch_all(self.pool()).await?;
        observe("unread", started);
        let mut out: HashMap<UserKey, HashMap<String, Unread>> = HashMap::new();
        for r in &rows {
            let count: i64 = r.try_get("n")?;
            if count <= 0 {
                continue;
            }
            let unread = Unread {
                count,
                mentioned: r.try_get::<i64, _>("mentioned")? > 0,
                muted: r.try_get::<i64, _>("muted")? > 0,
            };
            out.entry(UserKey(r.try_get("user_key")?)).or_default().insert(r.try_get("conversation_id")?, unread);
        }
        Ok(out)
    }

    /// Changes the member's own settings of a conversation; false when they are not a member.
    pub async fn set_prefs(
        &self,
        app: &AppId,
        conversation: &str,
        user: UserKey,
        prefs: &Prefs,
    ) -> Result<bool, sqlx::Error> {
        let now = crate::domain::now_millis();
        let mut sql = Sql::new(self.dialect(), "UPDATE members SET user_key = user_key");
        if let Some(pinned) = prefs.pinned {
            sql.push(", pinned_at = ").push_bind(pinned.then_some(now));
        }
        if let Some(archived) = prefs.archived {
            sql.push(", archived_at = ").push_bind(archived.then_some(now));
        }
        if let Some(muted) = prefs.muted_until {
            sql.push(", muted_until = ").push_bind(muted);
        }
        sql.push(" WHERE app_id = ").push_bind(app.as_str());
        sql.push(" AND conversation_id = ").push_bind(conversation).push(" AND user_key = ").push_bind(user.0);
        let mut tx = self.begin_write().await?;
        let done = sql.build()?.execute(&mut **tx).await?.rows_affected();
        tx.commit().await?;
        Ok(done > 0)
    }
}
