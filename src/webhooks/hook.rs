//! The before-send hook: a synchronous call to the app before a message is stored.
//!
//! Natter POSTs `{app, sender, recipient|group, content, kind?, meta?, client_msg_id}` (signed like
//! a webhook, `webhook-id` being `hook_<uuid>`); the app answers `{"action":"allow"}`,
//! `{"action":"reject","reason":…}` or `{"action":"modify","content":…}`. A timeout, an error or an
//! unreadable answer leaves the decision to the app's `before_send_policy`. With
//! `webhook_format = "tencent"` the call is Tencent's `C2C.`/`Group.CallbackBeforeSendMsg`
//! instead (`webhooks::tencent`).

use std::time::Duration;

use serde::Deserialize;

pub use super::exchange::{HookRequest, Verdict};
use super::{signature, target::Clients};
use crate::config::{AppSettings, WebhookFormat};

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
    let (client, mut url) =
        clients.for_url(&settings.before_send_url, settings.allow_private_targets).map_err(|e| e.to_string())?;
    let tencent = settings.webhook_format == WebhookFormat::Tencent;
    let body = if tencent {
        let call = super::tencent::before_send(request, &settings.tencent_admin);
        super::tencent::address(&mut url, settings, call.command);
        call.body.to_string()
    } else {
        serde_json::to_string(request).map_err(|e| e.to_string())?
    };
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
        if tencent {
            return super::tencent::verdict(&bytes);
        }
        let answer =
            serde_json::from_slice::<Answer>(&bytes).map_err(|e| format!("hook answer not understood: {e}"))?;
        Ok(match answer {
            Answer::Allow => Verdict::Allow,
            Answer::Reject { reason } => Verdict::Reject(reason.unwrap_or_else(|| "rejected by the app".into())),
            Answer::Modify { content } => Verdict::Modify { content, meta: None },
        })
    };
    let started = std::time::Instant::now();
    let verdict = tokio::time::timeout(timeout, call).await.map_err(|_| "hook timed out".to_string())?;
    metrics::histogram!("natter_hook_duration_seconds").record(started.elapsed().as_secs_f64());
    verdict
}
