//! Authentication primitives: password hashing and access tokens, and the identity they prove.

pub mod app_tokens;
pub mod password;
pub mod server_sig;
pub mod tokens;

use crate::domain::{AppId, UserId, UserKey, UserKind};

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
