//! Webhooks: delivery of the outbox (see `store::outbox`) by a dispatcher actor on every node,
//! and the synchronous before-send hook.
//!
//! Requests carry Standard Webhooks headers: `webhook-id` (the event id, stable across retries),
//! `webhook-timestamp` (unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">`. 2xx is done; 410 disables the endpoint; other 4xx (but 408 and 429)
//! fail at once; everything else is retried on the configured schedule with ±20 % jitter, then
//! dead-lettered. With `webhook_format = "tencent"` the same deliveries take Tencent IM's
//! callback shape (`tencent`).

pub mod dispatcher;
pub mod exchange;
pub mod hook;
pub mod target;
pub mod tencent;

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{AppSettings, WebhookFormat, WebhooksConfig};
use target::{Clients, TargetError};

/// The signing key of a secret: `whsec_<base64>` as Standard Webhooks defines it, or the raw
/// bytes of any other string.
pub fn signing_key(secret: &str) -> Vec<u8> {
    match secret.strip_prefix("whsec_") {
        Some(b64) => {
            base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_else(|_| secret.as_bytes().to_vec())
        }
        None => secret.as_bytes().to_vec(),
    }
}

/// `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&signing_key(secret)) else { return String::new() };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Worth trying again later (timeouts, 5xx, 408, 429, connection errors).
    Retry(String),
    /// Not worth retrying (other 4xx, redirects, refused targets).
    Fail(String),
    /// 410: the app removed the endpoint.
    Gone,
    /// Not sent: the app's webhook format has no callback for this event.
    Skipped,
}

/// POSTs an event (`body`, Natter's JSON) to the app's webhook URL once, signed, in the app's
/// webhook format.
pub async fn attempt(
    clients: &Clients,
    settings: &AppSettings,
    config: &WebhooksConfig,
    event: (&str, &str),
    body: &str,
) -> Outcome {
    let (id, name) = event;
    let (client, mut url) = match clients.for_url(&settings.webhook_url, settings.allow_private_targets) {
        Ok(found) => found,
        Err(e @ (TargetError::Refused(_) | TargetError::Scheme | TargetError::Invalid(_))) => {
            return Outcome::Fail(e.to_string());
        }
    };
    let tencent_body;
    let body = match settings.webhook_format {
        WebhookFormat::Natter => body,
        WebhookFormat::Tencent => match tencent::callback(name, body, &settings.tencent_admin) {
            Some(call) => {
                tencent::address(&mut url, settings, call.command);
                tencent_body = call.body.to_string();
                &tencent_body
            }
            None => return Outcome::Skipped,
        },
    };
    let timestamp = crate::domain::now_millis() / 1000;
    let request = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature(settings.webhook_secret.expose(), id, timestamp, body.as_bytes()))
        .timeout(Duration::from_millis(config.timeout_ms))
        .body(body.to_string());
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            // The resolver's refusal arrives wrapped in connect errors; look through the chain.
            let mut chain = Vec::new();
            let mut source: Option<&dyn std::error::Error> = Some(&e);
            while let Some(err) = source {
                chain.push(err.to_string());
                source = err.source();
            }
            if let Some(refusal) = chain.iter().find(|m| m.contains(target::REFUSED)) {
                return Outcome::Fail(format!("target refused: {refusal}"));
            }
            return Outcome::Retry(if e.is_timeout() {
                "timeout".into()
            } else {
                format!("request failed: {}", chain.join(": "))
            });
        }
    };
    // Read (and drop) at most max_response_bytes of the body, so the connection can be reused.
    let mut read = 0usize;
    while read < config.max_response_bytes {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            _ => break,
        }
    }
    let status = response.status().as_u16();
    match status {
        200..=299 => Outcome::Delivered,
        410 => Outcome::Gone,
        408 | 429 | 500..=599 => Outcome::Retry(format!("HTTP {status}")),
        300..=399 => Outcome::Fail(format!("HTTP {status}: redirects are not followed")),
        _ => Outcome::Fail(format!("HTTP {status}")),
    }
}

/// The delay before retry number `attempt` (1-based), jittered ±20 %; None once exhausted.
pub fn backoff(schedule: &[u64], attempt: usize) -> Option<Duration> {
    let base = *schedule.get(attempt.checked_sub(1)?)?;
    let jitter = rand::Rng::gen_range(&mut rand::thread_rng(), 0.8..1.2);
    Some(Duration::from_millis((base as f64 * jitter) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The Standard Webhooks specification's example.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(signature(secret, id, 1614265330, body), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn backoff_grows_with_jitter_and_ends() {
        let schedule = [1000, 4000];
        let first = backoff(&schedule, 1).unwrap().as_millis();
        assert!((800..=1200).contains(&first), "{first}");
        let second = backoff(&schedule, 2).unwrap().as_millis();
        assert!((3200..=4800).contains(&second), "{second}");
        assert_eq!(backoff(&schedule, 3), None);
        assert_eq!(backoff(&schedule, 0), None);
    }
}
