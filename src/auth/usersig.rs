//! Tencent IM UserSig (version 2), accepted wherever a token is: an app server written for
//! Tencent's independent-account mode keeps minting UserSigs with its `tls-sig-api-v2` library
//! and its key, and its users connect to Natter with them.
//!
//! A UserSig is zlib-compressed JSON in a URL-safe base64 (`+/=` written `*-_`):
//! `TLS.ver` "2.0", `TLS.identifier` (the user), `TLS.sdkappid`, `TLS.time` and `TLS.expire`
//! (seconds), an optional `TLS.userbuf`, and `TLS.sig` = base64 HMAC-SHA256 with the app's
//! `tencent_key` over those fields' lines. The app is the one whose `tencent_sdkappid` matches;
//! the user is created on first sight, as for the tokens an app signs as JWTs.

use std::io::Read as _;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{Identity, tokens::LEEWAY_SECS};
use crate::{
    domain::UserId,
    error::{ApiError, ApiResult, ErrorCode},
    store::{Store, apps::AppRecord},
};

/// Longest UserSig accepted, in characters, and longest JSON it may inflate to: real ones are
/// about 200 and 300 bytes; the bounds keep a crafted one from costing more than that.
const MAX_SIG_CHARS: usize = 2048;
const MAX_JSON_BYTES: usize = 4096;

#[derive(Debug, Deserialize)]
struct Fields {
    #[serde(rename = "TLS.ver")]
    ver: String,
    #[serde(rename = "TLS.identifier")]
    identifier: String,
    #[serde(rename = "TLS.sdkappid")]
    sdkappid: u64,
    #[serde(rename = "TLS.time")]
    time: i64,
    #[serde(rename = "TLS.expire")]
    expire: i64,
    #[serde(rename = "TLS.userbuf", default)]
    userbuf: Option<String>,
    #[serde(rename = "TLS.sig")]
    sig: String,
}

/// Why a UserSig was refused; [`verify`] words it as Natter's token errors, the Tencent REST
/// mount as Tencent's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("token is malformed")]
    Malformed,
    #[error("UserSig version not accepted (2.0 only)")]
    Version,
    #[error("no app accepts UserSigs of this SDKAppID")]
    UnknownApp,
    #[error("token signature is invalid")]
    Signature,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token has expired")]
    Expired,
    #[error("token lifetime exceeds the app's max_user_token_ttl")]
    TooLong,
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let code = if r == Refusal::Expired { ErrorCode::TokenExpired } else { ErrorCode::InvalidToken };
        ApiError::new(code, r.to_string())
    }
}

/// A UserSig whose signature and time held: the app it belongs to and what it says.
pub struct Checked {
    pub app: AppRecord,
    pub sdkappid: u64,
    pub identifier: String,
    pub time: i64,
}

/// Whether a token is shaped like a UserSig rather than a JWT: one segment of the UserSig
/// alphabet (a JWT has three, separated by dots).
pub fn looks_like(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_SIG_CHARS
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'_'))
}

/// Decodes a UserSig's fields (nothing verified yet).
fn decode(token: &str) -> Result<Fields, Refusal> {
    let standard: String = token
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect();
    let compressed = base64::engine::general_purpose::STANDARD.decode(standard).map_err(|_| Refusal::Malformed)?;
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(compressed.as_slice())
        .take(MAX_JSON_BYTES as u64 + 1)
        .read_to_end(&mut json)
        .map_err(|_| Refusal::Malformed)?;
    if json.len() > MAX_JSON_BYTES {
        return Err(Refusal::Malformed);
    }
    let fields: Fields = serde_json::from_slice(&json).map_err(|_| Refusal::Malformed)?;
    if fields.ver != "2.0" {
        return Err(Refusal::Version);
    }
    Ok(fields)
}

/// The signature Tencent's libraries compute: HMAC-SHA256 over the fields' lines.
fn expected_sig(key: &str, f: &Fields) -> Result<Vec<u8>, ApiError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).map_err(ApiError::caused_by)?;
    mac.update(format!("TLS.identifier:{}\n", f.identifier).as_bytes());
    mac.update(format!("TLS.sdkappid:{}\n", f.sdkappid).as_bytes());
    mac.update(format!("TLS.time:{}\n", f.time).as_bytes());
    mac.update(format!("TLS.expire:{}\n", f.expire).as_bytes());
    if let Some(userbuf) = &f.userbuf {
        mac.update(format!("TLS.userbuf:{userbuf}\n").as_bytes());
    }
    Ok(mac.finalize().into_bytes().to_vec())
}

/// The app a UserSig names, by its `tencent_sdkappid`.
async fn app_of(store: &Store, sdkappid: u64) -> ApiResult<Option<AppRecord>> {
    Ok(store
        .app_by_sdkappid(sdkappid)
        .await
        .map_err(ApiError::caused_by)?
        .filter(|a| a.settings.tencent_sdkappid == sdkappid && !a.settings.tencent_key.is_empty()))
}

/// Checks a UserSig's app, signature and time. The outer error is the store failing; the inner
/// one, the UserSig refused.
pub async fn check(store: &Store, token: &str) -> ApiResult<Result<Checked, Refusal>> {
    let fields = match decode(token) {
        Ok(fields) => fields,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let Some(app) = app_of(store, fields.sdkappid).await? else { return Ok(Err(Refusal::UnknownApp)) };
    let settings = &app.settings;
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(&fields.sig) else {
        return Ok(Err(Refusal::Signature));
    };
    let expected = expected_sig(settings.tencent_key.expose(), &fields)?;
    if !bool::from(subtle::ConstantTimeEq::ct_eq(given.as_slice(), expected.as_slice())) {
        return Ok(Err(Refusal::Signature));
    }
    let now = crate::domain::now_millis() / 1000;
    if fields.expire <= 0 || fields.time > now + LEEWAY_SECS as i64 {
        return Ok(Err(Refusal::NotYetValid));
    }
    if fields.time.saturating_add(fields.expire) + (LEEWAY_SECS as i64) < now {
        return Ok(Err(Refusal::Expired));
    }
    if fields.expire as u64 > settings.max_user_token_ttl {
        return Ok(Err(Refusal::TooLong));
    }
    Ok(Ok(Checked { app, sdkappid: fields.sdkappid, identifier: fields.identifier, time: fields.time }))
}

/// Verifies a UserSig presented as a user's token; provisions the user on first sight.
pub async fn verify(store: &Store, token: &str) -> ApiResult<Identity> {
    let checked = check(store, token).await??;
    let id = UserId::parse(checked.identifier)
        .map_err(|_| ApiError::new(ErrorCode::InvalidToken, "token identifier is not a valid user id"))?;
    super::app_tokens::signed_user(store, checked.app, id, checked.time, "usersig").await
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// What `tls-sig-api-v2` produces for these fields (its algorithm, rewritten for the test).
    fn mint(key: &str, identifier: &str, sdkappid: u64, time: i64, expire: i64) -> String {
        let f = Fields {
            ver: "2.0".into(),
            identifier: identifier.into(),
            sdkappid,
            time,
            expire,
            userbuf: None,
            sig: String::new(),
        };
        let sig = base64::engine::general_purpose::STANDARD.encode(expected_sig(key, &f).unwrap());
        let json = serde_json::json!({"TLS.ver": "2.0", "TLS.identifier": identifier, "TLS.sdkappid": sdkappid,
            "TLS.expire": expire, "TLS.time": time, "TLS.sig": sig});
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(json.to_string().as_bytes()).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(z.finish().unwrap());
        b64.replace('+', "*").replace('/', "-").replace('=', "_")
    }

    #[test]
    fn a_usersig_decodes_and_its_signature_is_the_libraries() {
        let token = mint("k3y", "alice", 1400000000, 1_700_000_000, 86400);
        assert!(looks_like(&token), "{token}");
        assert!(!looks_like("a.b.c"), "a JWT is not a UserSig");
        let f = decode(&token).unwrap();
        assert_eq!((f.identifier.as_str(), f.sdkappid, f.time, f.expire), ("alice", 1400000000, 1_700_000_000, 86400));
        let given = base64::engine::general_purpose::STANDARD.decode(&f.sig).unwrap();
        assert_eq!(given, expected_sig("k3y", &f).unwrap());
        assert_ne!(given, expected_sig("other", &f).unwrap());
    }

    #[test]
    fn garbage_and_bombs_are_malformed_not_errors() {
        for bad in ["", "***", "eJwrSS0uAQAEXQHB", "not_base64!"] {
            assert!(decode(bad).is_err(), "{bad}");
        }
        // A tiny input that inflates past the bound.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![b' '; 1 << 20]).unwrap();
        let bomb = base64::engine::general_purpose::STANDARD
            .encode(z.finish().unwrap())
            .replace('+', "*")
            .replace('/', "-")
            .replace('=', "_");
        assert!(decode(&bomb).is_err());
    }
}
