//! User tokens the app signs itself (Tencent UserSig's independent mode, Diuit's RSA tokens).
//!
//! `iss` is the app id and `sub` the user's public id; the app signs with its `user_sig_secret`
//! (HS256) or a private key whose public half is registered by `kid` (RS256, ES256, EdDSA). The
//! algorithm decides the key and the key decides the algorithm, so an RSA public key can never be
//! used as an HMAC secret. `exp` and `iat` are required, the lifetime is capped per app, and users
//! are created on first sight.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use super::{
    Identity,
    tokens::{LEEWAY_SECS, peek_issuer},
};
use crate::{
    domain::{AppId, UserId},
    error::{ApiError, ApiResult, ErrorCode},
    store::{Store, apps::AppRecord, outbox::Hooks, users::ImportUser},
};

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    iat: i64,
}

fn invalid(why: &'static str) -> ApiError {
    ApiError::new(ErrorCode::InvalidToken, why)
}

pub async fn verify(store: &Store, token: &str) -> ApiResult<Identity> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("token is malformed"))?;
    let iss = peek_issuer(token).ok_or_else(|| invalid("token has no issuer"))?;
    let app_id = AppId::parse(iss).map_err(|_| invalid("token issuer is not an app"))?;
    let app =
        store.app(&app_id).await.map_err(ApiError::caused_by)?.ok_or_else(|| invalid("token issuer is not an app"))?;
    let settings = &app.settings;
    let key = match header.alg {
        Algorithm::HS256 if !settings.user_sig_secret.is_empty() => {
            DecodingKey::from_secret(settings.user_sig_secret.expose().as_bytes())
        }
        Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA => {
            let kid = header.kid.as_deref().ok_or_else(|| invalid("token names no key (kid)"))?;
            let pem = settings.user_sig_keys.get(kid).ok_or_else(|| invalid("token signed by an unknown key"))?;
            let parsed = match header.alg {
                Algorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()),
                Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
                _ => DecodingKey::from_ed_pem(pem.as_bytes()),
            };
            // A key of another type under this kid means the algorithm does not match the key.
            parsed.map_err(|_| invalid("token algorithm does not match its key"))?
        }
        _ => return Err(invalid("token algorithm not accepted")),
    };
    let mut validation = Validation::new(header.alg);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_issuer(&[app.id.as_str()]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => ApiError::new(ErrorCode::TokenExpired, "token has expired"),
            ErrorKind::ImmatureSignature => invalid("token is not valid yet"),
            ErrorKind::InvalidIssuer => invalid("token issuer not accepted"),
            ErrorKind::InvalidSignature => invalid("token signature is invalid"),
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => {
                invalid("token algorithm does not match its key")
            }
            _ => invalid("token is invalid"),
        })?
        .claims;
    let now = crate::domain::now_millis() / 1000;
    if claims.iat > now + LEEWAY_SECS as i64 {
        return Err(invalid("token issued in the future"));
    }
    if claims.exp - claims.iat > settings.max_user_token_ttl as i64 {
        return Err(invalid("token lifetime exceeds the app's max_user_token_ttl"));
    }
    let id = UserId::parse(claims.sub).map_err(|_| invalid("token subject is not a valid user id"))?;
    signed_user(store, app, id, claims.iat, "token").await
}

/// The user a token the app signed names (created on first sight, `via` telling how in the
/// `user.registered` event), unless banned or their tokens were revoked after `issued_at` (s).
pub(super) async fn signed_user(
    store: &Store,
    app: AppRecord,
    id: UserId,
    issued_at: i64,
    via: &str,
) -> ApiResult<Identity> {
    let user = match store.user_by_id(&app.id, &id).await? {
        Some(user) => user,
        None => {
            store
                .upsert_user(&app.id, &id, &ImportUser::default(), &Hooks::of(&app.settings), via)
                .await
                .map_err(|e| ApiError::internal(format_args!("provisioning {id}: {e}")))?
                .0
        }
    };
    super::refuse_banned(&user)?;
    if user.tokens_revoked_at.is_some_and(|revoked| issued_at * 1000 < revoked) {
        return Err(ApiError::new(ErrorCode::TokenRevoked, "token has been revoked"));
    }
    Ok(Identity { app: app.id, user: user.key, id, kind: user.kind, session_id: None, device_id: None })
}
