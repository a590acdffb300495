//! Authentication primitives: password hashing and access tokens, and the identity they prove.

pub mod app_tokens;
pub mod password;
pub mod server_sig;
pub mod tokens;
pub mod usersig;

use crate::{
    domain::{AppId, UserId, UserKey, UserKind},
    error::{ApiError, ApiResult, ErrorCode},
    store::users::UserRecord,
};

/// Refuses a user the app has banned: 403 `banned`, saying until when and why. Every way in
/// (login, refresh, a token of ours or the app's, a connect) asks this of the user row it read
/// anyway, so a ban holds from its commit on every node and ends by itself at its time.
pub fn refuse_banned(user: &UserRecord) -> ApiResult<()> {
    let Some(ban) = user.ban_at(crate::domain::now_millis()) else { return Ok(()) };
    let until = match ban.until {
        Some(ms) => format!(" until {ms} (unix ms)"),
        None => String::new(),
    };
    let reason = match &ban.reason {
        Some(r) => format!(": {r}"),
        None => String::new(),
    };
    Err(ApiError::new(ErrorCode::Banned, format!("banned{until}{reason}")))
}

/// Who is on the other end of a request or socket, established once per request/connection.
#[derive(Debug, Clone)]
pub struct Identity {
    pub app: AppId,
    pub user: UserKey,
    /// The public id when the identity was established.
    pub id: UserId,
    pub kind: UserKind,
    /// The device session the token belongs to (hosted accounts), for logout and revocation.
    pub session_id: Option<String>,
    pub device_id: Option<String>,
}

/// Hex SHA-256 of an opaque token: what the store keeps instead of the token.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// A fresh opaque refresh token.
pub fn new_refresh_token() -> String {
    crate::domain::random_id("rt_", 32)
}
