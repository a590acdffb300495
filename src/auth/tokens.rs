//! Access tokens: HS256 JWTs naming their key by `kid`, with the algorithm pinned.

use std::collections::HashMap;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult, ErrorCode};

/// Claims of an access token (design §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The app id.
    pub aud: String,
    /// The user's internal key: it survives a change of public id.
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub typ: String,
    /// Device session (hosted accounts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub did: Option<String>,
    /// The user's token version when issued; bumping it revokes every earlier token.
    pub ver: i64,
}

pub const ACCESS: &str = "access";
/// Leeway for clock skew between nodes and clients, in seconds.
pub const LEEWAY_SECS: u64 = 30;

pub struct TokenService {
    issuer: String,
    keys: std::sync::RwLock<KeySet>,
}

struct KeySet {
    /// The newest key signs; every key verifies.
    current: String,
    keys: HashMap<String, (EncodingKey, DecodingKey)>,
}

impl KeySet {
    fn new(keys: Vec<(String, Vec<u8>)>) -> anyhow::Result<Self> {
        let current = keys.last().map(|(kid, _)| kid.clone()).ok_or_else(|| anyhow::anyhow!("no signing key"))?;
        let keys = keys
            .into_iter()
            .map(|(kid, secret)| (kid, (EncodingKey::from_secret(&secret), DecodingKey::from_secret(&secret))))
            .collect();
        Ok(Self { current, keys })
    }
}

/// What to put in a new access token.
pub struct NewToken<'a> {
    pub app: &'a str,
    pub user: i64,
    pub session_id: Option<&'a str>,
    pub device_id: Option<&'a str>,
    pub version: i64,
    pub ttl_secs: u64,
}

impl TokenService {
    /// `keys` oldest first; the last one signs, all of them verify.
    pub fn new(issuer: &str, keys: Vec<(String, Vec<u8>)>) -> anyhow::Result<Self> {
        Ok(Self { issuer: issuer.to_string(), keys: std::sync::RwLock::new(KeySet::new(keys)?) })
    }

    /// Adopts the store's key list (after `natter keys rotate` on any node).
    pub fn replace_keys(&self, keys: Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
        let set = KeySet::new(keys)?;
        if let Ok(mut current) = self.keys.write() {
            *current = set;
        }
        Ok(())
    }

    pub fn signing_kid(&self) -> String {
        self.keys.read().map(|k| k.current.clone()).unwrap_or_default()
    }

    /// True when a token claims our issuer but names a key this node does not hold yet.
    pub fn names_unknown_key_of_ours(&self, token: &str) -> bool {
        let kid = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid);
        let ours = peek_issuer(token).is_some_and(|iss| iss == self.issuer);
        ours && kid.is_some_and(|kid| self.keys.read().is_ok_and(|k| !k.keys.contains_key(&kid)))
    }

    /// Signs a token; returns it with its expiry in unix milliseconds.
    pub fn issue(&self, new: &NewToken<'_>) -> ApiResult<(String, i64)> {
        let now = crate::domain::now_millis() / 1000;
        let exp = now + new.ttl_secs as i64;
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: new.app.to_string(),
            sub: new.user.to_string(),
            exp,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::now_v7().simple().to_string(),
            typ: ACCESS.to_string(),
            sid: new.session_id.map(str::to_string),
            did: new.device_id.map(str::to_string),
            ver: new.version,
        };
        let keys = self.keys.read().map_err(|_| ApiError::internal("key set poisoned"))?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(keys.current.clone());
        let (key, _) = keys.keys.get(&keys.current).ok_or_else(|| ApiError::internal("signing key missing"))?;
        let token = jsonwebtoken::encode(&header, &claims, key).map_err(ApiError::caused_by)?;
        Ok((token, exp * 1000))
    }

    /// Whether a token claims to come from this deployment (our issuer and one of our key ids);
    /// anything else is an app-signed token, verified with the app's keys.
    pub fn issued_here(&self, token: &str) -> bool {
        let ours_kid = jsonwebtoken::decode_header(token)
            .ok()
            .and_then(|h| h.kid)
            .is_some_and(|kid| self.keys.read().is_ok_and(|k| k.keys.contains_key(&kid)));
        ours_kid && peek_issuer(token).is_some_and(|iss| iss == self.issuer)
    }

    /// Checks signature, algorithm, issuer, time claims and type.
    pub fn verify(&self, token: &str) -> ApiResult<AccessClaims> {
        let invalid = |why: &'static str| ApiError::new(ErrorCode::InvalidToken, why);
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("token is malformed"))?;
        if header.alg != Algorithm::HS256 {
            return Err(invalid("token algorithm not accepted"));
        }
        let kid = header.kid.ok_or_else(|| invalid("token names no key"))?;
        let keys = self.keys.read().map_err(|_| ApiError::internal("key set poisoned"))?;
        let (_, key) = keys.keys.get(&kid).ok_or_else(|| invalid("token signed by an unknown key"))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<AccessClaims>(token, key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => ApiError::new(ErrorCode::TokenExpired, "token has expired"),
            ErrorKind::ImmatureSignature => invalid("token is not valid yet"),
            ErrorKind::InvalidIssuer => invalid("token issuer not accepted"),
            ErrorKind::InvalidSignature => invalid("token signature is invalid"),
            _ => invalid("token is invalid"),
        })?;
        let claims = data.claims;
        if claims.typ != ACCESS {
            return Err(invalid("not an access token"));
        }
        let now = crate::domain::now_millis() / 1000;
        if claims.iat > now + LEEWAY_SECS as i64 {
            return Err(invalid("token issued in the future"));
        }
        Ok(claims)
    }
}

#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    iss: Option<String>,
}

/// The `iss` of a token, read without verifying it (to find the app whose key verifies it).
pub fn peek_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Peek>(&raw).ok()?.iss
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> TokenService {
        TokenService::new("natter", vec![("k1".into(), vec![7u8; 32])]).unwrap()
    }

    fn new_token(ttl: u64) -> NewToken<'static> {
        NewToken { app: "default", user: 42, session_id: Some("s_1"), device_id: None, version: 0, ttl_secs: ttl }
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let s = service();
        let (token, exp) = s.issue(&new_token(60)).unwrap();
        let claims = s.verify(&token).unwrap();
        assert_eq!(claims.aud, "default");
        assert_eq!(claims.sub, "42");
        assert_eq!(claims.sid.as_deref(), Some("s_1"));
        assert_eq!(claims.exp * 1000, exp);
    }

    #[test]
    fn tampered_foreign_and_expired_tokens_are_refused() {
        let s = service();
        let (token, _) = s.issue(&new_token(60)).unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        parts[2] = parts[2].chars().rev().collect();
        assert_eq!(s.verify(&parts.join(".")).unwrap_err().code, ErrorCode::InvalidToken);

        let other = TokenService::new("natter", vec![("k1".into(), vec![9u8; 32])]).unwrap();
        let (foreign, _) = other.issue(&new_token(60)).unwrap();
        assert_eq!(s.verify(&foreign).unwrap_err().code, ErrorCode::InvalidToken);

        let past = AccessClaims {
            iss: "natter".into(),
            aud: "default".into(),
            sub: "42".into(),
            exp: crate::domain::now_millis() / 1000 - 120,
            iat: crate::domain::now_millis() / 1000 - 200,
            nbf: crate::domain::now_millis() / 1000 - 200,
            jti: "j".into(),
            typ: ACCESS.into(),
            sid: None,
            did: None,
            ver: 0,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let expired = jsonwebtoken::encode(&header, &past, &EncodingKey::from_secret(&[7u8; 32])).unwrap();
        assert_eq!(s.verify(&expired).unwrap_err().code, ErrorCode::TokenExpired);
        assert_eq!(s.verify("garbage").unwrap_err().code, ErrorCode::InvalidToken);
    }

    #[test]
    fn other_algorithms_and_types_are_refused() {
        let s = service();
        let (token, _) = s.issue(&new_token(60)).unwrap();
        let claims = s.verify(&token).unwrap();
        let mut header = Header::new(Algorithm::HS512);
        header.kid = Some("k1".into());
        let hs512 = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&[7u8; 32])).unwrap();
        assert_eq!(s.verify(&hs512).unwrap_err().code, ErrorCode::InvalidToken);
        let refresh = AccessClaims { typ: "refresh".into(), ..claims };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let wrong_type = jsonwebtoken::encode(&header, &refresh, &EncodingKey::from_secret(&[7u8; 32])).unwrap();
        assert_eq!(s.verify(&wrong_type).unwrap_err().code, ErrorCode::InvalidToken);
    }
}
