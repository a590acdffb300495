//! Users, their device sessions and the refresh tokens that rotate within a session.

use std::{collections::HashMap, time::Instant};

use sqlx::{Row, any::AnyRow};

use super::{Store, is_unique_violation, observe, sql::Sql};
use crate::domain::{AppId, AvatarUrl, Email, Name, UserId, UserKey, UserKind};

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub key: UserKey,
    pub app_id: String,
    pub id: String,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub nickname: Option<String>,
    pub avatar_url: Option<String>,
    pub kind: UserKind,
    pub token_version: i64,
    pub tokens_revoked_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    pub created_at: i64,
    /// Banned while this is in the future ([`BANNED_UNTIL_LIFTED`]: until lifted).
    pub banned_until: Option<i64>,
    pub ban_reason: Option<String>,
}

/// The stored end of a ban that has none.
pub const BANNED_UNTIL_LIFTED: i64 = i64::MAX;

/// A ban in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// When it ends by itself; `None` until it is lifted.
    pub until: Option<i64>,
    pub reason: Option<String>,
}

impl UserRecord {
    /// The ban in force at `now` (unix ms), if any.
    pub fn ban_at(&self, now: i64) -> Option<Ban> {
        let until = self.banned_until.filter(|until| *until > now)?;
        Some(Ban { until: (until != BANNED_UNTIL_LIFTED).then_some(until), reason: self.ban_reason.clone() })
    }
}

pub(super) const USER_COLUMNS: &str = "user_key, app_id, public_id, email, password_hash, first_name, last_name, \
     nickname, avatar_url, kind, token_version, tokens_revoked_at, last_seen_at, created_at, banned_until, ban_reason";

pub(super) fn row_to_user(row: &AnyRow) -> Result<UserRecord, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    Ok(UserRecord {
        key: UserKey(row.try_get("user_key")?),
        app_id: row.try_get("app_id")?,
        id: row.try_get("public_id")?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        first_name: row.try_get("first_name")?,
        last_name: row.try_get("last_name")?,
        nickname: row.try_get("nickname")?,
        avatar_url: row.try_get("avatar_url")?,
        kind: UserKind::parse(&kind).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        token_version: row.try_get("token_version")?,
        tokens_revoked_at: row.try_get("tokens_revoked_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        created_at: row.try_get("created_at")?,
        banned_until: row.try_get("banned_until")?,
        ban_reason: row.try_get("ban_reason")?,
    })
}

pub struct NewUser<'a> {
    pub app: &'a AppId,
    pub id: &'a UserId,
    pub email: Option<&'a Email>,
    pub password_hash: Option<&'a str>,
    pub first_name: &'a Name,
    pub last_name: &'a Name,
    pub kind: UserKind,
    /// For the `user.registered` event.
    pub hooks: &'a super::outbox::Hooks,
    /// How the user came to be: register, guest, import, token.
    pub via: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum UserWriteError {
    #[error("email already registered")]
    EmailTaken,
    #[error("user id already taken")]
    IdTaken,
    #[error("user is not a guest")]
    NotGuest,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn classify_unique(err: sqlx::Error) -> UserWriteError {
    if is_unique_violation(&err) {
        let text = err.to_string();
        if text.contains("email") { UserWriteError::EmailTaken } else { UserWriteError::IdTaken }
    } else {
        UserWriteError::Db(err)
    }
}

/// Fields of `GET /v1/users`, combined with AND; at least one is required.
#[derive(Debug, Default, Clone)]
pub struct UserQuery {
    pub email: Option<Email>,
    pub id: Option<UserId>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

#[derive(Debug, Default)]
pub struct ProfilePatch<'a> {
    pub first_name: Option<&'a Name>,
    pub last_name: Option<&'a Name>,
    pub nickname: Option<&'a Name>,
    pub avatar_url: Option<&'a AvatarUrl>,
}

/// What presenting a refresh token found.
#[derive(Debug)]
pub enum RefreshUse {
    Valid {
        session_id: String,
        app_id: String,
        user_key: UserKey,
        device_id: Option<String>,
    },
    Unknown,
    Expired,
    Revoked,
    /// The token had been spent already: its whole session is now revoked.
    Reused {
        session_id: String,
        user_key: UserKey,
    },
}

impl Store {
    pub async fn insert_user(&self, new: NewUser<'_>) -> Result<UserRecord, UserWriteError> {
        let started = Instant::now();
        let now = crate::domain::now_millis();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO users (app_id, public_id, email, password_hash, first_name, last_name, kind, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {USER_COLUMNS}"
        ))
        .bind(new.app.as_str())
        .bind(new.id.as_str())
        .bind(new.email.map(|e| e.as_str().to_string()))
        .bind(new.password_hash.map(str::to_string))
        .bind(new.first_name.as_str())
        .bind(new.last_name.as_str())
        .bind(new.kind.as_str())
        .bind(now)
        .fetch_one(&mut **tx)
        .await
        .map_err(classify_unique)?;
        let user = row_to_user(&row)?;
        if new.hooks.wants("user.registered") {
            let data = serde_json::json!({
                "user": { "id": user.id, "kind": user.kind, "first_name": user.first_name, "last_name": user.last_name },
                "via": new.via,
            });
            super::outbox::enqueue(&mut tx, new.app.as_str(), "user.registered", &data).await?;
        }
        tx.commit().await?;
        observe("user_insert", started);
        Ok(user)
    }

    pub async fn user_by_email(&self, app: &AppId, email: &Email) -> Result<Option<UserRecord>, sqlx::Error> {
        let started = Instant::now();
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE app_id = $1 AND email = $2"))
            .bind(app.as_str())
            .bind(email.as_str())
            .fetch_optional(self.pool())
            .await?;
        observe("user_by_email", started);
        row.as_ref().map(row_to_user).transpose()
    }

    pub async fn user_by_key(&self, app: &AppId, key: UserKey) -> Result<Option<UserRecord>, sqlx::Error> {
        let started = Instant::now();
        let mut conn = self.read().await?;
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE app_id = $1 AND user_key = $2"))
            .bind(app.as_str())
            .bind(key.0)
            .fetch_optional(&mut *conn)
            .await;
        let row = conn.finish(row)?;
        observe("user_by_key", started);
        row.as_ref().map(row_to_user).transpose()
    }

    pub async fn user_by_id(&self, app: &AppId, id: &UserId) -> Result<Option<UserRecord>, sqlx::Error> {
        let started = Instant::now();
        let mut conn = self.read().await?;
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE app_id = $1 AND public_id = $2"))
            .bind(app.as_str())
            .bind(id.as_str())
            .fetch_optional(&mut *conn)
            .await;
        let row = conn.finish(row)?;
        observe("user_by_id", started);
        row.as_ref().map(row_to_user).transpose()
    }

    /// The internal key of the user with this public id, as a direct send needs it: from a
    /// cache kept for `APP_CACHE_TTL`. A user's key never changes; their public id can (rarely,
    /// through the server API): this node forgets the old mapping at once, other nodes within
    /// the TTL, as they do app settings. Measured: the per-send lookup was PostgreSQL's main
    /// load in a DM storm (11.8 ms average in the pool's queue at 3,800 msg/s).
    pub async fn user_key_by_id(&self, app: &AppId, id: &UserId) -> Result<Option<UserKey>, sqlx::Error> {
        if let Some(key) = self.keys.get(app, id) {
            return Ok(Some(key));
        }
        let seen = self.keys.changes.seen();
        let found = self.user_by_id(app, id).await?.map(|u| u.key);
        if let Some(key) = found {
            self.keys.put(app, id, key, seen);
        }
        Ok(found)
    }

    /// Public ids for internal keys (for rendering messages); unknown keys are left out.
    pub async fn users_by_ids(&self, app: &AppId, ids: &[UserId]) -> Result<Vec<UserRecord>, sqlx::Error> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(200) {
            let mut sql = Sql::new(self.dialect(), format!("SELECT {USER_COLUMNS} FROM users WHERE app_id = "));
            sql.push_bind(app.as_str()).push(" AND public_id IN (");
            sql.push_list(chunk.iter().map(UserId::as_str)).push(")");
            for row in sql.build()?.fetch_all(self.pool()).await? {
                out.push(row_to_user(&row)?);
            }
        }
        Ok(out)
    }

    pub async fn query_users(
        &self,
        app: &AppId,
        query: &UserQuery,
        limit: i64,
    ) -> Result<Vec<UserRecord>, sqlx::Error> {
        let started = Instant::now();
        let mut sql = format!("SELECT {USER_COLUMNS} FROM users WHERE app_id = $1");
        let mut binds: Vec<String> = Vec::new();
        let fields: [(&str, Option<&str>); 4] = [
            ("email", query.email.as_ref().map(Email::as_str)),
            ("public_id", query.id.as_ref().map(UserId::as_str)),
            ("first_name", query.first_name.as_deref()),
            ("last_name", query.last_name.as_deref()),
        ];
        for (column, value) in fields {
            if let Some(value) = value {
                binds.push(value.to_string());
                sql.push_str(&format!(" AND {column} = ${}", binds.len() + 1));
            }
        }
        sql.push_str(&format!(" ORDER BY user_key LIMIT ${}", binds.len() + 2));
        let mut q = sqlx::query(&sql).bind(app.as_str());
        for b in binds {
            q = q.bind(b);
        }
        let rows = q.bind(limit).fetch_all(self.pool()).await?;
        observe("user_query", started);
        rows.iter().map(row_to_user).collect()
    }

    pub async fn update_profile(
        &self,
        app: &AppId,
        key: UserKey,
        patch: &ProfilePatch<'_>,
    ) -> Result<Option<UserRecord>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "UPDATE users SET first_name = COALESCE($1, first_name), last_name = COALESCE($2, last_name), \
             nickname = COALESCE($3, nickname), avatar_url = COALESCE($4, avatar_url) \
             WHERE app_id = $5 AND user_key = $6 RETURNING {USER_COLUMNS}"
        ))
        .bind(patch.first_name.map(|n| n.as_str().to_string()))
        .bind(patch.last_name.map(|n| n.as_str().to_string()))
        .bind(patch.nickname.map(|n| n.as_str().to_string()))
        .bind(patch.avatar_url.map(|n| n.as_str().to_string()))
        .bind(app.as_str())
        .bind(key.0)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(row_to_user).transpose()
    }

    /// Turns a guest into a full account, keeping its id and history.
    pub async fn upgrade_guest(
        &self,
        app: &AppId,
        key: UserKey,
        email: &Email,
        password_hash: &str,
        first_name: &Name,
        last_name: &Name,
    ) -> Result<UserRecord, UserWriteError> {
        let row = sqlx::query(&format!(
            "UPDATE users SET email = $1, password_hash = $2, first_name = $3, last_name = $4, kind = 'user' \
             WHERE app_id = $5 AND user_key = $6 AND kind = 'guest' RETURNING {USER_COLUMNS}"
        ))
        .bind(email.as_str())
        .bind(password_hash)
        .bind(first_name.as_str())
        .bind(last_name.as_str())
        .bind(app.as_str())
        .bind(key.0)
        .fetch_optional(self.pool())
        .await
        .map_err(classify_unique)?;
        match row {
            Some(row) => Ok(row_to_user(&row)?),
            None => Err(UserWriteError::NotGuest),
        }
    }

    pub async fn set_last_seen(&self, app: &AppId, key: UserKey, at: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE users SET last_seen_at = $1 WHERE app_id = $2 AND user_key = $3")
            .bind(at)
            .bind(app.as_str())
            .bind(key.0)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Opens a device session with its first refresh token.
    pub async fn create_session(
        &self,
        app: &AppId,
        user: UserKey,
        device_id: Option<&str>,
        refresh_hash: &str,
        refresh_expires_at: i64,
    ) -> Result<String, sqlx::Error> {
        let started = Instant::now();
        let id = crate::domain::random_id("s_", 16);
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO auth_sessions (id, app_id, user_key, device_id, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(app.as_str())
        .bind(user.0)
        .bind(device_id.map(str::to_string))
        .bind(crate::domain::now_millis())
        .execute(&mut **tx)
        .await?;
        sqlx::query("INSERT INTO refresh_tokens (hash, session_id, expires_at) VALUES ($1, $2, $3)")
            .bind(refresh_hash)
            .bind(&id)
            .bind(refresh_expires_at)
            .execute(&mut **tx)
            .await?;
        tx.commit().await?;
        observe("session_create", started);
        Ok(id)
    }

    /// Spends a refresh token; a second use of the same token revokes its session.
    pub async fn use_refresh_token(
        &self,
        hash: &str,
        next_hash: &str,
        next_expires_at: i64,
    ) -> Result<RefreshUse, sqlx::Error> {
        let now = crate::domain::now_millis();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT r.session_id, r.expires_at, r.used_at, s.app_id, s.user_key, s.device_id, s.revoked_at \
             FROM refresh_tokens r JOIN auth_sessions s ON s.id = r.session_id WHERE r.hash = $1",
        )
        .bind(hash)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(row) = row else { return Ok(RefreshUse::Unknown) };
        let session_id: String = row.try_get("session_id")?;
        let user_key = UserKey(row.try_get("user_key")?);
        let revoked_at: Option<i64> = row.try_get("revoked_at")?;
        let used_at: Option<i64> = row.try_get("used_at")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        if revoked_at.is_some() {
            return Ok(RefreshUse::Revoked);
        }
        if used_at.is_some() {
            sqlx::query("UPDATE auth_sessions SET revoked_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&session_id)
                .execute(&mut **tx)
                .await?;
            tx.commit().await?;
            return Ok(RefreshUse::Reused { session_id, user_key });
        }
        if expires_at <= now {
            return Ok(RefreshUse::Expired);
        }
        sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE hash = $2")
            .bind(now)
            .bind(hash)
            .execute(&mut **tx)
            .await?;
        sqlx::query("INSERT INTO refresh_tokens (hash, session_id, expires_at) VALUES ($1, $2, $3)")
            .bind(next_hash)
            .bind(&session_id)
            .bind(next_expires_at)
            .execute(&mut **tx)
            .await?;
        let app_id: String = row.try_get("app_id")?;
        let device_id: Option<String> = row.try_get("device_id")?;
        tx.commit().await?;
        Ok(RefreshUse::Valid { session_id, app_id, user_key, device_id })
    }

    /// The app a device session belongs to.
    pub async fn session_app(&self, session_id: &str) -> Result<Option<AppId>, sqlx::Error> {
        let app: Option<String> = sqlx::query_scalar("SELECT app_id FROM auth_sessions WHERE id = $1")
            .bind(session_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(app.and_then(|a| AppId::parse(a).ok()))
    }

    pub async fn revoke_session(&self, app: &AppId, session_id: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE auth_sessions SET revoked_at = $1 WHERE app_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(crate::domain::now_millis())
        .bind(app.as_str())
        .bind(session_id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The user behind an access token and whether its device session still stands.
    pub async fn token_subject(
        &self,
        app: &AppId,
        key: UserKey,
        session_id: Option<&str>,
    ) -> Result<Option<(UserRecord, bool)>, sqlx::Error> {
        let started = Instant::now();
        let Some(user) = self.user_by_key(app, key).await? else {
            return Ok(None);
        };
        let session_ok = match session_id {
            None => true,
            Some(sid) => {
                let mut conn = self.read().await?;
                let revoked: Result<Option<Option<i64>>, _> =
                    sqlx::query_scalar("SELECT revoked_at FROM auth_sessions WHERE id = $1 AND user_key = $2")
                        .bind(sid)
                        .bind(key.0)
                        .fetch_optional(&mut *conn)
                        .await;
                let revoked = conn.finish(revoked)?;
                matches!(revoked, Some(None))
            }
        };
        observe("token_subject", started);
        Ok(Some((user, session_ok)))
    }
}

/// Fields the server API may set when importing a user; absent ones stay as they are.
#[derive(Debug, Default)]
pub struct ImportUser<'a> {
    pub first_name: Option<&'a Name>,
    pub last_name: Option<&'a Name>,
    pub nickname: Option<&'a Name>,
    pub avatar_url: Option<&'a AvatarUrl>,
    pub email: Option<&'a Email>,
    pub kind: Option<UserKind>,
}

impl Store {
    /// Creates the user with this public id, or updates the given fields. Returns the user and
    /// whether it was created.
    pub async fn upsert_user(
        &self,
        app: &AppId,
        id: &UserId,
        fields: &ImportUser<'_>,
        hooks: &super::outbox::Hooks,
        via: &str,
    ) -> Result<(UserRecord, bool), UserWriteError> {
        if self.user_by_id(app, id).await?.is_none() {
            let first = fields.first_name.cloned().unwrap_or_else(|| Name::from(id));
            let last = fields.last_name.cloned().unwrap_or_else(|| Name::from(id));
            match self
                .insert_user(NewUser {
                    app,
                    id,
                    email: fields.email,
                    password_hash: None,
                    first_name: &first,
                    last_name: &last,
                    kind: fields.kind.unwrap_or(UserKind::User),
                    hooks,
                    via,
                })
                .await
            {
                Ok(user) if fields.nickname.is_none() && fields.avatar_url.is_none() => return Ok((user, true)),
                Ok(user) => {
                    let patch = ProfilePatch {
                        nickname: fields.nickname,
                        avatar_url: fields.avatar_url,
                        ..ProfilePatch::default()
                    };
                    let updated = self.update_profile(app, user.key, &patch).await?.unwrap_or(user);
                    return Ok((updated, true));
                }
                // Created concurrently by another request: fall through to the update.
                Err(UserWriteError::IdTaken) => {}
                Err(e) => return Err(e),
            }
        }
        let row = sqlx::query(&format!(
            "UPDATE users SET first_name = COALESCE($1, first_name), last_name = COALESCE($2, last_name), \
             nickname = COALESCE($3, nickname), avatar_url = COALESCE($4, avatar_url), email = COALESCE($5, email), \
             kind = COALESCE($6, kind) WHERE app_id = $7 AND public_id = $8 RETURNING {USER_COLUMNS}"
        ))
        .bind(fields.first_name.map(|n| n.as_str().to_string()))
        .bind(fields.last_name.map(|n| n.as_str().to_string()))
        .bind(fields.nickname.map(|n| n.as_str().to_string()))
        .bind(fields.avatar_url.map(|n| n.as_str().to_string()))
        .bind(fields.email.map(|e| e.as_str().to_string()))
        .bind(fields.kind.map(|k| k.as_str().to_string()))
        .bind(app.as_str())
        .bind(id.as_str())
        .fetch_one(self.pool())
        .await
        .map_err(classify_unique)?;
        Ok((row_to_user(&row)?, false))
    }

    /// Gives a user a new public id; history, groups and read state follow the internal key.
    pub async fn change_user_id(&self, app: &AppId, key: UserKey, new_id: &UserId) -> Result<(), UserWriteError> {
        sqlx::query("UPDATE users SET public_id = $1 WHERE app_id = $2 AND user_key = $3")
            .bind(new_id.as_str())
            .bind(app.as_str())
            .bind(key.0)
            .execute(self.pool())
            .await
            .map_err(classify_unique)?;
        self.keys.forget(app, key);
        Ok(())
    }

    /// Invalidates every token issued so far: access tokens by version, app-signed ones by time.
    /// Bans a user until `until` (unix ms; [`BANNED_UNTIL_LIFTED`] for no end), replacing any ban.
    pub async fn ban_user(
        &self,
        app: &AppId,
        key: UserKey,
        until: i64,
        reason: Option<&str>,
        audit: &super::audit::NewAudit<'_>,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin_write().await?;
        super::audit::record(&mut tx, app, audit).await?;
        sqlx::query("UPDATE users SET banned_until = $1, ban_reason = $2 WHERE app_id = $3 AND user_key = $4")
            .bind(until)
            .bind(reason)
            .bind(app.as_str())
            .bind(key.0)
            .execute(&mut **tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Lifts a user's ban; false when none was in force.
    pub async fn lift_ban(
        &self,
        app: &AppId,
        key: UserKey,
        audit: &super::audit::NewAudit<'_>,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        let lifted = sqlx::query(
            "UPDATE users SET banned_until = NULL, ban_reason = NULL \
             WHERE app_id = $1 AND user_key = $2 AND banned_until > $3",
        )
        .bind(app.as_str())
        .bind(key.0)
        .bind(crate::domain::now_millis())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if lifted > 0 {
            super::audit::record(&mut tx, app, audit).await?;
        }
        tx.commit().await?;
        Ok(lifted > 0)
    }

    /// The app's users banned at `now`, soonest end first (bans without an end last).
    pub async fn banned_users(&self, app: &AppId, now: i64, limit: i64) -> Result<Vec<UserRecord>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE app_id = $1 AND banned_until > $2 ORDER BY banned_until, public_id LIMIT $3"
        ))
        .bind(app.as_str())
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(row_to_user).collect()
    }

    pub async fn revoke_user_tokens(&self, app: &AppId, key: UserKey) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE users SET token_version = token_version + 1, tokens_revoked_at = $1 WHERE app_id = $2 AND user_key = $3",
        )
        .bind(crate::domain::now_millis())
        .bind(app.as_str())
        .bind(key.0)
        .execute(self.pool())
        .await?;
        sqlx::query(
            "UPDATE auth_sessions SET revoked_at = $1 WHERE app_id = $2 AND user_key = $3 AND revoked_at IS NULL",
        )
        .bind(crate::domain::now_millis())
        .bind(app.as_str())
        .bind(key.0)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

/// Users' keys by public id per app, each entry trusted for `APP_CACHE_TTL`.
#[derive(Default)]
pub(super) struct KeyCache {
    by_app: std::sync::RwLock<HashMap<String, KeysOfApp>>,
    /// Renames. Without it a lookup under way when a user was renamed put the old id back after
    /// the rename forgot it (1 and 4 of 1,000 renames under four busy readers, in two of four runs).
    changes: super::Changes,
}

/// Public id -> (when it was read, key).
type KeysOfApp = HashMap<String, (Instant, UserKey)>;

/// Entries one app's map may hold before expired ones are swept (and, if all are fresh, the
/// map is started over): a bound on memory whatever the number of users.
const KEY_CACHE_MAX: usize = 65_536;

impl KeyCache {
    fn get(&self, app: &AppId, id: &UserId) -> Option<UserKey> {
        let cache = self.by_app.read().ok()?;
        let (at, key) = cache.get(app.as_str())?.get(id.as_str())?;
        (at.elapsed() < super::APP_CACHE_TTL).then_some(*key)
    }

    /// Caches what a read that began at `seen` found, unless a rename came since.
    fn put(&self, app: &AppId, id: &UserId, key: UserKey, seen: super::Seen) {
        let Ok(mut cache) = self.by_app.write() else { return };
        // Checked under the lock: a rename counted after this forgets the entry once we let go.
        if !self.changes.none_since(seen) {
            return;
        }
        let entries = cache.entry(app.as_str().to_string()).or_default();
        if entries.len() >= KEY_CACHE_MAX {
            entries.retain(|_, (at, _)| at.elapsed() < super::APP_CACHE_TTL);
            if entries.len() >= KEY_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(id.as_str().to_string(), (Instant::now(), key));
    }

    fn forget(&self, app: &AppId, key: UserKey) {
        self.changes.count();
        if let Ok(mut cache) = self.by_app.write()
            && let Some(entries) = cache.get_mut(app.as_str())
        {
            entries.retain(|_, (_, k)| *k != key);
        }
    }
}
