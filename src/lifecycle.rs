//! A message's life after it is sent: edit, recall, delete (for everyone, or for me) and react,
//! shared by WebSocket and REST, and by the server API (the app acts without time windows).
//!
//! Who may do what is decided in one place, [`allowed`]; the store re-checks it under the row
//! lock. Every change that changes something is published to every device of every participant
//! (for "delete for me": the caller's devices only) and, for edits, recalls and deletions, to the
//! app's webhooks through the outbox.

use serde::{Deserialize, Serialize};

use crate::{
    auth::Identity,
    chat::{self, audience_of, membership_of},
    domain::{ConversationId, ConversationKind, Meta, ReactionKey, now_millis},
    error::{ApiError, ApiResult, ErrorCode},
    fanout::Audience,
    node::Node,
    store::{
        conversations::{Membership, StoredMessage},
        lifecycle::{Change, ChangeError, Changed, Current, HookEvent},
        outbox::Hooks,
    },
    webhooks::hook::HookRequest,
    wire::{Encode, Object, event_frame},
};

/// Who acts: a user through a client, or the app through the server API (no time windows; an
/// app may recall or delete any message).
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    User(&'a Identity),
    App(&'a Identity),
}

impl<'a> Actor<'a> {
    fn who(self) -> &'a Identity {
        match self {
            Actor::User(who) | Actor::App(who) => who,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditRequest {
    pub conversation: ConversationId,
    pub seq: i64,
    pub content: String,
    /// Replaces the message's meta when given; kept otherwise.
    #[serde(default)]
    pub meta: Option<Meta>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageRef {
    pub conversation: ConversationId,
    pub seq: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Me,
    All,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Me => "me",
            Scope::All => "all",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    pub conversation: ConversationId,
    pub seq: i64,
    pub scope: Scope,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReactRequest {
    pub conversation: ConversationId,
    pub seq: i64,
    pub key: ReactionKey,
    pub on: bool,
}

#[derive(Debug, Serialize)]
pub struct Edited {
    pub conversation: String,
    pub seq: i64,
    pub edited_at: i64,
}

#[derive(Debug, Serialize)]
pub struct Recalled {
    pub conversation: String,
    pub seq: i64,
    pub recalled_at: i64,
}

#[derive(Debug, Serialize)]
pub struct Deleted {
    pub conversation: String,
    pub seq: i64,
    pub scope: Scope,
}

#[derive(Debug, Serialize)]
pub struct Reacted {
    pub conversation: String,
    pub seq: i64,
    pub key: String,
    pub on: bool,
    pub count: i64,
}

/// What an actor wants to do to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Edit,
    Recall,
    DeleteForAll,
    DeleteForMe,
    React,
}

/// The permission rule, in one place: whether `actor` (with `member`ship, absent for the app) may
/// do `act` to the message in its `current` state at `now`. See docs/protocol.md's table.
fn allowed(
    actor: Actor<'_>,
    member: Option<&Membership>,
    act: Act,
    current: &Current,
    settings: &crate::config::AppSettings,
    now: i64,
) -> ApiResult<()> {
    let gone = || ApiError::new(ErrorCode::MessageGone, "the message was recalled or deleted");
    if current.is_gone() && act != Act::DeleteForMe {
        return Err(gone());
    }
    let who = match actor {
        // The app acts on any message, without windows.
        Actor::App(_) => return Ok(()),
        Actor::User(who) => who,
    };
    let manages = member.is_some_and(|m| m.kind == ConversationKind::Group && m.is_active() && m.role.can_manage());
    let own = current.sender == who.user;
    let within = |secs: u64| secs == 0 || now - current.created_at <= (secs as i64).saturating_mul(1000);
    match act {
        Act::DeleteForMe => Ok(()),
        _ if !member.is_some_and(Membership::is_active) => {
            Err(ApiError::new(ErrorCode::NotAMember, "you are no longer a member of this conversation"))
        }
        // Its history stays readable (and hideable) as it was when it ended.
        _ if member.is_some_and(|m| m.dissolved_at.is_some()) => {
            Err(ApiError::new(ErrorCode::GroupDissolved, "the group was dissolved"))
        }
        Act::React => Ok(()),
        Act::Edit if !own => Err(ApiError::new(ErrorCode::Forbidden, "only its sender can edit a message")),
        Act::Edit if !within(settings.edit_window_secs) => Err(ApiError::new(
            ErrorCode::EditWindowPassed,
            format!("messages can be edited for {} s after sending", settings.edit_window_secs),
        )),
        Act::Edit => Ok(()),
        Act::Recall if manages => Ok(()),
        Act::Recall if !own => {
            Err(ApiError::new(ErrorCode::Forbidden, "only its sender or a group owner or admin can recall a message"))
        }
        Act::Recall if !within(settings.recall_window_secs) => Err(ApiError::new(
            ErrorCode::RecallWindowPassed,
            format!("messages can be recalled for {} s after sending", settings.recall_window_secs),
        )),
        Act::Recall => Ok(()),
        Act::DeleteForAll if manages => Ok(()),
        Act::DeleteForAll => Err(ApiError::new(
            ErrorCode::Forbidden,
            "only a group owner or admin (or the app) can delete a message for everyone",
        )),
    }
}

/// The message as the actor may see it: its membership (none for the app) and the message, or
/// 404 when it is outside what they may read.
async fn visible(
    node: &Node,
    actor: Actor<'_>,
    conversation: &ConversationId,
    seq: i64,
) -> ApiResult<(Option<Membership>, StoredMessage)> {
    let who = actor.who();
    let not_found = || ApiError::new(ErrorCode::MessageNotFound, format!("no message {seq} in {conversation}"));
    let (member, floor, upto) = match actor {
        Actor::User(_) => {
            let m = membership_of(node, who, conversation).await?;
            let (floor, upto) = (m.joined_seq, m.visible_upto());
            (Some(m), floor, upto)
        }
        Actor::App(_) => (None, 0, i64::MAX),
    };
    if seq <= floor || seq > upto {
        return Err(not_found());
    }
    let found = node.store.messages_after(&who.app, conversation.as_str(), who.user, seq - 1, seq, 1).await?;
    let message = found.into_iter().next().ok_or_else(not_found)?;
    Ok((member, message))
}

fn actor_id(actor: Actor<'_>) -> Option<&str> {
    match actor {
        Actor::User(who) => Some(who.id.as_str()),
        Actor::App(_) => None,
    }
}

struct MessageEvent<'a> {
    conversation: &'a str,
    seq: i64,
    by: Option<&'a str>,
    at: i64,
    extra: Extra<'a>,
}

enum Extra<'a> {
    None,
    Edit { content: &'a str, meta: Option<&'a str> },
    Scope(Scope),
    Reaction { key: &'a str, user: &'a str, on: bool, count: i64 },
}

impl Encode for MessageEvent<'_> {
    fn encode(&self, o: &mut Object<'_>) {
        o.str("conversation", self.conversation).int("seq", self.seq).opt_str("by", self.by).int("at", self.at);
        match &self.extra {
            Extra::None => {}
            Extra::Edit { content, meta } => {
                o.str("content", content).int("edited_at", self.at);
                // Meta was validated as a JSON object when it was written.
                if let Some(raw) = meta.and_then(|m| serde_json::from_str::<&serde_json::value::RawValue>(m).ok()) {
                    o.raw("meta", raw);
                }
            }
            Extra::Scope(scope) => {
                o.str("scope", scope.as_str());
            }
            Extra::Reaction { key, user, on, count } => {
                o.str("key", key).str("user", user).bool("on", *on).int("count", *count);
            }
        }
    }
}

/// One actor acting on one message they may see: the change is checked by [`allowed`] under the
/// store's lock, then announced.
struct Acting<'a> {
    node: &'a Node,
    actor: Actor<'a>,
    member: Option<Membership>,
    original: StoredMessage,
    settings: crate::config::AppSettings,
    conversation: &'a ConversationId,
    seq: i64,
}

impl<'a> Acting<'a> {
    /// The message as the actor may see it, or 404 (see [`visible`]).
    async fn on(node: &'a Node, actor: Actor<'a>, conversation: &'a ConversationId, seq: i64) -> ApiResult<Self> {
        let settings = node.app(&actor.who().app).await?.settings;
        let (member, original) = visible(node, actor, conversation, seq).await?;
        Ok(Acting { node, actor, member, original, settings, conversation, seq })
    }

    fn who(&self) -> &'a Identity {
        self.actor.who()
    }

    /// The webhook event of a change, when the app wants it (written in the change's transaction).
    fn hook_data(&self, event: &str, at: i64, content: Option<&str>) -> Option<serde_json::Value> {
        if !Hooks::of(&self.settings).wants(event) {
            return None;
        }
        let mut data = serde_json::Map::new();
        data.insert("conversation".into(), self.conversation.as_str().into());
        data.insert("seq".into(), self.seq.into());
        data.insert("by".into(), actor_id(self.actor).map_or(serde_json::Value::Null, Into::into));
        data.insert("at".into(), at.into());
        if let Some(content) = content {
            data.insert("content".into(), content.into());
        }
        Some(serde_json::Value::Object(data))
    }

    async fn change(
        &self,
        act: Act,
        change: Change<'_>,
        hook: Option<(&'static str, &serde_json::Value)>,
    ) -> ApiResult<Changed> {
        let now = now_millis();
        let (actor, member, settings) = (self.actor, self.member.as_ref(), &self.settings);
        self.node
            .store
            .change_message(
                &self.who().app,
                self.conversation.as_str(),
                self.seq,
                |current| allowed(actor, member, act, current, settings, now),
                change,
                hook.map(|(event, data)| HookEvent { event, data }),
            )
            .await
            .map_err(|e| match e {
                ChangeError::NotFound => ApiError::new(
                    ErrorCode::MessageNotFound,
                    format!("no message {} in {}", self.seq, self.conversation),
                ),
                ChangeError::Refused(e) => e,
                ChangeError::Db(e) => e.into(),
            })
    }

    fn event<'e>(&'e self, changed: &Changed, by: Option<&'e str>, extra: Extra<'e>) -> MessageEvent<'e> {
        MessageEvent { conversation: self.conversation.as_str(), seq: self.seq, by, at: changed.at, extra }
    }

    /// To every device of every participant (the actor's included: the reply answers the
    /// request, the event updates every view alike).
    fn publish(&self, event: &str, data: &MessageEvent<'_>) {
        let frame = event_frame(event, data);
        if let Some(audience) = audience_of(self.conversation, self.original.conversation_kind) {
            self.node.fanout.event(self.who().app.as_str(), audience, None, frame.as_bytes());
        }
    }

    /// As `publish`, for a message that is gone for everyone: each recipient's unread count in
    /// the conversation is recounted where their sessions are.
    fn publish_removal(&self, event: &str, data: &MessageEvent<'_>) {
        let frame = event_frame(event, data);
        if let Some(audience) = audience_of(self.conversation, self.original.conversation_kind) {
            let conv = self.conversation.as_str();
            self.node.fanout.removal(self.who().app.as_str(), audience, conv, frame.as_bytes());
        }
    }
}

/// Edits a message: its sender, within the app's `edit_window_secs`; the before-send hook sees
/// the new content (a client's edit only).
pub async fn edit(node: &Node, actor: Actor<'_>, req: EditRequest) -> ApiResult<Edited> {
    let meta_len = req.meta.as_ref().map_or(0, |m| m.as_str().len());
    chat::check_content(&req.content, meta_len, node.config.chat.max_content_bytes)?;
    let acting = Acting::on(node, actor, &req.conversation, req.seq).await?;
    let (who, original) = (acting.who(), &acting.original);
    // Refused before the hook is asked (the whole rule is checked under the lock below).
    if original.recalled || original.deleted {
        return Err(ApiError::new(ErrorCode::MessageGone, "the message was recalled or deleted"));
    }
    let mut content = req.content.clone();
    if let (Actor::User(_), false) = (actor, acting.settings.before_send_url.is_empty()) {
        let request = HookRequest {
            app: who.app.as_str(),
            sender: Some(who.id.as_str()),
            recipient: original.recipient.as_deref(),
            group: (original.conversation_kind == ConversationKind::Group).then_some(original.conversation_id.as_str()),
            content: &content,
            kind: original.kind.as_deref(),
            meta: req.meta.as_ref(),
            client_msg_id: &original.client_msg_id,
            edit_of: Some(req.seq),
        };
        match chat::before_send(node, &acting.settings, &request, meta_len).await? {
            chat::Hooked::AsSent => {}
            // An edit keeps its own meta; the hook's text replaces the content.
            chat::Hooked::Modified { content: modified, .. } => content = modified,
            // An edit dropped is an edit not made: the message stays as it was.
            chat::Hooked::Dropped => {
                return Err(ApiError::new(ErrorCode::RejectedByHook, "the app did not accept this edit"));
            }
        }
    }
    let data = acting.hook_data("message.edited", now_millis(), Some(&content));
    let meta = req.meta.as_ref().map(|m| Some(m.as_str()));
    let changed = acting
        .change(Act::Edit, Change::Edit { content: &content, meta }, data.as_ref().map(|d| ("message.edited", d)))
        .await?;
    let meta = req.meta.as_ref().map(Meta::as_str).or(original.meta.as_deref());
    acting.publish("message.edited", &acting.event(&changed, actor_id(actor), Extra::Edit { content: &content, meta }));
    Ok(Edited { conversation: req.conversation.as_str().to_string(), seq: req.seq, edited_at: changed.at })
}

/// Recalls a message: its sender within the app's `recall_window_secs`, a group owner or admin
/// at any time, or the app. Content and meta are erased; a tombstone keeps the seq.
pub async fn recall(node: &Node, actor: Actor<'_>, req: MessageRef) -> ApiResult<Recalled> {
    let acting = Acting::on(node, actor, &req.conversation, req.seq).await?;
    let data = acting.hook_data("message.recalled", now_millis(), None);
    let changed = acting.change(Act::Recall, Change::Recall, data.as_ref().map(|d| ("message.recalled", d))).await?;
    acting.publish_removal("message.recalled", &acting.event(&changed, actor_id(actor), Extra::None));
    Ok(Recalled { conversation: req.conversation.as_str().to_string(), seq: req.seq, recalled_at: changed.at })
}

/// Deletes a message for everyone (a group owner or admin, or the app) or hides it from the
/// caller's own devices (`scope: me`, any member, idempotent).
pub async fn delete(node: &Node, actor: Actor<'_>, req: DeleteRequest) -> ApiResult<Deleted> {
    if let (Actor::App(_), Scope::Me) = (actor, req.scope) {
        return Err(ApiError::validation("scope: the app deletes for everyone (scope all)"));
    }
    let acting = Acting::on(node, actor, &req.conversation, req.seq).await?;
    let who = acting.who();
    let (act, change, data) = match req.scope {
        Scope::Me => (Act::DeleteForMe, Change::Hide { user: who.user }, None),
        Scope::All => {
            (Act::DeleteForAll, Change::DeleteForAll, acting.hook_data("message.deleted", now_millis(), None))
        }
    };
    let changed = acting.change(act, change, data.as_ref().map(|d| ("message.deleted", d))).await?;
    if changed.changed {
        let event = acting.event(&changed, actor_id(actor), Extra::Scope(req.scope));
        match req.scope {
            Scope::Me => {
                let frame = event_frame("message.deleted", &event);
                node.fanout.event(who.app.as_str(), Audience::User(who.user), None, frame.as_bytes());
                crate::inbox::publish_unread(node, who, &[req.conversation.as_str()]).await;
            }
            Scope::All => {
                acting.publish_removal("message.deleted", &event);
            }
        }
    }
    Ok(Deleted { conversation: req.conversation.as_str().to_string(), seq: req.seq, scope: req.scope })
}

/// Adds or removes a user's reaction (idempotent per user and key). The server API acts for a
/// user it names, under that user's rules.
pub async fn react(node: &Node, actor: Actor<'_>, req: ReactRequest) -> ApiResult<Reacted> {
    let acting = Acting::on(node, Actor::User(actor.who()), &req.conversation, req.seq).await?;
    let who = acting.who();
    let changed =
        acting.change(Act::React, Change::React { user: who.user, key: req.key.as_str(), on: req.on }, None).await?;
    if changed.changed {
        let extra = Extra::Reaction { key: req.key.as_str(), user: who.id.as_str(), on: req.on, count: changed.count };
        acting.publish("message.reaction", &acting.event(&changed, Some(who.id.as_str()), extra));
    }
    Ok(Reacted {
        conversation: req.conversation.as_str().to_string(),
        seq: req.seq,
        key: req.key.as_str().to_string(),
        on: req.on,
        count: changed.count,
    })
}

/// For the permission table's unit tests.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AppId, Role, UserId, UserKey, UserKind};

    fn user(key: i64) -> Identity {
        Identity {
            app: AppId::from_trusted("a"),
            user: UserKey(key),
            id: UserId::from_trusted("u"),
            kind: UserKind::User,
            session_id: None,
            device_id: None,
        }
    }

    fn member(kind: ConversationKind, role: Role, left: bool) -> Membership {
        Membership {
            conversation_id: "c".into(),
            kind,
            name: None,
            last_seq: 10,
            read_seq: 0,
            joined_seq: 0,
            left_seq: left.then_some(5),
            role,
            change_seq: 0,
            dissolved_at: None,
        }
    }

    fn message(sender: i64, created_at: i64) -> Current {
        Current { sender: UserKey(sender), created_at, recalled: false, deleted: false }
    }

    fn code(r: ApiResult<()>) -> &'static str {
        r.err().map_or("ok", |e| e.code.as_str())
    }

    #[test]
    fn the_permission_table_holds() {
        let settings =
            crate::config::AppSettings { edit_window_secs: 60, recall_window_secs: 120, ..Default::default() };
        let (alice, bob) = (user(1), user(2));
        let dm = member(ConversationKind::Direct, Role::Member, false);
        let admin = member(ConversationKind::Group, Role::Admin, false);
        let plain = member(ConversationKind::Group, Role::Member, false);
        let gone = member(ConversationKind::Group, Role::Member, true);
        let fresh = message(1, 1_000_000);
        let now = 1_000_000 + 30_000;
        let late = 1_000_000 + 600_000;
        let check = |who, m: &Membership, act, at| code(allowed(Actor::User(who), Some(m), act, &fresh, &settings, at));
        assert_eq!(check(&alice, &dm, Act::Edit, now), "ok", "the sender edits in the window");
        assert_eq!(check(&alice, &dm, Act::Edit, late), "edit_window_passed");
        assert_eq!(check(&bob, &dm, Act::Edit, now), "forbidden", "not the sender");
        assert_eq!(check(&alice, &dm, Act::Recall, now), "ok");
        assert_eq!(check(&alice, &dm, Act::Recall, late), "recall_window_passed");
        assert_eq!(check(&bob, &admin, Act::Recall, late), "ok", "a group admin recalls at any time");
        assert_eq!(check(&bob, &plain, Act::Recall, now), "forbidden");
        assert_eq!(check(&bob, &dm, Act::DeleteForAll, now), "forbidden", "no admins in a DM");
        assert_eq!(check(&alice, &dm, Act::DeleteForAll, now), "forbidden", "the sender recalls instead");
        assert_eq!(check(&bob, &admin, Act::DeleteForAll, now), "ok");
        assert_eq!(check(&bob, &plain, Act::React, late), "ok");
        assert_eq!(check(&bob, &gone, Act::React, now), "not_a_member", "a former member");
        assert_eq!(check(&bob, &gone, Act::DeleteForMe, now), "ok", "hiding needs only sight");
        let recalled = Current { recalled: true, ..fresh.clone() };
        assert_eq!(
            code(allowed(Actor::User(&bob), Some(&plain), Act::React, &recalled, &settings, now)),
            "message_gone"
        );
        assert_eq!(code(allowed(Actor::User(&bob), Some(&plain), Act::DeleteForMe, &recalled, &settings, now)), "ok");
        assert_eq!(
            code(allowed(Actor::App(&bob), None, Act::Edit, &fresh, &settings, late)),
            "ok",
            "the app has no windows"
        );
        let unlimited = crate::config::AppSettings { edit_window_secs: 0, ..Default::default() };
        assert_eq!(code(allowed(Actor::User(&alice), Some(&dm), Act::Edit, &fresh, &unlimited, late * 1000)), "ok");
    }
}
