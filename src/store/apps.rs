//! Apps (tenants) and their settings.

use std::{collections::HashMap, time::Instant};

use sqlx::Row;

use super::{Store, is_unique_violation, observe};
use crate::{config::AppSettings, domain::AppId};

/// Apps by Tencent SDKAppID, with when the map was read.
pub(super) type SdkAppIds = std::sync::RwLock<Option<(Instant, HashMap<u64, AppId>)>>;

#[derive(Debug, Clone)]
pub struct AppRecord {
    pub id: AppId,
    pub api_key: String,
    /// The server-API secret; shown once at creation, never logged.
    pub api_secret: crate::config::Secret,
    pub settings: AppSettings,
    pub created_at: i64,
}

/// The app id that exists from the first start.
pub const DEFAULT_APP: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("app {0} already exists")]
    Exists(String),
    #[error("app {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("stored settings of app {0} are unreadable: {1}")]
    Corrupt(String, serde_json::Error),
}

fn row_to_app(row: &sqlx::any::AnyRow) -> Result<AppRecord, AppError> {
    let id: String = row.try_get("id")?;
    let settings: String = row.try_get("settings")?;
    let settings = serde_json::from_str(&settings).map_err(|e| AppError::Corrupt(id.clone(), e))?;
    Ok(AppRecord {
        id: AppId::parse(id.clone())
            .map_err(|e| AppError::Corrupt(id, serde_json::Error::io(std::io::Error::other(e))))?,
        api_key: row.try_get("api_key")?,
        api_secret: crate::config::Secret::new(row.try_get::<String, _>("api_secret")?),
        settings,
        created_at: row.try_get("created_at")?,
    })
}

fn settings_json(settings: &AppSettings) -> String {
    serde_json::to_string(settings).unwrap_or_else(|_| "{}".into())
}

impl Store {
    pub async fn create_app(&self, id: &AppId, settings: &AppSettings) -> Result<AppRecord, AppError> {
        let started = Instant::now();
        let record = AppRecord {
            id: id.clone(),
            api_key: crate::domain::random_id("ak_", 12),
            api_secret: crate::config::Secret::new(crate::domain::random_id("", 32)),
            settings: settings.clone(),
            created_at: crate::domain::now_millis(),
        };
        let result =
            sqlx::query("INSERT INTO apps (id, api_key, api_secret, settings, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(id.as_str())
                .bind(&record.api_key)
                .bind(record.api_secret.expose())
                .bind(settings_json(settings))
                .bind(record.created_at)
                .execute(self.pool())
                .await;
        observe("app_create", started);
        match result {
            Ok(_) => Ok(record),
            Err(e) if is_unique_violation(&e) => Err(AppError::Exists(id.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the app if missing, otherwise replaces its settings (used for `default`).
    pub async fn ensure_app(&self, id: &AppId, settings: &AppSettings) -> Result<AppRecord, AppError> {
        match self.create_app(id, settings).await {
            Ok(app) => Ok(app),
            Err(AppError::Exists(_)) => {
                self.set_app_settings(id, settings).await?;
                self.app(id).await?.ok_or_else(|| AppError::NotFound(id.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    pub async fn app(&self, id: &AppId) -> Result<Option<AppRecord>, AppError> {
        if let Ok(cache) = self.apps.read()
            && let Some((at, record)) = cache.get(id.as_str())
            && at.elapsed() < super::APP_CACHE_TTL
        {
            return Ok(Some(record.clone()));
        }
        let started = Instant::now();
        let seen = self.app_changes.seen();
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT id, api_key, api_secret, settings, created_at FROM apps WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut *conn)
            .await;
        let row = conn.finish(row)?;
        observe("app_get", started);
        let record = row.as_ref().map(row_to_app).transpose()?;
        if let (Some(r), Ok(mut cache)) = (&record, self.apps.write())
            && self.app_changes.none_since(seen)
        {
            cache.insert(id.as_str().to_string(), (Instant::now(), r.clone()));
        }
        Ok(record)
    }

    fn forget_app(&self, id: &AppId) {
        // First, so that a read already under way finds it changed and caches nothing.
        self.app_changes.count();
        if let Ok(mut cache) = self.apps.write() {
            cache.remove(id.as_str());
        }
        // Its SDKAppID may have changed too.
        if let Ok(mut slot) = self.sdkappids.write() {
            *slot = None;
        }
    }

    /// The app that accepts UserSigs of this Tencent SDKAppID (with a key set), if any.
    pub async fn app_by_sdkappid(&self, sdkappid: u64) -> Result<Option<AppRecord>, AppError> {
        let cached = match self.sdkappids.read() {
            Ok(map) => map
                .as_ref()
                .filter(|(at, _)| at.elapsed() < super::APP_CACHE_TTL)
                .map(|(_, m)| m.get(&sdkappid).cloned()),
            Err(_) => None,
        };
        let id = match cached {
            Some(id) => id,
            None => {
                let seen = self.app_changes.seen();
                let map: HashMap<u64, AppId> = self
                    .apps()
                    .await?
                    .into_iter()
                    .filter(|a| a.settings.tencent_sdkappid != 0 && !a.settings.tencent_key.is_empty())
                    .map(|a| (a.settings.tencent_sdkappid, a.id))
                    .collect();
                let id = map.get(&sdkappid).cloned();
                if let Ok(mut slot) = self.sdkappids.write()
                    && self.app_changes.none_since(seen)
                {
                    *slot = Some((Instant::now(), map));
                }
                id
            }
        };
        match id {
            Some(id) => self.app(&id).await,
            None => Ok(None),
        }
    }

    pub async fn apps(&self) -> Result<Vec<AppRecord>, AppError> {
        let rows = sqlx::query("SELECT id, api_key, api_secret, settings, created_at FROM apps ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(row_to_app).collect()
    }

    pub async fn set_app_settings(&self, id: &AppId, settings: &AppSettings) -> Result<(), AppError> {
        self.forget_app(id);
        let done = sqlx::query("UPDATE apps SET settings = $1 WHERE id = $2")
            .bind(settings_json(settings))
            .bind(id.as_str())
            .execute(self.pool())
            .await?;
        // Again after the write: a read between the first forget and the update may have
        // cached the old settings.
        self.forget_app(id);
        if done.rows_affected() == 0 {
            return Err(AppError::NotFound(id.to_string()));
        }
        Ok(())
    }

    /// Replaces the server-API secret; the old one stops working at once.
    pub async fn rotate_app_secret(&self, id: &AppId) -> Result<crate::config::Secret, AppError> {
        self.forget_app(id);
        let secret = crate::config::Secret::new(crate::domain::random_id("", 32));
        let done = sqlx::query("UPDATE apps SET api_secret = $1 WHERE id = $2")
            .bind(secret.expose())
            .bind(id.as_str())
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(AppError::NotFound(id.to_string()));
        }
        Ok(secret)
    }
}

impl Store {
    /// The app a server-API key belongs to.
    pub async fn app_by_api_key(&self, api_key: &str) -> Result<Option<AppRecord>, AppError> {
        let started = Instant::now();
        let row = sqlx::query("SELECT id, api_key, api_secret, settings, created_at FROM apps WHERE api_key = $1")
            .bind(api_key)
            .fetch_optional(self.pool())
            .await?;
        observe("app_by_key", started);
        row.as_ref().map(row_to_app).transpose()
    }

    /// Accepts a server-API nonce once per app; false when it was seen before (a replay). The
    /// row outlives the timestamp window, after which the timestamp check refuses the request.
    pub async fn use_nonce(&self, app: &AppId, nonce: &str, expires_at: i64) -> Result<bool, sqlx::Error> {
        let started = Instant::now();
        let inserted = sqlx::query(
            "INSERT INTO server_nonces (app_id, nonce, expires_at) VALUES ($1, $2, $3) ON CONFLICT (app_id, nonce) DO NOTHING",
        )
        .bind(app.as_str())
        .bind(nonce)
        .bind(expires_at)
        .execute(self.pool())
        .await?
        .rows_affected();
        observe("nonce_use", started);
        Ok(inserted == 1)
    }

    /// Forgets nonces whose window has passed.
    pub async fn purge_nonces(&self, now: i64) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query("DELETE FROM server_nonces WHERE expires_at < $1")
            .bind(now)
            .execute(self.pool())
            .await?
            .rows_affected())
    }
}
