//! The conversation list an app is built on: per conversation the member's unread count, whether
//! an unread message mentions them, a preview of the last message, the last activity, and their
//! own settings (pinned, archived, muted); pinned first, then newest activity first, paged with
//! a cursor. And the `unread` events that keep a client's badges right.

use std::{cmp::Reverse, collections::HashMap, sync::Arc};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::{
    auth::Identity,
    domain::{AppId, ConversationId, ConversationKind, UserKey},
    error::{ApiError, ApiResult, ErrorCode},
    fanout::Audience,
    hub::router::{TakeUnread, ToLocalUsers, UnreadDue},
    node::Node,
    store::{
        conversations::Membership,
        inbox::{InboxEntry, LastMessage, Prefs, Unread},
    },
    wire::{Encode, Object, event_frame},
};

/// Conversations per page when the request names no limit.
const DEFAULT_PAGE: usize = 50;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub cursor: Option<String>,
}

/// A conversation as its member sees it (in the list, and in `sync`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConversationView {
    pub id: String,
    pub kind: ConversationKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub last_seq: i64,
    pub read_seq: i64,
    /// False once the caller has left or been removed (history up to then stays readable).
    pub active: bool,
    /// The conversation's change number: give it back as `sync`'s `changes`.
    pub change_seq: i64,
    /// When the group was dissolved (unix ms); absent while it lives and for direct conversations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dissolved_at: Option<i64>,
}

impl From<&Membership> for ConversationView {
    fn from(m: &Membership) -> Self {
        Self {
            id: m.conversation_id.clone(),
            kind: m.kind,
            name: m.name.clone(),
            last_seq: m.visible_upto(),
            read_seq: m.read_seq,
            active: m.is_active(),
            change_seq: m.change_seq,
            dissolved_at: m.dissolved_at,
        }
    }
}

/// An item of the conversation list: the conversation, its counts and preview, and the member's
/// own settings.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConversationItem {
    #[serde(flatten)]
    pub conversation: ConversationView,
    pub unread: i64,
    pub mentioned: bool,
    pub last_message: Option<LastMessage>,
    pub last_activity: i64,
    pub pinned: bool,
    pub archived: bool,
    pub muted_until: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct ListPage {
    pub conversations: Vec<ConversationItem>,
    /// Where the next page starts; `None` on the last page.
    pub cursor: Option<String>,
}

/// Where an entry sorts: pinned first, then newest activity first, then by id.
fn sort_key(e: &InboxEntry) -> (bool, Reverse<i64>, &str) {
    (e.pinned_at.is_none(), Reverse(e.last_activity), e.member.conversation_id.as_str())
}

fn encode_cursor(e: &InboxEntry) -> String {
    let (unpinned, id) = (e.pinned_at.is_none(), &e.member.conversation_id);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}\n{}\n{id}",
        u8::from(unpinned),
        e.last_activity
    ))
}

fn decode_cursor(cursor: &str) -> ApiResult<(bool, i64, String)> {
    let bad = || ApiError::validation("cursor: not a cursor this server returned");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let mut parts = text.splitn(3, '\n');
    let (Some(unpinned), Some(activity), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let unpinned = match unpinned {
        "0" => false,
        "1" => true,
        _ => return Err(bad()),
    };
    Ok((unpinned, activity.parse().map_err(|_| bad())?, id.to_string()))
}

fn item(e: InboxEntry, unread: Unread) -> ConversationItem {
    ConversationItem {
        conversation: ConversationView::from(&e.member),
        unread: unread.count,
        mentioned: unread.mentioned,
        last_message: e.last_message,
        last_activity: e.last_activity,
        pinned: e.pinned_at.is_some(),
        archived: e.archived_at.is_some(),
        muted_until: e.muted_until,
    }
}

/// One page of a user's conversation list.
pub async fn list(node: &Node, app: &AppId, user: UserKey, req: ListRequest) -> ApiResult<ListPage> {
    let max = node.config.chat.conversation_page_max;
    let limit = req.limit.unwrap_or(DEFAULT_PAGE.min(max));
    if limit == 0 || limit > max {
        return Err(ApiError::validation(format!("limit: must be 1-{max}")));
    }
    let after = req.cursor.as_deref().map(decode_cursor).transpose()?;
    let mut entries = node.store.inbox(app, user, None, node.config.chat.preview_chars).await?;
    entries.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    let start = match &after {
        Some((unpinned, activity, id)) => {
            let key = (*unpinned, Reverse(*activity), id.as_str());
            entries.partition_point(|e| sort_key(e) <= key)
        }
        None => 0,
    };
    let mut page: Vec<InboxEntry> = entries.into_iter().skip(start).take(limit + 1).collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let cursor = if more { page.last().map(encode_cursor) } else { None };
    let ids: Vec<&str> = page.iter().map(|e| e.member.conversation_id.as_str()).collect();
    let mut unread = node.store.unread(app, user, Some(&ids)).await?;
    let conversations = page
        .into_iter()
        .map(|e| {
            let counts = unread.remove(&e.member.conversation_id).unwrap_or_default();
            item(e, counts)
        })
        .collect();
    Ok(ListPage { conversations, cursor })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefsRequest {
    #[serde(default)]
    pub pinned: Option<bool>,
    #[serde(default)]
    pub archived: Option<bool>,
    /// Unix ms until which the conversation is muted; `null` unmutes.
    #[serde(default, deserialize_with = "crate::domain::present")]
    pub muted_until: Option<Option<i64>>,
}

/// Sets the caller's own settings of a conversation and returns it as the list shows it.
pub async fn set_prefs(
    node: &Node,
    who: &Identity,
    conversation: &ConversationId,
    req: PrefsRequest,
) -> ApiResult<ConversationItem> {
    if req.pinned.is_none() && req.archived.is_none() && req.muted_until.is_none() {
        return Err(ApiError::validation("give at least one of pinned, archived, muted_until"));
    }
    if let Some(Some(until)) = req.muted_until
        && until < 0
    {
        return Err(ApiError::validation("muted_until: must be a unix time in milliseconds"));
    }
    let prefs = Prefs { pinned: req.pinned, archived: req.archived, muted_until: req.muted_until };
    let not_found = || ApiError::new(ErrorCode::ConversationNotFound, format!("no conversation {conversation}"));
    if !node.store.set_prefs(&who.app, conversation.as_str(), who.user, &prefs).await? {
        return Err(not_found());
    }
    let entry = node
        .store
        .inbox(&who.app, who.user, Some(conversation.as_str()), node.config.chat.preview_chars)
        .await?
        .pop()
        .ok_or_else(not_found)?;
    let unread = node.store.unread(&who.app, who.user, Some(&[conversation.as_str()])).await?;
    Ok(item(entry, unread.get(conversation.as_str()).copied().unwrap_or_default()))
}

struct UnreadEvent<'a> {
    conversation: &'a str,
    unread: i64,
    total: i64,
}

impl Encode for UnreadEvent<'_> {
    fn encode(&self, o: &mut Object<'_>) {
        o.str("conversation", self.conversation).int("unread", self.unread).int("total", self.total);
    }
}

/// Pushes `unread` events to every device of `user` for these conversations: the count of each,
/// and the user's total over conversations that are not muted. A failure is logged: the counts
/// are read again with the conversation list.
pub async fn publish_unread_of(node: &Node, app: &AppId, user: UserKey, conversations: &[&str]) {
    match node.store.unread(app, user, None).await {
        Ok(all) => {
            let total = all.values().filter(|u| !u.muted).map(|u| u.count).sum::<i64>();
            for conversation in conversations {
                let unread = all.get(*conversation).map_or(0, |u| u.count);
                let frame = event_frame("unread", &UnreadEvent { conversation, unread, total });
                node.fanout.event(app.as_str(), Audience::User(user), None, frame.as_bytes());
            }
        }
        Err(e) => tracing::warn!(error = %e, "unread counts could not be read; clients catch up from the list"),
    }
}

/// Keeps the badges of this node's sessions true: every `chat.unread_push_ms`, takes from the
/// Router the users whose counts changed (a message reached them, a message was removed), counts
/// them in one statement per app (up to `UNREAD_USERS_PER_STATEMENT` users each) and pushes
/// `unread` events to their local sessions. A user hears at most once per interval however
/// many messages arrived; the work per interval is bounded by the users active on this node.
pub async fn push_unread(node: Node) {
    let every = std::time::Duration::from_millis(node.config.chat.unread_push_ms);
    loop {
        tokio::time::sleep(every).await;
        let Ok(due) = node.router.send(TakeUnread).await else {
            return; // the Router stopped: the node is shutting down
        };
        let mut by_app: HashMap<Arc<str>, Vec<UnreadDue>> = HashMap::new();
        for d in due {
            by_app.entry(d.user.0.clone()).or_default().push(d);
        }
        for (app, users) in by_app {
            let Ok(app_id) = AppId::parse(app.to_string()) else { continue };
            for chunk in users.chunks(UNREAD_USERS_PER_STATEMENT) {
                let keys: Vec<UserKey> = chunk.iter().map(|d| UserKey(d.user.1)).collect();
                let counts = match node.store.unread_of_users(&app_id, &keys, None).await {
                    Ok(counts) => counts,
                    Err(e) => {
                        tracing::warn!(error = %e, "unread counts could not be read; clients catch up from the list");
                        continue;
                    }
                };
                // Handed over a few users at a time, each part awaited: the Router serves the
                // bus deliveries that arrive meanwhile between the parts instead of after all of
                // a room's events (10,000 members over 4 nodes: the deliveries queued behind
                // them, measured in the room section of the load-test suite).
                for part in chunk.chunks(UNREAD_USERS_PER_HANDOVER) {
                    let mut events = Vec::with_capacity(part.len());
                    for d in part {
                        let mine = counts.get(&UserKey(d.user.1));
                        let total = mine.map_or(0, |m| m.values().filter(|u| !u.muted).map(|u| u.count).sum::<i64>());
                        for conversation in &d.conversations {
                            let unread = mine.and_then(|m| m.get(conversation.as_ref())).map_or(0, |u| u.count);
                            let frame = event_frame("unread", &UnreadEvent { conversation, unread, total });
                            events.push((d.user.clone(), frame.into()));
                        }
                    }
                    if node.router.send(ToLocalUsers { events }).await.is_err() {
                        return; // the Router stopped: the node is shutting down
                    }
                }
                metrics::counter!("natter_unread_pushes_total").increment(chunk.len() as u64);
            }
        }
    }
}

/// Users whose `unread` events `push_unread` hands the Router at once.
const UNREAD_USERS_PER_HANDOVER: usize = 64;

/// Users counted per statement by `push_unread`: the store's largest statement.
const UNREAD_USERS_PER_STATEMENT: usize = crate::store::inbox::UNREAD_MAX_USERS;

/// The caller's own counts changed (a read marker moved, a message hidden, a message sent).
pub async fn publish_unread(node: &Node, who: &Identity, conversations: &[&str]) {
    publish_unread_of(node, &who.app, who.user, conversations).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_a_forged_one_is_refused() {
        let e = InboxEntry {
            member: Membership {
                conversation_id: "g1".into(),
                kind: ConversationKind::Group,
                name: None,
                last_seq: 1,
                read_seq: 0,
                joined_seq: 0,
                left_seq: None,
                role: crate::domain::Role::Member,
                change_seq: 0,
                dissolved_at: None,
            },
            pinned_at: Some(5),
            archived_at: None,
            muted_until: None,
            last_message: None,
            last_activity: 1234,
        };
        assert_eq!(decode_cursor(&encode_cursor(&e)).unwrap(), (false, 1234, "g1".to_string()));
        assert!(decode_cursor("not base64!").is_err());
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("2\nx\ny");
        assert!(decode_cursor(&forged).is_err());
        let extreme = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("0\n{}\nz", i64::MIN));
        assert_eq!(decode_cursor(&extreme).unwrap().1, i64::MIN, "any number a client forges sorts, none overflows");
    }
}
