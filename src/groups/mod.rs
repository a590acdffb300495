//! Groups: creation, profiles and membership, and the administrative acts on them (`admin`),
//! with the events they push to members' sessions and the webhooks they queue.
//!
//! Every change travels as one `Membership` envelope on the app's control subject: every node
//! updates its Router's group map (members added or removed, possibly none) and delivers the
//! event frame to the local members, the removed ones included.

pub mod admin;

use serde::{Deserialize, Serialize};

use crate::{
    auth::Identity,
    bus::Envelope,
    chat,
    domain::{AppId, ClientMsgId, ConversationKind, GroupId, Name, Role, UserId, UserKey, random_id},
    error::{ApiError, ApiResult, ErrorCode},
    node::Node,
    store::{
        groups::{GroupMember, GroupProfile, GroupWriteError},
        outbox::Hooks,
    },
    wire::{Encode, Object, event_frame},
};

/// Who acts on a group: one of the app's users, or the app itself (the server API), which is
/// not a member and answers to no role.
#[derive(Debug, Clone, Copy)]
pub enum GroupActor<'a> {
    User(&'a Identity),
    App(&'a AppId),
}

impl GroupActor<'_> {
    pub fn app(&self) -> &AppId {
        match self {
            GroupActor::User(who) => &who.app,
            GroupActor::App(app) => app,
        }
    }

    /// The actor's public id in events and the audit trail; `None` for the app.
    pub fn id(&self) -> Option<&str> {
        match self {
            GroupActor::User(who) => Some(who.id.as_str()),
            GroupActor::App(_) => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupRequest {
    /// Optional; generated when absent.
    #[serde(default)]
    pub id: Option<GroupId>,
    pub name: Name,
    #[serde(default)]
    pub members: Vec<UserId>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersRequest {
    pub members: Vec<UserId>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemberView {
    pub id: String,
    pub role: Role,
    /// Silenced by the owner or an admin until then (unix ms); absent when free to send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<i64>,
}

impl MemberView {
    fn of(m: &GroupMember) -> MemberView {
        let now = crate::domain::now_millis();
        MemberView { id: m.id.clone(), role: m.role, muted_until: m.silenced_until.filter(|t| *t > now) }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    pub id: String,
    pub name: String,
    pub avatar_url: Option<String>,
    pub announcement: Option<String>,
    /// Only the owner and admins may send.
    pub muted: bool,
    /// When the group was dissolved (unix ms); `null` while it lives.
    pub dissolved_at: Option<i64>,
    pub last_seq: i64,
    pub members: Vec<MemberView>,
}

impl GroupView {
    fn of(id: &str, profile: &GroupProfile, members: &[GroupMember]) -> GroupView {
        GroupView {
            id: id.to_string(),
            name: profile.name.clone(),
            avatar_url: profile.avatar_url.clone(),
            announcement: profile.announcement.clone(),
            muted: profile.muted,
            dissolved_at: profile.dissolved_at,
            last_seq: profile.last_seq,
            members: members.iter().map(MemberView::of).collect(),
        }
    }
}

impl Encode for MemberView {
    fn encode(&self, o: &mut Object<'_>) {
        o.str("id", &self.id).str("role", self.role.as_str());
        if let Some(t) = self.muted_until {
            o.int("muted_until", t);
        }
    }
}

impl Encode for GroupView {
    fn encode(&self, o: &mut Object<'_>) {
        o.str("id", &self.id)
            .str("name", &self.name)
            .opt_str("avatar_url", self.avatar_url.as_deref())
            .opt_str("announcement", self.announcement.as_deref())
            .bool("muted", self.muted)
            .opt_int("dissolved_at", self.dissolved_at)
            .int("last_seq", self.last_seq)
            .list("members", &self.members);
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub last_seq: i64,
    pub read_seq: i64,
}

pub(crate) fn group_error(e: GroupWriteError) -> ApiError {
    match e {
        GroupWriteError::Exists => ApiError::new(ErrorCode::Conflict, "group id is already taken"),
        GroupWriteError::NotFound => ApiError::new(ErrorCode::GroupNotFound, "no such group"),
        GroupWriteError::Db(e) => e.into(),
    }
}

fn group_full(max: usize) -> ApiError {
    ApiError::new(ErrorCode::GroupFull, format!("a group has at most {max} members"))
}

/// Resolves public ids to keys; every id must exist.
async fn resolve(node: &Node, app: &AppId, ids: &[UserId]) -> ApiResult<Vec<(UserKey, String)>> {
    let mut unique: Vec<UserId> = ids.to_vec();
    unique.sort();
    unique.dedup();
    let found = node.store.users_by_ids(app, &unique).await?;
    if found.len() != unique.len() {
        let missing: Vec<&str> =
            unique.iter().filter(|id| !found.iter().any(|u| u.id == id.as_str())).map(UserId::as_str).collect();
        return Err(ApiError::new(ErrorCode::UserNotFound, format!("unknown users: {}", missing.join(", "))));
    }
    Ok(found.into_iter().map(|u| (u.key, u.id)).collect())
}

/// Puts a group change on the bus: nodes apply the membership change, then deliver `frame` to
/// the group's sessions there (and to the removed members').
pub(crate) fn publish(node: &Node, app: &AppId, group: &str, added: Vec<i64>, removed: Vec<i64>, frame: String) {
    let envelope = Envelope::Membership { group: group.to_string(), added, removed };
    node.fanout.control(app.as_str(), &envelope, frame.as_bytes());
}

pub async fn create(node: &Node, who: &Identity, req: CreateGroupRequest) -> ApiResult<GroupView> {
    let max = node.config.chat.max_group_size;
    let id = match req.id {
        Some(id) => id,
        None => GroupId::parse(random_id("g_", 8)).map_err(ApiError::caused_by)?,
    };
    let app = node.app(&who.app).await?;
    let mut wanted = req.members.clone();
    for id in &app.settings.auto_join {
        if let Ok(id) = UserId::parse(id.as_str())
            && node.store.user_by_id(&who.app, &id).await?.is_some()
        {
            wanted.push(id);
        }
    }
    let members = resolve(node, &who.app, &wanted).await?;
    let keys: Vec<UserKey> = members.iter().map(|(k, _)| *k).filter(|k| *k != who.user).collect();
    if keys.len() + 1 > max {
        return Err(group_full(max));
    }
    let planned: Vec<GroupMember> = std::iter::once(GroupMember {
        key: who.user,
        id: who.id.as_str().to_string(),
        role: Role::Owner,
        silenced_until: None,
    })
    .chain(members.iter().filter(|(k, _)| *k != who.user).map(|(key, id)| GroupMember {
        key: *key,
        id: id.clone(),
        role: Role::Member,
        silenced_until: None,
    }))
    .collect();
    let profile = GroupProfile {
        name: req.name.as_str().to_string(),
        avatar_url: None,
        announcement: None,
        muted: false,
        dissolved_at: None,
        last_seq: 0,
    };
    let planned_view = GroupView::of(id.as_str(), &profile, &planned);
    let hooks = Hooks::of(&app.settings);
    let event = hooks.wants("group.created").then(|| serde_json::json!({ "group": planned_view, "by": who.id }));
    node.store
        .create_group(&who.app, &id, req.name.as_str(), who.user, &keys, event.as_ref())
        .await
        .map_err(group_error)?;
    let stored = node.store.group_members(&who.app, id.as_str()).await?;
    let view = GroupView::of(id.as_str(), &profile, &stored);
    let frame = event_frame("group.created", &view);
    publish(node, &who.app, id.as_str(), stored.iter().map(|m| m.key.0).collect(), Vec::new(), frame);
    if !app.settings.welcome_message.is_empty() {
        let welcome = chat::SendRequest {
            recipient: None,
            group: Some(id.clone()),
            content: app.settings.welcome_message.clone(),
            client_msg_id: ClientMsgId::from_trusted("welcome"),
            kind: Some("welcome".into()),
            meta: None,
            reply_to: None,
            mentions: Vec::new(),
        };
        if let Err(e) = chat::send(node, &chat::system_identity(&who.app), welcome, chat::Via::Server).await {
            tracing::warn!(group = %id, error = %e, "welcome message not sent");
        }
    }
    Ok(view)
}

pub async fn list(node: &Node, who: &Identity) -> ApiResult<Vec<GroupSummary>> {
    let all = node.store.memberships(&who.app, who.user).await?;
    Ok(all
        .into_iter()
        .filter(|m| m.kind == ConversationKind::Group && m.is_active())
        .map(|m| GroupSummary {
            last_seq: m.last_seq,
            read_seq: m.read_seq,
            role: m.role,
            name: m.name.unwrap_or_default(),
            id: m.conversation_id,
        })
        .collect())
}

/// A group as its members (or the app) see it: profile and current members.
pub async fn show(node: &Node, actor: GroupActor<'_>, group: &GroupId) -> ApiResult<GroupView> {
    let not_found = || ApiError::new(ErrorCode::GroupNotFound, format!("no group {group} that you belong to"));
    if let GroupActor::User(who) = actor {
        match node.store.membership(&who.app, group.as_str(), who.user).await? {
            Some(m) if m.kind == ConversationKind::Group && m.is_active() => {}
            _ => return Err(not_found()),
        }
    }
    let profile = node.store.group_profile(actor.app(), group.as_str()).await?.ok_or_else(not_found)?;
    let members = node.store.group_members(actor.app(), group.as_str()).await?;
    Ok(GroupView::of(group.as_str(), &profile, &members))
}

#[derive(Debug, Serialize)]
pub struct MembersChanged {
    pub group: String,
    pub members: Vec<String>,
    /// Who did it; `null` for the app.
    pub by: Option<String>,
}

impl Encode for MembersChanged {
    fn encode(&self, o: &mut Object<'_>) {
        o.str("group", &self.group).strs("members", &self.members).opt_str("by", self.by.as_deref());
    }
}
