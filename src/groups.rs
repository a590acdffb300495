//! Groups: creation, membership and roles, with the events they push to members' sessions.
//!
//! Membership changes travel as one `Membership` envelope on the app's control subject: every
//! node updates its Router's group map and delivers the event frame to the local members.

use serde::{Deserialize, Serialize};

use crate::{
    auth::Identity,
    bus::Envelope,
    chat,
    domain::{ClientMsgId, ConversationKind, GroupId, Name, Role, UserId, UserKey, random_id},
    error::{ApiError, ApiResult, ErrorCode},
    node::Node,
    store::{
        conversations::{GroupMember, GroupWriteError},
        outbox::Hooks,
    },
    wire::{Encode, Object, event_frame},
};

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
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    pub id: String,
    pub name: String,
    pub last_seq: i64,
    pub members: Vec<MemberView>,
}

impl Encode for MemberView {
    fn encode(&self, o: &mut Object<'_>) {
        o.str("id", &self.id).str("role", self.role.as_str());
    }
}

impl Encode for GroupView {
    fn encode(&self, o: &mut Object<'_>) {
        o.str("id", &self.id).str("name", &self.name).int("last_seq", self.last_seq).list("members", &self.members);
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

fn group_error(e: GroupWriteError, max: usize) -> ApiError {
    match e {
        GroupWriteError::Exists => ApiError::new(ErrorCode::Conflict, "group id is already taken"),
        GroupWriteError::NotFound => ApiError::new(ErrorCode::GroupNotFound, "no such group"),
        GroupWriteError::Full(_) => ApiError::new(ErrorCode::GroupFull, format!("a group has at most {max} members")),
        GroupWriteError::NotAMember => ApiError::new(ErrorCode::NotAMember, "not a member of this group"),
        GroupWriteError::Db(e) => e.into(),
    }
}

/// Resolves public ids to keys; every id must exist.
async fn resolve(node: &Node, who: &Identity, ids: &[UserId]) -> ApiResult<Vec<(UserKey, String)>> {
    let mut unique: Vec<UserId> = ids.to_vec();
    unique.sort();
    unique.dedup();
    let found = node.store.users_by_ids(&who.app, &unique).await?;
    if found.len() != unique.len() {
        let missing: Vec<&str> =
            unique.iter().filter(|id| !found.iter().any(|u| u.id == id.as_str())).map(UserId::as_str).collect();
        return Err(ApiError::new(ErrorCode::UserNotFound, format!("unknown users: {}", missing.join(", "))));
    }
    Ok(found.into_iter().map(|u| (u.key, u.id)).collect())
}

fn views(members: &[GroupMember]) -> Vec<MemberView> {
    members.iter().map(|m| MemberView { id: m.id.clone(), role: m.role }).collect()
}

fn publish_membership(node: &Node, who: &Identity, group: &str, added: Vec<i64>, removed: Vec<i64>, frame: Vec<u8>) {
    let envelope = Envelope::Membership { group: group.to_string(), added, removed };
    node.fanout.control(who.app.as_str(), &envelope, &frame);
}

/// The caller's active membership of a group, or `group_not_found`.
async fn my_role(node: &Node, who: &Identity, group: &GroupId) -> ApiResult<Role> {
    match node.store.membership(&who.app, group.as_str(), who.user).await? {
        Some(m) if m.kind == ConversationKind::Group && m.is_active() => Ok(m.role),
        _ => Err(ApiError::new(ErrorCode::GroupNotFound, format!("no group {group} that you belong to"))),
    }
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
    let members = resolve(node, who, &wanted).await?;
    let keys: Vec<UserKey> = members.iter().map(|(k, _)| *k).filter(|k| *k != who.user).collect();
    if keys.len() + 1 > max {
        return Err(ApiError::new(ErrorCode::GroupFull, format!("a group has at most {max} members")));
    }
    let planned: Vec<MemberView> = std::iter::once(MemberView { id: who.id.as_str().to_string(), role: Role::Owner })
        .chain(
            members
                .iter()
                .filter(|(k, _)| *k != who.user)
                .map(|(_, id)| MemberView { id: id.clone(), role: Role::Member }),
        )
        .collect();
    let planned_view =
        GroupView { id: id.as_str().to_string(), name: req.name.as_str().to_string(), last_seq: 0, members: planned };
    let hooks = Hooks::of(&app.settings);
    let event = hooks.wants("group.created").then(|| serde_json::json!({ "group": planned_view, "by": who.id }));
    node.store
        .create_group(&who.app, &id, req.name.as_str(), who.user, &keys, event.as_ref())
        .await
        .map_err(|e| group_error(e, max))?;
    let stored = node.store.group_members(&who.app, id.as_str()).await?;
    let view =
        GroupView { id: id.as_str().to_string(), name: req.name.into_inner(), last_seq: 0, members: views(&stored) };
    let frame = event_frame("group.created", &view);
    publish_membership(
        node,
        who,
        id.as_str(),
        stored.iter().map(|m| m.key.0).collect(),
        Vec::new(),
        frame.into_bytes(),
    );
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

pub async fn show(node: &Node, who: &Identity, group: &GroupId) -> ApiResult<GroupView> {
    my_role(node, who, group).await?;
    let m = node
        .store
        .membership(&who.app, group.as_str(), who.user)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::GroupNotFound, "no such group"))?;
    let members = node.store.group_members(&who.app, group.as_str()).await?;
    Ok(GroupView {
        id: m.conversation_id,
        name: m.name.unwrap_or_default(),
        last_seq: m.last_seq,
        members: views(&members),
    })
}

#[derive(Debug, Serialize)]
pub struct MembersChanged {
    pub group: String,
    pub members: Vec<String>,
    pub by: String,
}

impl Encode for MembersChanged {
    fn encode(&self, o: &mut Object<'_>) {
        o.str("group", &self.group).strs("members", &self.members).str("by", &self.by);
    }
}

/// Owners and admins add members; they read history from the group's current seq on.
pub async fn add_members(
    node: &Node,
    who: &Identity,
    group: &GroupId,
    req: MembersRequest,
) -> ApiResult<MembersChanged> {
    if !my_role(node, who, group).await?.can_manage() {
        return Err(ApiError::new(ErrorCode::Forbidden, "only the owner or an admin can add members"));
    }
    let max = node.config.chat.max_group_size;
    let users = resolve(node, who, &req.members).await?;
    let hooks = Hooks::of(&node.app(&who.app).await?.settings);
    let added = node
        .store
        .add_group_members(&who.app, group.as_str(), &users, max, Some((&hooks, who.id.as_str())))
        .await
        .map_err(|e| group_error(e, max))?;
    let ids: Vec<String> = users.iter().filter(|(k, _)| added.contains(k)).map(|(_, id)| id.clone()).collect();
    let changed = MembersChanged { group: group.as_str().to_string(), members: ids, by: who.id.as_str().to_string() };
    if !added.is_empty() {
        let frame = event_frame("group.member_added", &changed);
        publish_membership(
            node,
            who,
            group.as_str(),
            added.iter().map(|k| k.0).collect(),
            Vec::new(),
            frame.into_bytes(),
        );
    }
    Ok(changed)
}

/// Removes a member (owner/admin), or leaves (anyone but the owner, for themself).
pub async fn remove_member(node: &Node, who: &Identity, group: &GroupId, member: &UserId) -> ApiResult<MembersChanged> {
    let my = my_role(node, who, group).await?;
    let target = node
        .store
        .membership_by_public_id(&who.app, group.as_str(), member)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotAMember, format!("{member} is not a member of this group")))?;
    let leaving = target.key == who.user;
    if target.role == Role::Owner {
        return Err(ApiError::new(ErrorCode::Forbidden, "the owner cannot be removed or leave"));
    }
    let may_remove = leaving || my == Role::Owner || (my == Role::Admin && target.role == Role::Member);
    if !may_remove {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only the owner, or an admin for plain members, can remove others",
        ));
    }
    let max = node.config.chat.max_group_size;
    let hooks = Hooks::of(&node.app(&who.app).await?.settings);
    let event = hooks
        .wants("group.member_removed")
        .then(|| serde_json::json!({ "group": group, "members": [target.id], "by": who.id }));
    let removed = node
        .store
        .remove_group_member(&who.app, group.as_str(), target.key, event.as_ref())
        .await
        .map_err(|e| group_error(e, max))?;
    if !removed {
        return Err(ApiError::new(ErrorCode::NotAMember, format!("{member} is not a member of this group")));
    }
    let changed = MembersChanged {
        group: group.as_str().to_string(),
        members: vec![target.id.clone()],
        by: who.id.as_str().to_string(),
    };
    let frame = event_frame("group.member_removed", &changed);
    publish_membership(node, who, group.as_str(), Vec::new(), vec![target.key.0], frame.into_bytes());
    Ok(changed)
}
