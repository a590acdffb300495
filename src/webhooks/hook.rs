//! The before-send hook: a synchronous call to the app before a message is stored.
//!
//! Natter POSTs `{app, sender, recipient|group, content, kind?, meta?, client_msg_id}` (signed like
//! a webhook, `webhook-id` being `hook_<uuid>`); the app answers `{"action":"allow"}`,
//! `{"action":"reject","reason":…}` or `{"action":"modify","content":…}`. A timeout, an error or an
//! unreadable answer leaves the decision to the app's `before_send_policy`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{signature, target::Clients};
use crate::config::AppSettings;

#[derive(Serialize)]
pub struct HookRequest<'a> {
    pub app: &'a str,
    pub sender: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<&'a str>,
    pub content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<&'a crate::domain::Meta>,
    pub client_msg_id: &'a str,
    /// For an edit: the seq of the message being edited (`client_msg_id` is the original's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edit_of: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Reject(String),
    Modify(String),
}

#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
enum Answer {
    Allow,
    Reject {
        #[serde(default)]
        reason: Option<String>,
    },
    Modify {
        content: String,
    },
}

/// Asks the app; `Err` says why no verdict came (the policy decides then).
pub async fn ask(clients: &Clients, settings: &AppSettings, request: &HookRequest<'_>) -> Result<Verdict, String> {
    let (client, url) =
        clients.for_url(&settings.before_send_url, settings.allow_private_targets).map_err(|e| e.to_string())?;
    let body = serde_json::to_string(request).map_err(|e| e.to_string())?;
    let id = format!("hook_{}", uuid::Uuid::now_v7().simple());
    let timestamp = crate::domain::now_millis() / 1000;
    let timeout = Duration::from_millis(settings.before_send_timeout_ms);
    let call = async {
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature(settings.webhook_secret.expose(), &id, timestamp, body.as_bytes()))
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("hook request failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("hook answered HTTP {}", response.status().as_u16()));
        }
        let bytes = response.bytes().await.map_err(|e| format!("hook answer unreadable: {e}"))?;
        serde_json::from_slice::<Answer>(&bytes).map_err(|e| format!("hook answer not understood: {e}"))
    };
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(timeout, call).await.map_err(|_| "hook timed out".to_string())?;
    metrics::histogram!("natter_hook_duration_seconds").record(started.elapsed().as_secs_f64());
    Ok(match answer? {
        Answer::Allow => Verdict::Allow,
        Answer::Reject { reason } => Verdict::Reject(reason.unwrap_or_else(|| "rejected by the app".into())),
        Answer::Modify { content } => Verdict::Modify(content),
    })
}
