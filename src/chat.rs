//! Messaging: send, history, sync, read markers and typing, shared by WebSocket and REST.
//!
//! A send commits first (the store assigns the seq), then its push frame is encoded once and
//! published; every recipient on every node writes those same bytes.

use std::{collections::HashMap, time::Instant};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::{
    auth::Identity,
    bus::Origin,
    config::HookPolicy,
    domain::{
        ClientMsgId, ConversationId, ConversationKind, GroupId, Meta, UserId, UserKey, check_no_nul,
        direct_conversation_id, direct_participants,
    },
    error::{ApiError, ApiResult, ErrorCode},
    fanout::{Audience, Sent},
    inbox::ConversationView,
    node::Node,
    roles::SendRefusal,
    store::{
        conversations::{AppendError, Membership, NewMessage, SYSTEM_SENDER, StoredMessage},
        outbox::Hooks,
    },
    webhooks::hook::{self, HookRequest, Verdict},
    wire::{Encode, Object, event_frame, push_frame},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    #[serde(default)]
    pub recipient: Option<UserId>,
    #[serde(default)]
    pub group: Option<GroupId>,
    pub content: String,
    pub client_msg_id: ClientMsgId,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub meta: Option<Meta>,
    /// A seq of the same conversation the sender may read.
    #[serde(default)]
    pub reply_to: Option<i64>,
    /// Users the message mentions: members of the conversation.
    #[serde(default)]
    pub mentions: Vec<UserId>,
}

/// Users one message may mention at most.
pub const MAX_MENTIONS: usize = 50;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SendResult {
    pub message_id: String,
    pub conversation: String,
    pub seq: i64,
    pub created_at: i64,
    /// False for a resend of a known `client_msg_id` (reply code 200 instead of 201).
    #[serde(skip)]
    pub created: bool,
    /// The app's before-send hook dropped the message silently: nothing was stored or
    /// delivered (`message_id` empty, `seq` 0; reply code 202).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dropped: bool,
}

fn validate_kind(kind: &str) -> ApiResult<()> {
    let ok = !kind.is_empty()
        && kind.len() <= 32
        && kind.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok { Ok(()) } else { Err(ApiError::validation("kind: must be 1-32 characters of A-Z a-z 0-9 _ . -")) }
}

/// Where a send comes from: a client session (through the app's before-send hook), or the
/// app itself through the trusted server API (which bypasses the hook).
#[derive(Debug, Clone)]
pub enum Via {
    Client(Origin),
    Server,
}

/// The identity the app sends as (system messages have no sender).
pub fn system_identity(app: &crate::domain::AppId) -> Identity {
    Identity {
        app: app.clone(),
        user: SYSTEM_SENDER,
        id: UserId::from_trusted("system"),
        kind: crate::domain::UserKind::Service,
        session_id: None,
        device_id: None,
    }
}

pub(crate) fn check_content(content: &str, meta_len: usize, max: usize) -> ApiResult<()> {
    if content.is_empty() {
        return Err(ApiError::validation("content: must not be empty"));
    }
    check_no_nul("content", content).map_err(|e| ApiError::validation(e.0))?;
    if content.len() + meta_len > max {
        return Err(ApiError::new(ErrorCode::PayloadTooLarge, format!("content and meta exceed {max} bytes")));
    }
    Ok(())
}

pub async fn send(node: &Node, who: &Identity, req: SendRequest, via: Via) -> ApiResult<SendResult> {
    let started = Instant::now();
    let max = node.config.chat.max_content_bytes;
    let meta_len = req.meta.as_ref().map_or(0, |m| m.as_str().len());
    check_content(&req.content, meta_len, max)?;
    if let Some(kind) = &req.kind {
        validate_kind(kind)?;
    }
    let app = node.app(&who.app).await?;
    let (conversation, kind, recipient) = match (&req.recipient, &req.group) {
        (Some(recipient), None) => {
            let key = node
                .store
                .user_key_by_id(&who.app, recipient)
                .await?
                .ok_or_else(|| ApiError::new(ErrorCode::UserNotFound, format!("no user {recipient}")))?;
            if key == who.user {
                return Err(ApiError::validation("recipient: cannot send a direct message to yourself"));
            }
            (
                direct_conversation_id(who.user, key),
                ConversationKind::Direct,
                Some((key, recipient.as_str().to_string())),
            )
        }
        (None, Some(group)) => (
            ConversationId::parse(group.as_str()).map_err(|e| ApiError::validation(e.0))?,
            ConversationKind::Group,
            None,
        ),
        _ => return Err(ApiError::validation("give exactly one of recipient or group")),
    };
    let sender_id = (who.user != SYSTEM_SENDER).then(|| who.id.as_str().to_string());
    let (reply_to, mentions) = check_references(node, who, &conversation, &req).await?;
    let mut content = req.content;
    let mut meta = req.meta;
    // The app's own sends pass group mutes (as RongCloud's server API does).
    let bypass_mutes = matches!(via, Via::Server);
    let origin = match via {
        Via::Client(origin) => {
            if !app.settings.before_send_url.is_empty() {
                let request = HookRequest {
                    app: who.app.as_str(),
                    sender: sender_id.as_deref(),
                    recipient: recipient.as_ref().map(|(_, id)| id.as_str()),
                    group: req.group.as_ref().map(GroupId::as_str),
                    content: &content,
                    kind: req.kind.as_deref(),
                    meta: meta.as_ref(),
                    client_msg_id: req.client_msg_id.as_str(),
                    edit_of: None,
                };
                match before_send(node, &app.settings, &request, meta_len).await? {
                    Hooked::AsSent => {}
                    Hooked::Modified { content: modified, meta: new_meta } => {
                        content = modified;
                        if new_meta.is_some() {
                            meta = new_meta;
                        }
                    }
                    Hooked::Dropped => {
                        return Ok(SendResult {
                            message_id: String::new(),
                            conversation: conversation.into_inner(),
                            seq: 0,
                            created_at: crate::domain::now_millis(),
                            created: false,
                            dropped: true,
                        });
                    }
                }
            }
            Some(origin)
        }
        Via::Server => None,
    };
    let hooks = Hooks::of(&app.settings);
    let appended = node
        .store
        .append_message(NewMessage {
            app: &who.app,
            conversation: &conversation,
            kind,
            sender: who.user,
            recipient: recipient.as_ref().map(|(key, _)| *key),
            client_msg_id: req.client_msg_id.as_str(),
            message_kind: req.kind.as_deref(),
            content: &content,
            meta: meta.as_ref().map(Meta::as_str),
            sender_id: sender_id.as_deref(),
            recipient_id: recipient.as_ref().map(|(_, id)| id.as_str()),
            reply_to,
            mentions: &mentions,
            hooks: &hooks,
            bypass_mutes,
        })
        .await
        .map_err(|e| match e {
            AppendError::NotFound => ApiError::new(ErrorCode::GroupNotFound, "no such group"),
            AppendError::NotAMember => ApiError::new(ErrorCode::NotAMember, "you are not a member of this group"),
            AppendError::Blocked => ApiError::new(ErrorCode::Blocked, "the recipient does not accept your messages"),
            AppendError::Dissolved => ApiError::new(ErrorCode::GroupDissolved, "the group was dissolved"),
            AppendError::Muted(SendRefusal::Silenced) => {
                ApiError::new(ErrorCode::Muted, "you are muted in this group for now")
            }
            AppendError::Muted(SendRefusal::GroupMuted) => {
                ApiError::new(ErrorCode::Muted, "the group is muted: only its owner and admins may send")
            }
            // Counted on natter_db_errors_total by the writer, with its kind.
            AppendError::Db(e) => ApiError::caused_by(e),
        })?;
    let kind_label = match kind {
        ConversationKind::Direct => "direct",
        ConversationKind::Group => "group",
    };
    metrics::counter!("natter_messages_received_total", "kind" => kind_label).increment(1);
    if appended.created {
        let stored = StoredMessage {
            id: appended.id.clone(),
            conversation_id: conversation.as_str().to_string(),
            conversation_kind: kind,
            seq: appended.seq,
            sender: sender_id,
            recipient: recipient.as_ref().map(|(_, id)| id.clone()),
            client_msg_id: req.client_msg_id.into_inner(),
            kind: req.kind,
            content,
            meta: meta.map(Meta::into_inner),
            created_at: appended.created_at,
            edited_at: None,
            recalled: false,
            deleted: false,
            reply_to,
            mentions: mentions.into_iter().map(|(_, id)| id).collect(),
            reactions: Vec::new(),
            change_seq: 0,
        };
        let frame = push_frame(&stored);
        let audience = match &recipient {
            Some((key, _)) => Audience::Direct(who.user, *key),
            None => Audience::Group(conversation.as_str()),
        };
        let sent = Sent { conv: conversation.as_str(), seq: stored.seq, sender: who.user, origin };
        node.fanout.message(who.app.as_str(), audience, sent, frame.as_bytes());
    }
    metrics::histogram!("natter_message_ack_duration_seconds").record(started.elapsed().as_secs_f64());
    Ok(SendResult {
        message_id: appended.id,
        conversation: conversation.into_inner(),
        seq: appended.seq,
        created_at: appended.created_at,
        created: appended.created,
        dropped: false,
    })
}

/// Checks what a message refers to: `reply_to` must be a seq of the conversation the sender may
/// read (the app may answer any message of it), `mentions` current members (for a direct
/// message, its two participants). Returns them resolved, mentions without repeats.
async fn check_references(
    node: &Node,
    who: &Identity,
    conversation: &ConversationId,
    req: &SendRequest,
) -> ApiResult<(Option<i64>, Vec<(UserKey, String)>)> {
    if req.reply_to.is_none() && req.mentions.is_empty() {
        return Ok((None, Vec::new()));
    }
    if req.mentions.len() > MAX_MENTIONS {
        return Err(ApiError::validation(format!("mentions: at most {MAX_MENTIONS} users")));
    }
    let sender = node.store.membership(&who.app, conversation.as_str(), who.user).await?;
    if let Some(seq) = req.reply_to {
        let readable = match (&sender, who.user == SYSTEM_SENDER) {
            _ if seq < 1 => false,
            (Some(m), _) => seq > m.joined_seq && seq <= m.visible_upto(),
            (None, true) => {
                let found =
                    node.store.messages_after(&who.app, conversation.as_str(), who.user, seq - 1, seq, 1).await?;
                !found.is_empty()
            }
            (None, false) => false,
        };
        if !readable {
            return Err(ApiError::new(
                ErrorCode::InvalidReply,
                format!("reply_to: {seq} is not a message of this conversation you can see"),
            ));
        }
    }
    let mut mentions: Vec<(UserKey, String)> = Vec::new();
    for id in &req.mentions {
        if mentions.iter().any(|(_, known)| known == id.as_str()) {
            continue;
        }
        let not_member = || {
            ApiError::new(ErrorCode::MentionNotAMember, format!("mentions: {id} is not a member of this conversation"))
        };
        let key = node.store.user_key_by_id(&who.app, id).await?.ok_or_else(not_member)?;
        let member = node.store.membership(&who.app, conversation.as_str(), key).await?;
        let is_member = member.is_some_and(|m| m.is_active())
            // A first direct message: its conversation does not exist yet.
            || direct_participants(conversation.as_str()).is_some_and(|(a, b)| key == a || key == b);
        if !is_member {
            return Err(not_member());
        }
        mentions.push((key, id.as_str().to_string()));
    }
    Ok((req.reply_to, mentions))
}

/// What the before-send hook decided about a message it let through.
#[derive(Debug)]
pub(crate) enum Hooked {
    /// Store it as sent.
    AsSent,
    /// Store this content (and this meta, when the hook gave one) instead.
    Modified { content: String, meta: Option<Meta> },
    /// Store and deliver nothing; the sender is answered as if it were sent.
    Dropped,
}

/// Asks the app's before-send hook about a message (or an edit); an error when it rejected it,
/// or was unavailable under the closed policy.
pub(crate) async fn before_send(
    node: &Node,
    settings: &crate::config::AppSettings,
    request: &HookRequest<'_>,
    meta_len: usize,
) -> ApiResult<Hooked> {
    match hook::ask(&node.webhook_clients, settings, request).await {
        Ok(Verdict::Allow) => Ok(Hooked::AsSent),
        Ok(Verdict::Reject(reason)) => {
            metrics::counter!("natter_hook_verdicts_total", "verdict" => "reject").increment(1);
            Err(ApiError::new(ErrorCode::RejectedByHook, reason))
        }
        Ok(Verdict::Modify { content, meta }) => {
            metrics::counter!("natter_hook_verdicts_total", "verdict" => "modify").increment(1);
            let meta_len = meta.as_ref().map_or(meta_len, |m| m.as_str().len());
            check_content(&content, meta_len, node.config.chat.max_content_bytes)?;
            Ok(Hooked::Modified { content, meta })
        }
        Ok(Verdict::Drop) => {
            metrics::counter!("natter_hook_verdicts_total", "verdict" => "drop").increment(1);
            Ok(Hooked::Dropped)
        }
        Err(why) if settings.before_send_policy == HookPolicy::Closed => {
            metrics::counter!("natter_hook_verdicts_total", "verdict" => "unavailable_closed").increment(1);
            tracing::warn!(app = request.app, error = %why, "before-send hook unavailable; policy closed rejects");
            Err(ApiError::new(ErrorCode::HookUnavailable, "the app's before-send hook is unavailable"))
        }
        Err(why) => {
            metrics::counter!("natter_hook_verdicts_total", "verdict" => "unavailable_open").increment(1);
            tracing::warn!(app = request.app, error = %why, "before-send hook unavailable; policy open delivers");
            Ok(Hooked::AsSent)
        }
    }
}

/// Who hears a conversation the caller is in: both users of a direct conversation (read back
/// from its id), or the group.
pub(crate) fn audience_of(conversation: &ConversationId, kind: ConversationKind) -> Option<Audience<'_>> {
    match kind {
        ConversationKind::Group => Some(Audience::Group(conversation.as_str())),
        ConversationKind::Direct => direct_participants(conversation.as_str()).map(|(a, b)| Audience::Direct(a, b)),
    }
}

/// The caller's membership of a conversation, or `conversation_not_found` (which also hides
/// conversations the caller is not in).
pub(crate) async fn membership_of(node: &Node, who: &Identity, conversation: &ConversationId) -> ApiResult<Membership> {
    node.store
        .membership(&who.app, conversation.as_str(), who.user)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::ConversationNotFound, format!("no conversation {conversation}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    #[serde(default)]
    pub after_seq: Option<i64>,
    #[serde(default)]
    pub before_seq: Option<i64>,
    #[serde(default)]
    pub limit: Option<i64>,
}

/// Most messages one history page returns.
pub const HISTORY_PAGE_MAX: i64 = 200;

/// A page of history: with `after_seq`, the oldest messages after it; otherwise the newest
/// messages before `before_seq` (or the end). Always oldest first.
pub async fn history(
    node: &Node,
    who: &Identity,
    conversation: &ConversationId,
    req: HistoryRequest,
) -> ApiResult<Vec<StoredMessage>> {
    let limit = req.limit.unwrap_or(50);
    if !(1..=HISTORY_PAGE_MAX).contains(&limit) {
        return Err(ApiError::validation(format!("limit: must be 1-{HISTORY_PAGE_MAX}")));
    }
    if req.after_seq.is_some_and(|s| s < 0) || req.before_seq.is_some_and(|s| s < 0) {
        return Err(ApiError::validation("after_seq, before_seq: must not be negative"));
    }
    let m = membership_of(node, who, conversation).await?;
    let (floor, upto) = (m.joined_seq, m.visible_upto());
    let messages = match (req.after_seq, req.before_seq) {
        (Some(after), before) => {
            let upto = before.map_or(upto, |b| b.saturating_sub(1).min(upto));
            node.store.messages_after(&who.app, conversation.as_str(), who.user, after.max(floor), upto, limit).await?
        }
        (None, before) => {
            let before = before.map_or(upto.saturating_add(1), |b| b.min(upto.saturating_add(1)));
            node.store.messages_before(&who.app, conversation.as_str(), who.user, floor, before, limit).await?
        }
    };
    Ok(messages)
}

/// Messages a session missed between two seqs it saw (gap repair), within what it may read.
pub async fn gap(
    node: &Node,
    who: &Identity,
    conversation: &str,
    after: i64,
    upto: i64,
) -> ApiResult<Vec<StoredMessage>> {
    let Some(m) = node.store.membership(&who.app, conversation, who.user).await? else {
        return Ok(Vec::new());
    };
    let upto = upto.min(m.visible_upto());
    Ok(node.store.messages_after(&who.app, conversation, who.user, after.max(m.joined_seq), upto, 10_000).await?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// The last seq the client holds per conversation; conversations left out are sent whole.
    #[serde(default)]
    pub conversations: HashMap<String, i64>,
    /// The change number the client last saw per conversation (`change_seq`): messages it
    /// holds (up to its seq in `conversations`) that changed since come back in `updates`.
    #[serde(default)]
    pub changes: HashMap<String, i64>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct SyncResponse {
    pub messages: Vec<StoredMessage>,
    /// Messages the client already held that were edited, recalled, deleted, reacted to or
    /// hidden since its `changes` number, in their state now.
    pub updates: Vec<StoredMessage>,
    pub conversations: Vec<ConversationView>,
    /// Per conversation, the change number the client has now seen: store it for the next sync.
    pub changes: HashMap<String, i64>,
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

fn encode_cursor(conversation: &str, seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{conversation}\n{seq}"))
}

fn decode_cursor(cursor: &str) -> ApiResult<(String, i64)> {
    let bad = || ApiError::validation("cursor: not a cursor this server returned");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (conv, seq) = text.split_once('\n').ok_or_else(bad)?;
    Ok((conv.to_string(), seq.parse().map_err(|_| bad())?))
}

/// Everything the client is missing, conversation by conversation in id order, each in seq order,
/// paged: while `complete` is false the client repeats the call with `cursor`.
pub async fn sync(node: &Node, who: &Identity, req: SyncRequest) -> ApiResult<SyncResponse> {
    let page = req.limit.unwrap_or(node.config.chat.sync_page_size);
    if page == 0 || page > node.config.chat.sync_page_size {
        return Err(ApiError::validation(format!("limit: must be 1-{}", node.config.chat.sync_page_size)));
    }
    let resume = req.cursor.as_deref().map(decode_cursor).transpose()?;
    let memberships = node.store.memberships(&who.app, who.user).await?;
    let mut messages: Vec<StoredMessage> = Vec::new();
    let mut cursor = None;
    for m in &memberships {
        let from = match &resume {
            Some((conv, _)) if m.conversation_id < *conv => continue,
            Some((conv, seq)) if m.conversation_id == *conv => *seq,
            _ => req.conversations.get(&m.conversation_id).copied().unwrap_or(m.joined_seq),
        }
        .max(m.joined_seq);
        let upto = m.visible_upto();
        if from >= upto {
            continue;
        }
        let room = page - messages.len();
        if room == 0 {
            // The page is full and this conversation still has messages: resume here.
            cursor = Some(encode_cursor(&m.conversation_id, from));
            break;
        }
        let batch = node.store.messages_after(&who.app, &m.conversation_id, who.user, from, upto, room as i64).await?;
        let last = batch.last().map_or(from, |msg| msg.seq);
        messages.extend(batch);
        if last < upto {
            cursor = Some(encode_cursor(&m.conversation_id, last));
            break;
        }
    }
    let (updates, changes, updates_complete) = changed_since(node, who, &memberships, &req, page).await?;
    Ok(SyncResponse {
        messages,
        updates,
        conversations: memberships.iter().map(ConversationView::from).collect(),
        changes,
        complete: cursor.is_none() && updates_complete,
        cursor,
    })
}

/// The messages the client holds that changed after the change number it gives per
/// conversation (at most `page`), and the number it has seen per conversation once it applies
/// them: the conversation's number, or the last update's where the page ran out.
async fn changed_since(
    node: &Node,
    who: &Identity,
    memberships: &[Membership],
    req: &SyncRequest,
    page: usize,
) -> ApiResult<(Vec<StoredMessage>, HashMap<String, i64>, bool)> {
    let mut updates: Vec<StoredMessage> = Vec::new();
    let mut seen = HashMap::with_capacity(memberships.len());
    let mut complete = true;
    for m in memberships {
        seen.insert(m.conversation_id.clone(), m.change_seq);
        let Some(held) = req.conversations.get(&m.conversation_id) else { continue };
        let since = req.changes.get(&m.conversation_id).copied().unwrap_or(0);
        if since >= m.change_seq {
            continue;
        }
        let room = page.saturating_sub(updates.len());
        if room == 0 {
            seen.insert(m.conversation_id.clone(), since);
            complete = false;
            continue;
        }
        let upto = (*held).min(m.visible_upto());
        let batch = node
            .store
            .changes_after(&who.app, &m.conversation_id, who.user, (m.joined_seq, upto), since, room as i64)
            .await?;
        if batch.len() == room {
            seen.insert(m.conversation_id.clone(), batch.last().map_or(since, |u| u.change_seq));
            complete = false;
        }
        updates.extend(batch);
    }
    Ok((updates, seen, complete))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadRequest {
    pub conversation: ConversationId,
    pub seq: i64,
}

#[derive(Debug, Serialize)]
pub struct ReadResult {
    pub conversation: String,
    pub read_seq: i64,
}

/// Moves the caller's read marker forward and tells the other participants.
pub async fn read(node: &Node, who: &Identity, req: ReadRequest) -> ApiResult<ReadResult> {
    if req.seq < 0 {
        return Err(ApiError::validation("seq: must not be negative"));
    }
    let m = membership_of(node, who, &req.conversation).await?;
    let seq = req.seq.min(m.visible_upto());
    let stored = node.store.mark_read(&who.app, req.conversation.as_str(), who.user, seq).await?.unwrap_or(seq);
    // Sending may already have moved it further (a direct conversation's marker, see the store).
    let stored = stored.max(m.read_seq);
    if m.is_active() {
        struct ReadEvent<'a> {
            conversation: &'a str,
            user: &'a str,
            seq: i64,
        }
        impl Encode for ReadEvent<'_> {
            fn encode(&self, o: &mut Object<'_>) {
                o.str("conversation", self.conversation).str("user", self.user).int("seq", self.seq);
            }
        }
        let frame = event_frame(
            "read",
            &ReadEvent { conversation: req.conversation.as_str(), user: who.id.as_str(), seq: stored },
        );
        if let Some(audience) = audience_of(&req.conversation, m.kind) {
            node.fanout.event(who.app.as_str(), audience, None, frame.as_bytes());
        }
    }
    // The reader's badges on every device follow the marker.
    crate::inbox::publish_unread(node, who, &[req.conversation.as_str()]).await;
    Ok(ReadResult { conversation: req.conversation.into_inner(), read_seq: stored })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypingRequest {
    pub conversation: ConversationId,
}

/// An ephemeral typing notice to the other participants; nothing is stored.
pub async fn typing(node: &Node, who: &Identity, req: TypingRequest, origin: Option<Origin>) -> ApiResult<()> {
    let m = membership_of(node, who, &req.conversation).await?;
    if !m.is_active() {
        return Err(ApiError::new(ErrorCode::NotAMember, "you are no longer a member of this conversation"));
    }
    struct TypingEvent<'a> {
        conversation: &'a str,
        user: &'a str,
    }
    impl Encode for TypingEvent<'_> {
        fn encode(&self, o: &mut Object<'_>) {
            o.str("conversation", self.conversation).str("user", self.user);
        }
    }
    // Someone who blocks me does not see me typing (and nor do my other devices need to).
    if let Some((a, b)) = direct_participants(req.conversation.as_str()).filter(|_| m.kind == ConversationKind::Direct)
    {
        let other = if a == who.user { b } else { a };
        if node.store.blocked_among(&who.app, other, &[who.user]).await?.contains(&who.user) {
            return Ok(());
        }
    }
    let frame = event_frame("typing", &TypingEvent { conversation: req.conversation.as_str(), user: who.id.as_str() });
    if let Some(audience) = audience_of(&req.conversation, m.kind) {
        node.fanout.event(who.app.as_str(), audience, origin, frame.as_bytes());
    }
    Ok(())
}

/// The internal key of a user by public id within the caller's app.
pub async fn user_key(node: &Node, who: &Identity, id: &UserId) -> ApiResult<UserKey> {
    node.store
        .user_by_id(&who.app, id)
        .await?
        .map(|u| u.key)
        .ok_or_else(|| ApiError::new(ErrorCode::UserNotFound, format!("no user {id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        let c = encode_cursor("dm_1_2", 40);
        assert_eq!(decode_cursor(&c).unwrap(), ("dm_1_2".to_string(), 40));
        assert!(decode_cursor("%%%").is_err());
        assert!(decode_cursor(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("x")).is_err());
    }

    #[test]
    fn message_kinds_are_short_tokens() {
        assert!(validate_kind("image").is_ok());
        assert!(validate_kind("").is_err());
        assert!(validate_kind("has space").is_err());
    }
}
