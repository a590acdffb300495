//! Groups as stored: creation, members and roles, and the administrative acts (profile, mutes,
//! role changes, kicks, leaving, dissolving), each in one transaction under the group's row lock.
//!
//! An act reads the group and the members it concerns through a [`GroupTx`] (the row is locked
//! first, so two acts on one group, or an act and a send, never interleave), the caller checks
//! them against `groups::rules`, then writes the change, its audit entry and its webhook event
//! in that same transaction.

use std::time::Instant;

use sqlx::{Row, any::AnyRow};

use super::{Store, WriteTx, audit::NewAudit, is_unique_violation, observe};
use crate::domain::{AppId, GroupId, Role, UserId, UserKey};

/// A current member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub key: UserKey,
    pub id: String,
    pub role: Role,
    /// Silenced by the owner or an admin until then (unix ms).
    pub silenced_until: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupWriteError {
    #[error("group id already taken")]
    Exists,
    #[error("group not found")]
    NotFound,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A group's own fields, as locked by a [`GroupTx`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupProfile {
    pub name: String,
    pub avatar_url: Option<String>,
    pub announcement: Option<String>,
    /// Only the owner and admins may send.
    pub muted: bool,
    pub dissolved_at: Option<i64>,
    pub last_seq: i64,
}

const MEMBER_SELECT: &str = "SELECT m.user_key, u.public_id, m.role, m.silenced_until FROM members m \
     JOIN users u ON u.user_key = m.user_key";

fn row_to_member(row: &AnyRow) -> Result<GroupMember, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Ok(GroupMember {
        key: UserKey(row.try_get("user_key")?),
        id: row.try_get("public_id")?,
        role: Role::parse(&role).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        silenced_until: row.try_get("silenced_until")?,
    })
}

impl Store {
    /// Creates a group with its owner and first members in one transaction.
    pub async fn create_group(
        &self,
        app: &AppId,
        group: &GroupId,
        name: &str,
        owner: UserKey,
        members: &[UserKey],
        event: Option<&serde_json::Value>,
    ) -> Result<(), GroupWriteError> {
        let started = Instant::now();
        let now = crate::domain::now_millis();
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO conversations (app_id, id, kind, name, created_by, last_seq, created_at) VALUES ($1, $2, 'group', $3, $4, 0, $5)",
        )
        .bind(app.as_str())
        .bind(group.as_str())
        .bind(name)
        .bind(owner.0)
        .bind(now)
        .execute(&mut **tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(GroupWriteError::Exists),
            other => other?,
        };
        let everyone = std::iter::once((owner, Role::Owner))
            .chain(members.iter().filter(|k| **k != owner).map(|k| (*k, Role::Member)));
        for (user, role) in everyone {
            sqlx::query(
                "INSERT INTO members (app_id, conversation_id, user_key, role, joined_seq, joined_at) VALUES ($1, $2, $3, $4, 0, $5) \
                 ON CONFLICT (app_id, conversation_id, user_key) DO NOTHING",
            )
            .bind(app.as_str())
            .bind(group.as_str())
            .bind(user.0)
            .bind(role.as_str())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        if let Some(data) = event {
            super::outbox::enqueue(&mut tx, app.as_str(), "group.created", data).await?;
        }
        tx.commit().await?;
        observe("group_create", started);
        Ok(())
    }

    /// Current members of a group, oldest first.
    pub async fn group_members(&self, app: &AppId, group: &str) -> Result<Vec<GroupMember>, sqlx::Error> {
        let started = Instant::now();
        let rows = sqlx::query(&format!(
            "{MEMBER_SELECT} WHERE m.app_id = $1 AND m.conversation_id = $2 AND m.left_seq IS NULL \
             ORDER BY m.joined_at, m.user_key"
        ))
        .bind(app.as_str())
        .bind(group)
        .fetch_all(self.pool())
        .await?;
        observe("group_members", started);
        rows.iter().map(row_to_member).collect()
    }

    /// A group's profile (dissolved or not), without locking it.
    pub async fn group_profile(&self, app: &AppId, group: &str) -> Result<Option<GroupProfile>, sqlx::Error> {
        let row = sqlx::query(&format!("{PROFILE_SELECT} WHERE app_id = $1 AND id = $2 AND kind = 'group'"))
            .bind(app.as_str())
            .bind(group)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(row_to_profile).transpose()
    }

    /// Begins an act on a group: locks its row (sends and other acts wait) and reads it.
    pub async fn begin_group(&self, app: &AppId, group: &GroupId) -> Result<GroupTx, GroupWriteError> {
        let mut tx = self.begin_write().await?;
        // A no-op write takes the row lock on both stores (SQLite's write gate is already held).
        let locked = sqlx::query(
            "UPDATE conversations SET last_seq = last_seq WHERE app_id = $1 AND id = $2 AND kind = 'group'",
        )
        .bind(app.as_str())
        .bind(group.as_str())
        .execute(&mut **tx)
        .await?;
        if locked.rows_affected() == 0 {
            return Err(GroupWriteError::NotFound);
        }
        let row = sqlx::query(&format!("{PROFILE_SELECT} WHERE app_id = $1 AND id = $2"))
            .bind(app.as_str())
            .bind(group.as_str())
            .fetch_one(&mut **tx)
            .await?;
        let profile = row_to_profile(&row)?;
        Ok(GroupTx { tx, app: app.clone(), group: group.clone(), profile, started: Instant::now() })
    }
}

const PROFILE_SELECT: &str = "SELECT name, avatar_url, announcement, muted, dissolved_at, last_seq FROM conversations";

fn row_to_profile(row: &AnyRow) -> Result<GroupProfile, sqlx::Error> {
    Ok(GroupProfile {
        name: row.try_get::<Option<String>, _>("name")?.unwrap_or_default(),
        avatar_url: row.try_get("avatar_url")?,
        announcement: row.try_get("announcement")?,
        muted: row.try_get::<i64, _>("muted")? != 0,
        dissolved_at: row.try_get("dissolved_at")?,
        last_seq: row.try_get("last_seq")?,
    })
}

/// One act on one locked group. Dropped without [`GroupTx::commit`], it changes nothing.
pub struct GroupTx {
    tx: WriteTx,
    app: AppId,
    group: GroupId,
    /// The group as locked (updated by [`GroupTx::set_profile`]).
    pub profile: GroupProfile,
    started: Instant,
}

impl GroupTx {
    pub fn group(&self) -> &GroupId {
        &self.group
    }

    /// The group's owner (a group has one, unless its last member has left).
    pub async fn owner(&mut self) -> Result<Option<GroupMember>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "{MEMBER_SELECT} WHERE m.app_id = $1 AND m.conversation_id = $2 AND m.left_seq IS NULL AND m.role = 'owner'"
        ))
        .bind(self.app.as_str())
        .bind(self.group.as_str())
        .fetch_optional(&mut **self.tx)
        .await?;
        row.as_ref().map(row_to_member).transpose()
    }

    /// A current member by key.
    pub async fn member(&mut self, user: UserKey) -> Result<Option<GroupMember>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "{MEMBER_SELECT} WHERE m.app_id = $1 AND m.conversation_id = $2 AND m.user_key = $3 AND m.left_seq IS NULL"
        ))
        .bind(self.app.as_str())
        .bind(self.group.as_str())
        .bind(user.0)
        .fetch_optional(&mut **self.tx)
        .await?;
        row.as_ref().map(row_to_member).transpose()
    }

    /// A current member by public id.
    pub async fn member_by_id(&mut self, user: &UserId) -> Result<Option<GroupMember>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "{MEMBER_SELECT} WHERE m.app_id = $1 AND m.conversation_id = $2 AND u.app_id = $1 AND u.public_id = $3 \
             AND m.left_seq IS NULL"
        ))
        .bind(self.app.as_str())
        .bind(self.group.as_str())
        .bind(user.as_str())
        .fetch_optional(&mut **self.tx)
        .await?;
        row.as_ref().map(row_to_member).transpose()
    }

    /// Who takes over from a leaving owner: the longest-standing admin, else the longest-standing
    /// member; `None` when nobody else is left.
    pub async fn successor(&mut self, leaving: UserKey) -> Result<Option<GroupMember>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "{MEMBER_SELECT} WHERE m.app_id = $1 AND m.conversation_id = $2 AND m.left_seq IS NULL AND m.user_key <> $3 \
             ORDER BY CASE m.role WHEN 'admin' THEN 0 ELSE 1 END, m.joined_at, m.user_key LIMIT 1"
        ))
        .bind(self.app.as_str())
        .bind(self.group.as_str())
        .bind(leaving.0)
        .fetch_optional(&mut **self.tx)
        .await?;
        row.as_ref().map(row_to_member).transpose()
    }

    /// How many current members the group has.
    pub async fn member_count(&mut self) -> Result<usize, sqlx::Error> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM members WHERE app_id = $1 AND conversation_id = $2 AND left_seq IS NULL",
        )
        .bind(self.app.as_str())
        .bind(self.group.as_str())
        .fetch_one(&mut **self.tx)
        .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub async fn set_profile(&mut self, profile: GroupProfile) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE conversations SET name = $1, avatar_url = $2, announcement = $3, muted = $4 WHERE app_id = $5 AND id = $6",
        )
        .bind(&profile.name)
        .bind(&profile.avatar_url)
        .bind(&profile.announcement)
        .bind(i64::from(profile.muted))
        .bind(self.app.as_str())
        .bind(self.group.as_str())
        .execute(&mut **self.tx)
        .await?;
        self.profile = profile;
        Ok(())
    }

    pub async fn set_role(&mut self, user: UserKey, role: Role) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE members SET role = $1 WHERE app_id = $2 AND conversation_id = $3 AND user_key = $4")
            .bind(role.as_str())
            .bind(self.app.as_str())
            .bind(self.group.as_str())
            .bind(user.0)
            .execute(&mut **self.tx)
            .await?;
        Ok(())
    }

    pub async fn set_silenced(&mut self, user: UserKey, until: Option<i64>) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE members SET silenced_until = $1 WHERE app_id = $2 AND conversation_id = $3 AND user_key = $4",
        )
        .bind(until)
        .bind(self.app.as_str())
        .bind(self.group.as_str())
        .bind(user.0)
        .execute(&mut **self.tx)
        .await?;
        Ok(())
    }

    /// Adds users at the group's current seq (they read history from there on); users already
    /// in it are left alone, users who had left rejoin. Returns the users actually added.
    pub async fn add_members(&mut self, users: &[(UserKey, String)]) -> Result<Vec<(UserKey, String)>, sqlx::Error> {
        let now = crate::domain::now_millis();
        let active = self.active_keys().await?;
        let mut added: Vec<(UserKey, String)> = Vec::new();
        for (user, id) in users {
            if active.contains(&user.0) || added.iter().any(|(k, _)| k == user) {
                continue;
            }
            added.push((*user, id.clone()));
        }
        for (user, _) in &added {
            sqlx::query(
                "INSERT INTO members (app_id, conversation_id, user_key, role, joined_seq, read_seq, joined_at) \
                 VALUES ($1, $2, $3, 'member', $4, $4, $5) \
                 ON CONFLICT (app_id, conversation_id, user_key) DO UPDATE SET role = 'member', joined_seq = $4, \
                 read_seq = $4, left_seq = NULL, joined_at = $5, silenced_until = NULL",
            )
            .bind(self.app.as_str())
            .bind(self.group.as_str())
            .bind(user.0)
            .bind(self.profile.last_seq)
            .bind(now)
            .execute(&mut **self.tx)
            .await?;
        }
        Ok(added)
    }

    /// Ends a membership at the group's current seq (what was sent until now stays readable).
    pub async fn end_membership(&mut self, user: UserKey) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE members SET left_seq = $1 WHERE app_id = $2 AND conversation_id = $3 AND user_key = $4 AND left_seq IS NULL",
        )
        .bind(self.profile.last_seq)
        .bind(self.app.as_str())
        .bind(self.group.as_str())
        .bind(user.0)
        .execute(&mut **self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The current members' keys.
    async fn active_keys(&mut self) -> Result<Vec<i64>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT user_key FROM members WHERE app_id = $1 AND conversation_id = $2 AND left_seq IS NULL",
        )
        .bind(self.app.as_str())
        .bind(self.group.as_str())
        .fetch_all(&mut **self.tx)
        .await
    }

    /// Ends every current membership at the group's current seq; returns whose.
    pub async fn end_all_memberships(&mut self) -> Result<Vec<UserKey>, sqlx::Error> {
        let keys = self.active_keys().await?;
        sqlx::query("UPDATE members SET left_seq = $1 WHERE app_id = $2 AND conversation_id = $3 AND left_seq IS NULL")
            .bind(self.profile.last_seq)
            .bind(self.app.as_str())
            .bind(self.group.as_str())
            .execute(&mut **self.tx)
            .await?;
        Ok(keys.into_iter().map(UserKey).collect())
    }

    /// Brings a dissolved group back under a fresh profile (name only, nothing muted); its old
    /// history stays behind the current seq.
    pub async fn revive(&mut self, name: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE conversations SET dissolved_at = NULL WHERE app_id = $1 AND id = $2")
            .bind(self.app.as_str())
            .bind(self.group.as_str())
            .execute(&mut **self.tx)
            .await?;
        let profile = GroupProfile {
            name: name.to_string(),
            avatar_url: None,
            announcement: None,
            muted: false,
            dissolved_at: None,
            last_seq: self.profile.last_seq,
        };
        self.set_profile(profile).await
    }

    /// Ends the group: members keep reading its history; nothing more is sent to it.
    pub async fn dissolve(&mut self, at: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE conversations SET dissolved_at = $1 WHERE app_id = $2 AND id = $3")
            .bind(at)
            .bind(self.app.as_str())
            .bind(self.group.as_str())
            .execute(&mut **self.tx)
            .await?;
        self.profile.dissolved_at = Some(at);
        Ok(())
    }

    /// Records the act in the audit trail, in its transaction.
    pub async fn audit(&mut self, entry: &NewAudit<'_>) -> Result<(), sqlx::Error> {
        super::audit::record(&mut self.tx, &self.app, entry).await
    }

    /// Queues a webhook event, sent once the act commits.
    pub async fn event(&mut self, event: &str, data: &serde_json::Value) -> Result<(), sqlx::Error> {
        super::outbox::enqueue(&mut self.tx, self.app.as_str(), event, data).await
    }

    /// The act happens here, or not at all.
    pub async fn commit(self, op: &'static str) -> Result<(), sqlx::Error> {
        self.tx.commit().await?;
        observe(op, self.started);
        Ok(())
    }
}
