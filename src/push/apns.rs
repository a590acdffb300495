//! APNs, token-based: an ES256 JWT (`kid` = the key id, `iss` = the team id) signed with the
//! app's `.p8` key and reused for up to 50 minutes (Apple refuses tokens older than an hour and
//! throttles ones renewed more often than every 20 minutes), over HTTP/2 (APNs speaks nothing
//! else): `POST {apns_endpoint}/3/device/{token}`.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::json;

use super::{Message, Outcome, PushError, status_outcome};

const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);

/// An app's APNs credentials, checked.
pub struct Credentials {
    key: jsonwebtoken::EncodingKey,
    pub key_id: String,
    pub team_id: String,
    pub topic: String,
}

impl Credentials {
    pub fn parse(pem: &str, key_id: &str, team_id: &str, topic: &str) -> Result<Self, PushError> {
        let key = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes())
            .map_err(|_| PushError::Invalid("apns_key is not a P-256 private key in PEM (.p8)".into()))?;
        for (name, value) in [("apns_key_id", key_id), ("apns_team_id", team_id), ("apns_topic", topic)] {
            if value.trim().is_empty() {
                return Err(PushError::Invalid(format!("{name} is required with apns_key")));
            }
        }
        Ok(Credentials { key, key_id: key_id.into(), team_id: team_id.into(), topic: topic.into() })
    }

    fn token(&self, now_secs: i64) -> Result<String, PushError> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        jsonwebtoken::encode(&header, &json!({ "iss": self.team_id, "iat": now_secs }), &self.key)
            .map_err(|_| PushError::Crypto("apns jwt"))
    }
}

/// Provider tokens by (team, key id), shared by a node's pushes.
#[derive(Default)]
pub struct Tokens {
    cache: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl Tokens {
    fn get(&self, credentials: &Credentials) -> Result<String, PushError> {
        let id = (credentials.team_id.clone(), credentials.key_id.clone());
        if let Ok(cache) = self.cache.lock()
            && let Some((token, made)) = cache.get(&id)
            && made.elapsed() < TOKEN_LIFETIME
        {
            return Ok(token.clone());
        }
        let token = credentials.token(crate::domain::now_millis() / 1000)?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(id, (token.clone(), Instant::now()));
        }
        Ok(token)
    }

    fn forget(&self, credentials: &Credentials) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(&(credentials.team_id.clone(), credentials.key_id.clone()));
        }
    }
}

/// The notification: an alert with the badge, threaded by conversation, with the notice under
/// `natter` for the app's notification service extension.
pub fn body(message: &Message<'_>) -> serde_json::Value {
    let notice = message.payload;
    json!({
        "aps": {
            "alert": { "title": notice.title, "body": notice.body },
            "badge": notice.badge,
            "sound": "default",
            "thread-id": notice.conversation.id,
            "mutable-content": 1,
        },
        "natter": notice,
    })
}

/// Sends one push. An expired or refused provider token is made again once.
pub async fn send(
    client: &reqwest::Client,
    endpoint: &str,
    credentials: &Credentials,
    tokens: &Tokens,
    device_token: &str,
    message: &Message<'_>,
) -> Outcome {
    if device_token.is_empty() || !device_token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Outcome::Gone("not an APNs device token".into());
    }
    let url = format!("{}/3/device/{device_token}", endpoint.trim_end_matches('/'));
    let expiration = crate::domain::now_millis() / 1000 + message.ttl_secs as i64;
    let body = body(message);
    for _ in 0..2 {
        let token = match tokens.get(credentials) {
            Ok(t) => t,
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        let request = client
            .post(&url)
            .header("authorization", format!("bearer {token}"))
            .header("apns-topic", &credentials.topic)
            .header("apns-push-type", "alert")
            .header("apns-priority", "10")
            .header("apns-expiration", expiration.to_string())
            .header("apns-collapse-id", &message.collapse_key)
            .timeout(message.timeout)
            .json(&body);
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return super::request_failed(&e),
        };
        let (status, retry_after, text) = super::answer(response).await;
        let reason = reason(&text);
        if status == 403 && matches!(reason.as_deref(), Some("ExpiredProviderToken" | "InvalidProviderToken")) {
            tokens.forget(credentials);
            continue;
        }
        return outcome(status, retry_after, reason.as_deref(), &text);
    }
    Outcome::Fail("APNs refused two fresh provider tokens".into())
}

/// APNs' answer: 410 `Unregistered` (and `BadDeviceToken`, `DeviceTokenNotForTopic`: the token
/// can never work for this app) remove the device.
fn outcome(status: u16, retry_after: Option<Duration>, reason: Option<&str>, text: &str) -> Outcome {
    match (status, reason) {
        (410, _) | (400, Some("BadDeviceToken" | "DeviceTokenNotForTopic")) => {
            Outcome::Gone(format!("HTTP {status} {}", reason.unwrap_or("")))
        }
        _ => status_outcome(status, retry_after, text),
    }
}

fn reason(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value.get("reason")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apns_answers_map_to_outcomes() {
        let gone = outcome(410, None, Some("Unregistered"), r#"{"reason":"Unregistered","timestamp":1700000000000}"#);
        assert!(matches!(gone, Outcome::Gone(_)));
        assert!(matches!(outcome(400, None, Some("BadDeviceToken"), ""), Outcome::Gone(_)));
        assert!(matches!(outcome(400, None, Some("PayloadTooLarge"), ""), Outcome::Fail(_)));
        assert!(matches!(outcome(429, None, Some("TooManyRequests"), ""), Outcome::Retry(..)));
        assert!(matches!(outcome(503, None, Some("ServiceUnavailable"), ""), Outcome::Retry(..)));
        assert_eq!(outcome(200, None, None, ""), Outcome::Delivered);
    }
}
