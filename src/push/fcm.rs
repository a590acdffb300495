//! FCM HTTP v1: the app's service account signs a JWT (RS256), which its `token_uri` exchanges
//! for an OAuth access token (kept until shortly before it expires); pushes are POSTed to
//! `{fcm_endpoint}/v1/projects/{project_id}/messages:send` with it.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::Deserialize;
use serde_json::json;

use super::{Message, Outcome, PushError, status_outcome};

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// The fields of a service-account JSON that sending needs.
#[derive(Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    pub private_key: String,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

impl ServiceAccount {
    pub fn parse(json: &str) -> Result<Self, PushError> {
        let account: ServiceAccount = serde_json::from_str(json)
            .map_err(|e| PushError::Invalid(format!("fcm_service_account is not a service-account JSON: {e}")))?;
        jsonwebtoken::EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .map_err(|_| PushError::Invalid("fcm_service_account: private_key is not an RSA PEM key".into()))?;
        Ok(account)
    }

    /// The signed assertion exchanged for an access token (RFC 7523).
    fn assertion(&self, now_secs: i64) -> Result<String, PushError> {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(self.private_key.as_bytes())
            .map_err(|_| PushError::Invalid("fcm private_key".into()))?;
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now_secs,
            "exp": now_secs + 3600,
        });
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &key)
            .map_err(|_| PushError::Crypto("fcm assertion"))
    }
}

/// Access tokens by service account (its client email and project), shared by a node's pushes.
#[derive(Default)]
pub struct Tokens {
    cache: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl Tokens {
    fn cached(&self, account: &ServiceAccount) -> Option<String> {
        let cache = self.cache.lock().ok()?;
        let (token, until) = cache.get(&(account.client_email.clone(), account.project_id.clone()))?;
        (Instant::now() < *until).then(|| token.clone())
    }

    fn forget(&self, account: &ServiceAccount) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(&(account.client_email.clone(), account.project_id.clone()));
        }
    }

    async fn get(
        &self,
        client: &reqwest::Client,
        account: &ServiceAccount,
        timeout: Duration,
    ) -> Result<String, Outcome> {
        if let Some(token) = self.cached(account) {
            return Ok(token);
        }
        let assertion =
            account.assertion(crate::domain::now_millis() / 1000).map_err(|e| Outcome::Fail(e.to_string()))?;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        let response = client
            .post(&account.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .timeout(timeout)
            .body(form)
            .send()
            .await
            .map_err(|e| super::request_failed(&e))?;
        let (status, retry_after, text) = super::answer(response).await;
        if !(200..300).contains(&status) {
            return Err(match status_outcome(status, retry_after, &text) {
                Outcome::Fail(why) => Outcome::Fail(format!("OAuth token refused: {why}")),
                other => other,
            });
        }
        #[derive(Deserialize)]
        struct Granted {
            access_token: String,
            #[serde(default = "an_hour")]
            expires_in: u64,
        }
        fn an_hour() -> u64 {
            3600
        }
        let granted: Granted =
            serde_json::from_str(&text).map_err(|e| Outcome::Fail(format!("OAuth token answer: {e}")))?;
        // Renewed a minute early, so a token never expires in flight.
        let until = Instant::now() + Duration::from_secs(granted.expires_in.saturating_sub(60).max(1));
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(
                (account.client_email.clone(), account.project_id.clone()),
                (granted.access_token.clone(), until),
            );
        }
        Ok(granted.access_token)
    }
}

/// The request body: a notification the system shows, the notice as `data` (string values, as
/// FCM requires), collapsed per conversation, with the badge on Android and iOS.
pub fn body(token: &str, message: &Message<'_>) -> Result<serde_json::Value, serde_json::Error> {
    let notice = message.payload;
    let natter = serde_json::to_string(notice)?;
    Ok(json!({
        "message": {
            "token": token,
            "notification": { "title": notice.title, "body": notice.body },
            "data": {
                "natter": natter,
                "conversation": notice.conversation.id,
                "seq": notice.seq.to_string(),
                "badge": notice.badge.to_string(),
            },
            "android": {
                "collapse_key": message.collapse_key,
                "priority": "high",
                "ttl": format!("{}s", message.ttl_secs),
                "notification": { "tag": message.collapse_key, "notification_count": notice.badge },
            },
            "apns": {
                "headers": { "apns-collapse-id": message.collapse_key },
                "payload": { "aps": { "badge": notice.badge, "thread-id": notice.conversation.id } },
            },
        }
    }))
}

/// Sends one push. A 401 (the access token was revoked or expired early) drops the cached token
/// and is retried once with a new one.
pub async fn send(
    client: &reqwest::Client,
    endpoint: &str,
    account: &ServiceAccount,
    tokens: &Tokens,
    device_token: &str,
    message: &Message<'_>,
) -> Outcome {
    let url = format!("{}/v1/projects/{}/messages:send", endpoint.trim_end_matches('/'), account.project_id);
    let body = match body(device_token, message) {
        Ok(b) => b,
        Err(e) => return Outcome::Fail(format!("payload: {e}")),
    };
    for _ in 0..2 {
        let access = match tokens.get(client, account, message.timeout).await {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        let response = match client.post(&url).bearer_auth(access).timeout(message.timeout).json(&body).send().await {
            Ok(r) => r,
            Err(e) => return super::request_failed(&e),
        };
        let (status, retry_after, text) = super::answer(response).await;
        if status == 401 {
            tokens.forget(account);
            continue;
        }
        return outcome(status, retry_after, &text);
    }
    Outcome::Retry("FCM refused two fresh access tokens (401)".into(), None)
}

/// FCM's answer: `UNREGISTERED` (404, or 400 for some SDK versions) means the app was
/// uninstalled or the token expired, so the device is gone; `SENDER_ID_MISMATCH` means the token
/// belongs to another Firebase project, equally unusable.
fn outcome(status: u16, retry_after: Option<Duration>, text: &str) -> Outcome {
    let code = error_code(text);
    match code.as_deref() {
        Some("UNREGISTERED") | Some("SENDER_ID_MISMATCH") => {
            Outcome::Gone(format!("HTTP {status} {}", code.unwrap_or_default()))
        }
        _ if status == 404 => Outcome::Gone(format!("HTTP 404: {text}")),
        _ => status_outcome(status, retry_after, text),
    }
}

/// The `FcmError` code of an error body (`error.details[].errorCode`), else its `status`.
fn error_code(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let error = value.get("error")?;
    let detail = error
        .get("details")
        .and_then(|d| d.as_array())
        .and_then(|details| details.iter().find_map(|d| d.get("errorCode")?.as_str()));
    detail.or_else(|| error.get("status")?.as_str()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fcm_error_bodies_name_gone_tokens() {
        let unregistered = r#"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND",
            "details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#;
        assert!(matches!(outcome(404, None, unregistered), Outcome::Gone(_)));
        let quota = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED",
            "details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"QUOTA_EXCEEDED"}]}}"#;
        assert!(matches!(outcome(429, Some(Duration::from_secs(5)), quota), Outcome::Retry(_, Some(_))));
        let invalid =
            r#"{"error":{"code":400,"status":"INVALID_ARGUMENT","details":[{"errorCode":"INVALID_ARGUMENT"}]}}"#;
        assert!(matches!(outcome(400, None, invalid), Outcome::Fail(_)));
        assert!(matches!(outcome(503, None, "unavailable"), Outcome::Retry(_, None)));
    }
}
