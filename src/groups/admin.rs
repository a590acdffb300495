//! Administering a group: its profile and switches, members' roles and mutes, kicks, leaving
//! and dissolving, by its members as their roles allow (`roles::check`) or by the app.
//!
//! Every act runs in one transaction under the group's row lock (`store::groups::GroupTx`): the
//! actor's role and the target's are read there, checked, and the change, its audit entry and its
//! webhook event written together, so two concurrent acts (or an act and a send) never decide on
//! what the other is changing. Members hear of the change once it has committed.

use serde::{Deserialize, Serialize};

use super::{GroupActor, GroupView, MemberView, MembersChanged, MembersRequest, group_error, group_full, publish};
use crate::{
    auth::Identity,
    domain::{Announcement, AvatarUrl, GroupId, Name, Role, UserId, now_millis},
    error::{ApiError, ApiResult, ErrorCode},
    node::Node,
    roles::{self, Act, Actor},
    store::{
        audit::NewAudit,
        groups::{GroupMember, GroupTx},
        outbox::Hooks,
    },
    wire::{Encode, Object, event_frame},
};

/// The longest mute: ten years (a member muted longer should be kicked).
const MAX_MUTE_MS: i64 = 10 * 366 * 24 * 3600 * 1000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroupRequest {
    #[serde(default)]
    pub name: Option<Name>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "crate::domain::present")]
    pub avatar_url: Option<Option<AvatarUrl>>,
    /// `null` (or `""`) removes it.
    #[serde(default, deserialize_with = "crate::domain::present")]
    pub announcement: Option<Option<Announcement>>,
    /// Only the owner and admins may send while it is on.
    #[serde(default)]
    pub muted: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberUpdate {
    /// `owner` hands the group over (the owner becomes an admin); `admin` or `member`.
    #[serde(default)]
    pub role: Option<Role>,
    /// Unix ms until which the member may not send; `null` lifts the mute.
    #[serde(default, deserialize_with = "crate::domain::present")]
    pub muted_until: Option<Option<i64>>,
}

/// A group's profile as its `group.updated` event and webhook carry it.
#[derive(Debug, Serialize)]
pub struct GroupUpdated<'a> {
    pub group: &'a str,
    pub name: &'a str,
    pub avatar_url: Option<&'a str>,
    pub announcement: Option<&'a str>,
    pub muted: bool,
    pub by: Option<&'a str>,
}

impl Encode for GroupUpdated<'_> {
    fn encode(&self, o: &mut Object<'_>) {
        o.str("group", self.group)
            .str("name", self.name)
            .opt_str("avatar_url", self.avatar_url)
            .opt_str("announcement", self.announcement)
            .bool("muted", self.muted)
            .opt_str("by", self.by);
    }
}

/// Members whose role or mute changed (`group.member_updated`).
#[derive(Debug, Serialize)]
pub struct MembersUpdated {
    pub group: String,
    pub members: Vec<MemberView>,
    pub by: Option<String>,
}

impl Encode for MembersUpdated {
    fn encode(&self, o: &mut Object<'_>) {
        o.str("group", &self.group).list("members", &self.members).opt_str("by", self.by.as_deref());
    }
}

#[derive(Debug, Serialize)]
pub struct Dissolved {
    pub group: String,
    pub dissolved_at: i64,
    pub by: Option<String>,
}

impl Encode for Dissolved {
    fn encode(&self, o: &mut Object<'_>) {
        o.str("group", &self.group).int("dissolved_at", self.dissolved_at).opt_str("by", self.by.as_deref());
    }
}

#[derive(Debug, Serialize)]
pub struct Left {
    pub group: String,
    /// Who owns the group now, when the owner left.
    pub new_owner: Option<String>,
}

/// An act under way: the locked group, who acts (as the table knows them) and their membership.
struct Acting<'a> {
    tx: GroupTx,
    actor: GroupActor<'a>,
    rule: Actor,
    me: Option<GroupMember>,
    hooks: Hooks,
}

impl<'a> Acting<'a> {
    /// Locks the group and reads the actor's standing: 404 when the group is unknown or the
    /// actor is not in it, 410 when it was dissolved (unless `dissolved_ok`).
    async fn begin(node: &Node, actor: GroupActor<'a>, group: &GroupId, dissolved_ok: bool) -> ApiResult<Acting<'a>> {
        let hooks = Hooks::of(&node.app(actor.app()).await?.settings);
        let mut tx = node.store.begin_group(actor.app(), group).await.map_err(group_error)?;
        let (rule, me) = match actor {
            GroupActor::App(_) => (Actor::App, None),
            GroupActor::User(who) => match tx.member(who.user).await? {
                Some(m) => (Actor::Member(m.role), Some(m)),
                None => {
                    return Err(ApiError::new(
                        ErrorCode::GroupNotFound,
                        format!("no group {group} that you belong to"),
                    ));
                }
            },
        };
        if tx.profile.dissolved_at.is_some() && !dissolved_ok {
            return Err(ApiError::new(ErrorCode::GroupDissolved, format!("group {group} was dissolved")));
        }
        Ok(Acting { tx, actor, rule, me, hooks })
    }

    fn check(&self, act: Act) -> ApiResult<()> {
        roles::check(self.rule, act).map_err(ApiError::from)
    }

    /// A current member named by the request: 404 `user_not_found` for nobody of that id,
    /// 403 `not_a_member` for a user outside the group.
    async fn target(&mut self, node: &Node, user: &UserId) -> ApiResult<GroupMember> {
        if let Some(m) = self.tx.member_by_id(user).await? {
            return Ok(m);
        }
        if node.store.user_key_by_id(self.actor.app(), user).await?.is_none() {
            return Err(ApiError::new(ErrorCode::UserNotFound, format!("no user {user}")));
        }
        Err(ApiError::new(ErrorCode::NotAMember, format!("{user} is not a member of this group")))
    }

    async fn audit(&mut self, action: &str, target: Option<&str>, data: Option<serde_json::Value>) -> ApiResult<()> {
        let group = self.tx.group().as_str().to_string();
        let entry = NewAudit {
            actor: self.actor.id(),
            action,
            target_user: target,
            target_group: Some(&group),
            reason: None,
            data: data.as_ref(),
        };
        Ok(self.tx.audit(&entry).await?)
    }

    async fn webhook(&mut self, event: &str, data: &impl Serialize) -> ApiResult<()> {
        if self.hooks.wants(event) {
            let value = serde_json::to_value(data).map_err(ApiError::caused_by)?;
            self.tx.event(event, &value).await?;
        }
        Ok(())
    }
}

/// Changes a group's name, avatar, announcement or group-wide mute (owner, admins, the app).
pub async fn update(
    node: &Node,
    actor: GroupActor<'_>,
    group: &GroupId,
    req: UpdateGroupRequest,
) -> ApiResult<GroupView> {
    if req.name.is_none() && req.avatar_url.is_none() && req.announcement.is_none() && req.muted.is_none() {
        return Err(ApiError::validation("give at least one of name, avatar_url, announcement, muted"));
    }
    let mut acting = Acting::begin(node, actor, group, false).await?;
    acting.check(Act::Update)?;
    let mut profile = acting.tx.profile.clone();
    if let Some(name) = req.name {
        profile.name = name.into_inner();
    }
    if let Some(url) = req.avatar_url {
        profile.avatar_url = url.map(AvatarUrl::into_inner);
    }
    if let Some(text) = req.announcement {
        profile.announcement = text.map(Announcement::into_inner).filter(|t| !t.is_empty());
    }
    if let Some(muted) = req.muted {
        profile.muted = muted;
    }
    let before = acting.tx.profile.clone();
    acting.tx.set_profile(profile.clone()).await?;
    let updated = GroupUpdated {
        group: group.as_str(),
        name: &profile.name,
        avatar_url: profile.avatar_url.as_deref(),
        announcement: profile.announcement.as_deref(),
        muted: profile.muted,
        by: actor.id(),
    };
    let changes = serde_json::json!({
        "name": (before.name != profile.name).then_some(&profile.name),
        "muted": (before.muted != profile.muted).then_some(profile.muted),
        "avatar_url_changed": before.avatar_url != profile.avatar_url,
        "announcement_changed": before.announcement != profile.announcement,
    });
    acting.audit("group.updated", None, Some(changes)).await?;
    acting.webhook("group.updated", &updated).await?;
    let frame = event_frame("group.updated", &updated);
    acting.tx.commit("group_update").await?;
    publish(node, actor.app(), group.as_str(), Vec::new(), Vec::new(), frame);
    super::show(node, actor, group).await
}

/// Ends a group (owner, the app): members keep its history; sends get 410 `group_dissolved`.
pub async fn dissolve(node: &Node, actor: GroupActor<'_>, group: &GroupId) -> ApiResult<Dissolved> {
    let mut acting = Acting::begin(node, actor, group, false).await?;
    acting.check(Act::Dissolve)?;
    let at = now_millis();
    acting.tx.dissolve(at).await?;
    let dissolved =
        Dissolved { group: group.as_str().to_string(), dissolved_at: at, by: actor.id().map(str::to_string) };
    acting.audit("group.dissolved", None, None).await?;
    acting.webhook("group.dissolved", &dissolved).await?;
    acting.tx.commit("group_dissolve").await?;
    publish(node, actor.app(), group.as_str(), Vec::new(), Vec::new(), event_frame("group.dissolved", &dissolved));
    tracing::info!(app = %actor.app(), group = %group, "group dissolved");
    Ok(dissolved)
}

/// Starts a dissolved group afresh under its id, as the app (RongCloud creates a dismissed
/// group's id anew): its former members leave (keeping what they could read), the given users
/// join at the current seq (so the old history is not theirs), `owner` owns it. Members hear
/// `group.created`; the app gets the `group.created` webhook and an audit entry.
pub async fn recreate(
    node: &Node,
    app: &crate::domain::AppId,
    group: &GroupId,
    name: &Name,
    owner: &UserId,
    members: &[UserId],
) -> ApiResult<GroupView> {
    let mut wanted = vec![owner.clone()];
    wanted.extend(members.iter().filter(|m| *m != owner).cloned());
    let users = super::resolve(node, app, &wanted).await?;
    let max = node.config.chat.max_group_size;
    if users.len() > max {
        return Err(group_full(max));
    }
    let actor = GroupActor::App(app);
    let mut acting = Acting::begin(node, actor, group, true).await?;
    if acting.tx.profile.dissolved_at.is_none() {
        return Err(ApiError::new(ErrorCode::Conflict, format!("group {group} exists and was not dissolved")));
    }
    let former = acting.tx.end_all_memberships().await?;
    acting.tx.revive(name.as_str()).await?;
    let added = acting.tx.add_members(&users).await?;
    let Some((owner_key, _)) = users.iter().find(|(_, id)| id == owner.as_str()) else {
        return Err(ApiError::internal("the owner was not resolved"));
    };
    acting.tx.set_role(*owner_key, Role::Owner).await?;
    let planned: Vec<GroupMember> = added
        .iter()
        .map(|(key, id)| GroupMember {
            key: *key,
            id: id.clone(),
            role: if key == owner_key { Role::Owner } else { Role::Member },
            silenced_until: None,
        })
        .collect();
    let view = GroupView::of(group.as_str(), &acting.tx.profile, &planned);
    acting.audit("group.recreated", Some(owner.as_str()), None).await?;
    acting.webhook("group.created", &serde_json::json!({ "group": view, "by": null })).await?;
    acting.tx.commit("group_recreate").await?;
    let keys: Vec<i64> = added.iter().map(|(k, _)| k.0).collect();
    let gone: Vec<i64> = former.iter().map(|k| k.0).filter(|k| !keys.contains(k)).collect();
    publish(node, app, group.as_str(), keys, gone, event_frame("group.created", &view));
    Ok(view)
}

/// Changes a member's role (granting or revoking admin, or handing the group over) or mute.
pub async fn update_member(
    node: &Node,
    actor: GroupActor<'_>,
    group: &GroupId,
    user: &UserId,
    req: MemberUpdate,
) -> ApiResult<MemberView> {
    if req.role.is_none() && req.muted_until.is_none() {
        return Err(ApiError::validation("give at least one of role, muted_until"));
    }
    let now = now_millis();
    if let Some(Some(until)) = req.muted_until
        && !(now < until && until <= now + MAX_MUTE_MS)
    {
        return Err(ApiError::validation(
            "muted_until: a future unix time in milliseconds, at most ten years ahead (null lifts the mute)",
        ));
    }
    let mut acting = Acting::begin(node, actor, group, false).await?;
    let mut target = acting.target(node, user).await?;
    let mut changed = Vec::new();
    if let Some(role) = req.role {
        match role {
            Role::Owner => acting.check(Act::TransferOwnership(target.role))?,
            Role::Admin | Role::Member => acting.check(Act::SetRole(target.role))?,
        }
    }
    if req.muted_until.is_some() {
        acting.check(Act::Mute(target.role))?;
    }
    if let Some(role) = req.role
        && role != target.role
    {
        if role == Role::Owner {
            // The owner steps down to admin; one owner at any time.
            let owner = match &acting.me {
                Some(me) if me.role == Role::Owner => Some(me.clone()),
                _ => acting.tx.owner().await?,
            };
            if let Some(mut owner) = owner {
                acting.tx.set_role(owner.key, Role::Admin).await?;
                owner.role = Role::Admin;
                acting
                    .audit("group.owner_transferred", Some(&target.id), Some(serde_json::json!({ "from": owner.id })))
                    .await?;
                changed.push(owner);
            }
        } else {
            let data = serde_json::json!({ "from": target.role.as_str(), "to": role.as_str() });
            acting.audit("group.role_changed", Some(&target.id), Some(data)).await?;
        }
        acting.tx.set_role(target.key, role).await?;
        target.role = role;
    }
    if let Some(until) = req.muted_until {
        acting.tx.set_silenced(target.key, until).await?;
        target.silenced_until = until;
        let (action, data) = match until {
            Some(t) => ("group.member_muted", Some(serde_json::json!({ "until": t }))),
            None => ("group.member_unmuted", None),
        };
        acting.audit(action, Some(&target.id), data).await?;
    }
    let view = MemberView::of(&target);
    changed.push(target);
    let updated = MembersUpdated {
        group: group.as_str().to_string(),
        members: changed.iter().map(MemberView::of).collect(),
        by: actor.id().map(str::to_string),
    };
    acting.webhook("group.member_updated", &updated).await?;
    acting.tx.commit("group_update_member").await?;
    publish(node, actor.app(), group.as_str(), Vec::new(), Vec::new(), event_frame("group.member_updated", &updated));
    Ok(view)
}

/// Adds members (owner, admins, the app); they read history from the group's current seq on.
pub async fn add_members(
    node: &Node,
    actor: GroupActor<'_>,
    group: &GroupId,
    req: MembersRequest,
) -> ApiResult<MembersChanged> {
    let max = node.config.chat.max_group_size;
    let users = super::resolve(node, actor.app(), &req.members).await?;
    let mut acting = Acting::begin(node, actor, group, false).await?;
    acting.check(Act::AddMembers)?;
    let before = acting.tx.member_count().await?;
    let added = acting.tx.add_members(&users).await?;
    if before + added.len() > max {
        return Err(group_full(max));
    }
    let changed = MembersChanged {
        group: group.as_str().to_string(),
        members: added.iter().map(|(_, id)| id.clone()).collect(),
        by: actor.id().map(str::to_string),
    };
    if !added.is_empty() {
        acting.webhook("group.member_added", &changed).await?;
    }
    acting.tx.commit("group_add_members").await?;
    if !added.is_empty() {
        let keys = added.iter().map(|(k, _)| k.0).collect();
        publish(node, actor.app(), group.as_str(), keys, Vec::new(), event_frame("group.member_added", &changed));
    }
    Ok(changed)
}

/// Removes another member (owner; admins for plain members; the app for anyone but the owner).
pub async fn kick(node: &Node, actor: GroupActor<'_>, group: &GroupId, user: &UserId) -> ApiResult<MembersChanged> {
    let mut acting = Acting::begin(node, actor, group, false).await?;
    let target = acting.target(node, user).await?;
    acting.check(Act::Kick(target.role))?;
    acting.tx.end_membership(target.key).await?;
    let changed = MembersChanged {
        group: group.as_str().to_string(),
        members: vec![target.id.clone()],
        by: actor.id().map(str::to_string),
    };
    acting.audit("group.member_kicked", Some(&target.id), None).await?;
    acting.webhook("group.member_removed", &changed).await?;
    acting.tx.commit("group_kick").await?;
    let frame = event_frame("group.member_removed", &changed);
    publish(node, actor.app(), group.as_str(), Vec::new(), vec![target.key.0], frame);
    Ok(changed)
}

/// Leaves a group. An owner hands it to the longest-standing admin, else the longest-standing
/// member; the last one out dissolves it.
pub async fn leave(node: &Node, who: &Identity, group: &GroupId) -> ApiResult<Left> {
    let actor = GroupActor::User(who);
    let mut acting = Acting::begin(node, actor, group, true).await?;
    acting.check(Act::Leave)?;
    let Some(me) = acting.me.clone() else {
        return Err(ApiError::new(ErrorCode::GroupNotFound, format!("no group {group} that you belong to")));
    };
    let mut new_owner = None;
    if me.role == Role::Owner {
        match acting.tx.successor(me.key).await? {
            Some(mut heir) => {
                acting.tx.set_role(heir.key, Role::Owner).await?;
                acting
                    .audit("group.owner_transferred", Some(&heir.id), Some(serde_json::json!({ "from": me.id })))
                    .await?;
                heir.role = Role::Owner;
                new_owner = Some(heir);
            }
            None if acting.tx.profile.dissolved_at.is_none() => {
                let at = now_millis();
                acting.tx.dissolve(at).await?;
                acting.audit("group.dissolved", None, Some(serde_json::json!({ "last_member_left": true }))).await?;
                let dissolved =
                    Dissolved { group: group.as_str().to_string(), dissolved_at: at, by: Some(me.id.clone()) };
                acting.webhook("group.dissolved", &dissolved).await?;
            }
            None => {}
        }
    }
    acting.tx.end_membership(me.key).await?;
    let changed =
        MembersChanged { group: group.as_str().to_string(), members: vec![me.id.clone()], by: Some(me.id.clone()) };
    let updated = new_owner.as_ref().map(|heir| MembersUpdated {
        group: group.as_str().to_string(),
        members: vec![MemberView::of(heir)],
        by: Some(me.id.clone()),
    });
    if let Some(updated) = &updated {
        acting.webhook("group.member_updated", updated).await?;
    }
    acting.webhook("group.member_removed", &changed).await?;
    acting.tx.commit("group_leave").await?;
    if let Some(updated) = &updated {
        publish(node, &who.app, group.as_str(), Vec::new(), Vec::new(), event_frame("group.member_updated", updated));
    }
    let frame = event_frame("group.member_removed", &changed);
    publish(node, &who.app, group.as_str(), Vec::new(), vec![me.key.0], frame);
    Ok(Left { group: group.as_str().to_string(), new_owner: new_owner.map(|m| m.id) })
}

/// `DELETE …/members/{user}`: a member naming themself leaves; anyone else is kicked.
pub async fn remove_member(
    node: &Node,
    actor: GroupActor<'_>,
    group: &GroupId,
    user: &UserId,
) -> ApiResult<MembersChanged> {
    if let GroupActor::User(who) = actor
        && who.id == *user
    {
        leave(node, who, group).await?;
        let me = Some(who.id.as_str().to_string());
        return Ok(MembersChanged {
            group: group.as_str().to_string(),
            members: vec![user.as_str().to_string()],
            by: me,
        });
    }
    kick(node, actor, group, user).await
}
