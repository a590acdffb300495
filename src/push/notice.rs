//! What a push says: the conversation and seq to fetch, the badge (total unread), and as much of
//! the message as the app's `push_preview` allows. Built when the push is sent, so the badge and
//! the text are as of then (an edit shows, a recalled message says so).

use std::collections::HashMap;

use serde::Serialize;

use crate::{
    config::{AppSettings, PushPreview},
    domain::{AppId, ConversationKind, UserKey},
    store::{Store, push::PushJob},
};

/// The longest preview text, in characters.
const PREVIEW_CHARS: usize = 120;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConversationRef {
    pub id: String,
    pub kind: ConversationKind,
    /// A group's name (not with `push_preview = none`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SenderRef {
    pub id: String,
    pub name: String,
}

/// The push payload (Web Push's decrypted body, FCM's `data.natter`, APNs' `natter` key, and
/// the heart of `push.needed`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Notice {
    pub r#type: &'static str,
    pub app: String,
    pub conversation: ConversationRef,
    /// The newest message this push stands for.
    pub seq: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Who sent it (not with `push_preview = none`; absent for the app's own messages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<SenderRef>,
    /// Messages gathered into this push.
    pub messages: i64,
    /// The recipient's unread messages over all their conversations not muted.
    pub badge: i64,
    pub title: String,
    pub body: String,
}

/// Why there is nothing to push any more.
pub enum Nothing {
    /// The recipient can no longer read the conversation (left, removed, dissolved).
    NotReadable,
}

impl Notice {
    /// The notice for a job, as its recipient would see the message now; `badge` is their
    /// unread count over all conversations not muted (read for a whole claim at once: `badges`).
    pub async fn build(
        store: &Store,
        app: &AppId,
        settings: &AppSettings,
        job: &PushJob,
        badge: i64,
    ) -> Result<Result<Notice, Nothing>, sqlx::Error> {
        let membership = match store.membership(app, &job.conversation_id, job.user_key).await? {
            Some(m) if m.left_seq.is_none() && m.dissolved_at.is_none() => m,
            _ => return Ok(Err(Nothing::NotReadable)),
        };
        let message = store
            .messages_after(app, &job.conversation_id, job.user_key, job.seq - 1, job.seq, 1)
            .await?
            .into_iter()
            .next();
        let sender = match message.as_ref().and_then(|m| m.sender.as_ref()) {
            Some(_) => {
                store.user_by_key(app, job.sender_key).await?.map(|u| SenderRef { name: display_name(&u), id: u.id })
            }
            None => None,
        };
        let group_name = match membership.kind {
            ConversationKind::Group => membership.name.clone(),
            ConversationKind::Direct => None,
        };
        let text = match &message {
            None => "New message".to_string(),
            Some(m) if m.recalled => "Message recalled".to_string(),
            Some(m) if m.deleted => "Message deleted".to_string(),
            Some(m) => match m.kind.as_deref() {
                None | Some("text") => m.content.clone(),
                Some(kind) => format!("[{kind}]"),
            },
        };
        let text = if job.messages > 1 && !text.is_empty() { format!("{text} (+{})", job.messages - 1) } else { text };
        let (title, body, sender, name) = match settings.push_preview {
            PushPreview::Full | PushPreview::Sender => {
                let who = sender.as_ref().map(|s| s.name.clone());
                let what = match settings.push_preview {
                    PushPreview::Full => clip(&text),
                    _ if job.messages > 1 => format!("{} new messages", job.messages),
                    _ => "New message".to_string(),
                };
                let (title, body) = match (&group_name, who) {
                    (Some(group), Some(who)) => (group.clone(), format!("{who}: {what}")),
                    (Some(group), None) => (group.clone(), what),
                    (None, Some(who)) => (who, what),
                    (None, None) => (settings.name.clone(), what),
                };
                (title, body, sender, group_name)
            }
            PushPreview::None => (settings.name.clone(), "New message".to_string(), None, None),
        };
        Ok(Ok(Notice {
            r#type: "message",
            app: app.as_str().to_string(),
            conversation: ConversationRef { id: job.conversation_id.clone(), kind: membership.kind, name },
            seq: job.seq,
            message_id: message.map(|m| m.id),
            sender,
            messages: job.messages,
            badge,
            title,
            body,
        }))
    }
}

/// How a sender is named in a push: their nickname, else their name, else their id.
fn display_name(user: &crate::store::users::UserRecord) -> String {
    if let Some(nick) = user.nickname.as_deref().filter(|n| !n.is_empty()) {
        return nick.to_string();
    }
    let full = format!("{} {}", user.first_name, user.last_name);
    let full = full.trim();
    if full.is_empty() { user.id.clone() } else { full.to_string() }
}

/// The badges of an app's users (unread messages over their conversations not muted), in one
/// statement; users with nothing unread are left out (their badge is 0).
pub async fn badges(store: &Store, app: &AppId, users: &[UserKey]) -> Result<HashMap<UserKey, i64>, sqlx::Error> {
    Ok(store
        .unread_of_users(app, users, None)
        .await?
        .into_iter()
        .map(|(user, convs)| (user, convs.values().filter(|u| !u.muted).map(|u| u.count).sum()))
        .collect())
}

fn clip(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(PREVIEW_CHARS).collect();
    if chars.next().is_some() { format!("{head}…") } else { head }
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn previews_are_clipped_by_characters_not_bytes() {
        assert_eq!(clip("hi"), "hi");
        let long = "é".repeat(200);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), 121);
        assert!(clipped.ends_with('…'));
    }
}
