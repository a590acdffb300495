//! Push notifications: waking the devices of users who are offline.
//!
//! Users register devices (`devices`: a Web Push subscription, an FCM or APNs token). The message
//! writer adds a push job per device of each offline recipient in the message's own transaction
//! (`store::push`); a conversation's burst gathers into one job per coalescing window. The
//! `dispatcher` actor of every node claims due jobs and, per the app's settings, sends them
//! straight to the device (`webpush`: RFC 8291 / 8292; `fcm`: FCM HTTP v1; `apns`: APNs over
//! HTTP/2) or hands them to the app as a `push.needed` webhook (the app sends with its own
//! provider). `notice` builds what the push says.

pub mod apns;
pub mod devices;
pub mod dispatcher;
pub mod fcm;
pub mod notice;
pub mod webpush;

use std::time::Duration;

use base64::Engine as _;
use sha2::Digest as _;

pub use notice::Notice;

/// Why a push could not even be attempted.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Invalid(String),
    #[error("cryptography failed: {0}")]
    Crypto(&'static str),
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Worth trying again (429, 5xx, timeouts, connection errors), after the provider's
    /// Retry-After when it gave one.
    Retry(String, Option<Duration>),
    /// Not worth retrying (the provider refused the request itself).
    Fail(String),
    /// The device is gone (unsubscribed, unregistered, uninstalled): remove it.
    Gone(String),
}

/// One push, ready for any provider.
pub struct Message<'a> {
    pub payload: &'a Notice,
    /// Pushes with the same key replace each other on the device (Web Push `Topic`, APNs
    /// `apns-collapse-id`, FCM `collapse_key` / `tag`): one per conversation.
    pub collapse_key: String,
    pub ttl_secs: u64,
    pub timeout: Duration,
}

/// The collapse key of a conversation: 32 characters of the URL-safe base64 alphabet (Web Push's
/// `Topic` allows no more), the same on every node.
pub fn collapse_key(app: &str, conversation: &str) -> String {
    let digest = sha2::Sha256::new().chain_update(app).chain_update([0]).chain_update(conversation).finalize();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..24])
}

/// The outcome of a provider's HTTP status, for everything but its "gone" answers.
pub(crate) fn status_outcome(status: u16, retry_after: Option<Duration>, body: &str) -> Outcome {
    let detail = || {
        let text: String = body.chars().take(300).collect();
        if text.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {text}") }
    };
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500..=599 => Outcome::Retry(detail(), retry_after),
        _ => Outcome::Fail(detail()),
    }
}

/// A provider's answer: its status, its `Retry-After`, and its body (capped).
pub(crate) async fn answer(response: reqwest::Response) -> (u16, Option<Duration>, String) {
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    (status, retry_after, read_capped(response).await)
}

/// A `Retry-After` in seconds (the HTTP-date form is rare from push services and ignored).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(3600)))
}

/// A response body, at most 16 KiB of it (providers' error bodies are small JSON).
async fn read_capped(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < 16 * 1024 {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A request that got no answer: refused targets fail, everything else is retried.
pub(crate) fn request_failed(e: &reqwest::Error) -> Outcome {
    let mut chain = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        chain.push(err.to_string());
        source = err.source();
    }
    if let Some(refusal) = chain.iter().find(|m| m.contains(crate::webhooks::target::REFUSED)) {
        return Outcome::Fail(format!("target refused: {refusal}"));
    }
    Outcome::Retry(
        if e.is_timeout() { "timeout".into() } else { format!("request failed: {}", chain.join(": ")) },
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapse_keys_fit_web_push_topics_and_differ_per_conversation() {
        let a = collapse_key("app", "dm_1_2");
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(a, collapse_key("app", "dm_1_2"));
        assert_ne!(a, collapse_key("app", "dm_1_3"));
        assert_ne!(a, collapse_key("other", "dm_1_2"));
    }

    #[test]
    fn providers_statuses_map_to_outcomes() {
        assert_eq!(status_outcome(201, None, ""), Outcome::Delivered);
        assert!(matches!(status_outcome(429, Some(Duration::from_secs(3)), ""), Outcome::Retry(_, Some(_))));
        assert!(matches!(status_outcome(503, None, "busy"), Outcome::Retry(why, None) if why == "HTTP 503: busy"));
        assert!(matches!(status_outcome(400, None, ""), Outcome::Fail(_)));
    }
}
