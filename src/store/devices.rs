//! Devices users register for push: an FCM or APNs token, or a Web Push subscription.

use sqlx::{Row, any::AnyRow};

use super::Store;
use crate::domain::{AppId, UserKey};

/// Where a push goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Webpush,
    Fcm,
    Apns,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Webpush => "webpush",
            Platform::Fcm => "fcm",
            Platform::Apns => "apns",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "webpush" => Some(Platform::Webpush),
            "fcm" => Some(Platform::Fcm),
            "apns" => Some(Platform::Apns),
            _ => None,
        }
    }
}

/// A Web Push subscription's keys (base64url, as a browser's `PushSubscription` gives them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebPushKeys {
    pub p256dh: String,
    pub auth: String,
}

/// A device as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub app_id: String,
    pub user_key: UserKey,
    pub platform: Platform,
    /// The FCM or APNs token, or the Web Push endpoint.
    pub token: String,
    pub keys: Option<WebPushKeys>,
    pub app_version: Option<String>,
    pub session_id: Option<String>,
    pub created_at: i64,
}

/// What a registration stores (already validated by `push::devices`).
#[derive(Debug, Clone)]
pub struct NewDevice<'a> {
    pub platform: Platform,
    pub token: &'a str,
    pub keys: Option<&'a WebPushKeys>,
    pub app_version: Option<&'a str>,
    pub session_id: Option<&'a str>,
}

const COLUMNS: &str = "id, app_id, user_key, platform, token, p256dh, auth, app_version, session_id, created_at";

fn device(r: &AnyRow) -> Result<Device, sqlx::Error> {
    let platform: String = r.try_get("platform")?;
    let platform = Platform::parse(&platform)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown push platform {platform:?}").into()))?;
    let keys = match (r.try_get::<Option<String>, _>("p256dh")?, r.try_get::<Option<String>, _>("auth")?) {
        (Some(p256dh), Some(auth)) => Some(WebPushKeys { p256dh, auth }),
        _ => None,
    };
    Ok(Device {
        id: r.try_get("id")?,
        app_id: r.try_get("app_id")?,
        user_key: UserKey(r.try_get("user_key")?),
        platform,
        token: r.try_get("token")?,
        keys,
        app_version: r.try_get("app_version")?,
        session_id: r.try_get("session_id")?,
        created_at: r.try_get("created_at")?,
    })
}

impl Store {
    /// Registers a device for the user. A token already registered (by this user or, after a
    /// sign-out and another sign-in on the same phone, by someone else) moves to this user and
    /// session and keeps its id: a phone has one token, and its pushes follow whoever is signed in.
    /// The user keeps their `keep` most recently registered devices; older ones are removed in
    /// the same transaction (a client registering endlessly cannot multiply every push).
    pub async fn register_device(
        &self,
        app: &AppId,
        user: UserKey,
        new: &NewDevice<'_>,
        keep: usize,
    ) -> Result<Device, sqlx::Error> {
        let now = crate::domain::now_millis();
        let id = format!("dev_{}", uuid::Uuid::now_v7().simple());
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO devices (id, app_id, user_key, platform, token, p256dh, auth, app_version, session_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (app_id, platform, token) DO UPDATE SET user_key = $3, p256dh = $6, auth = $7, \
             app_version = $8, session_id = $9, created_at = $10 RETURNING {COLUMNS}"
        ))
        .bind(&id)
        .bind(app.as_str())
        .bind(user.0)
        .bind(new.platform.as_str())
        .bind(new.token)
        .bind(new.keys.map(|k| k.p256dh.as_str()))
        .bind(new.keys.map(|k| k.auth.as_str()))
        .bind(new.app_version)
        .bind(new.session_id)
        .bind(now)
        .fetch_one(&mut **tx)
        .await?;
        sqlx::query(
            "DELETE FROM devices WHERE app_id = $1 AND user_key = $2 AND id NOT IN (SELECT id FROM devices \
             WHERE app_id = $1 AND user_key = $2 ORDER BY created_at DESC, id DESC LIMIT $3)",
        )
        .bind(app.as_str())
        .bind(user.0)
        .bind(keep.max(1) as i64)
        .execute(&mut **tx)
        .await?;
        tx.commit().await?;
        device(&row)
    }

    /// The user's devices, oldest first.
    pub async fn devices(&self, app: &AppId, user: UserKey) -> Result<Vec<Device>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM devices WHERE app_id = $1 AND user_key = $2 ORDER BY created_at, id"
        ))
        .bind(app.as_str())
        .bind(user.0)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(device).collect()
    }

    /// The devices by these ids that still exist, in one statement.
    pub async fn devices_by_id(&self, ids: &[&str]) -> Result<Vec<Device>, sqlx::Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = super::sql::Sql::new(self.dialect(), format!("SELECT {COLUMNS} FROM devices WHERE id IN ("));
        sql.push_list(ids.iter().copied()).push(")");
        let rows = sql.build()?.fetch_all(self.pool()).await?;
        rows.iter().map(device).collect()
    }

    /// Removes one of the user's devices; false when they have none by that id.
    pub async fn remove_device(&self, app: &AppId, user: UserKey, id: &str) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM devices WHERE app_id = $1 AND user_key = $2 AND id = $3")
            .bind(app.as_str())
            .bind(user.0)
            .bind(id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(done > 0)
    }

    /// Removes the devices registered under a session (it ended: signed out or revoked).
    pub async fn remove_session_devices(&self, app: &AppId, session_id: &str) -> Result<u64, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM devices WHERE app_id = $1 AND session_id = $2")
            .bind(app.as_str())
            .bind(session_id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(done)
    }

    /// Removes all of a user's devices (their tokens were revoked: signed out everywhere).
    pub async fn remove_user_devices(&self, app: &AppId, user: UserKey) -> Result<u64, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM devices WHERE app_id = $1 AND user_key = $2")
            .bind(app.as_str())
            .bind(user.0)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(done)
    }

    /// Removes a device its provider called gone (unregistered, expired subscription), unless it
    /// was registered again since the push that learned it (`registered_at` changed).
    pub async fn remove_gone_device(&self, id: &str, registered_at: i64) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM devices WHERE id = $1 AND created_at = $2")
            .bind(id)
            .bind(registered_at)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(done > 0)
    }
}
