//! RongCloud's server API at `/compat/rongcloud`: an app server written for RongCloud (its own
//! SDK included) switches to Natter by changing its base URL, App-Key and App-Secret (the app's
//! `api_key` and `api_secret`).
//!
//! RongCloud's ways are kept: its signature headers (`App-Key`, `Nonce`, `Timestamp`, `Signature`
//! = hex sha1(secret + nonce + timestamp), or their `RC-` aliases; seconds or milliseconds),
//! form-encoded bodies (repeated keys for lists; JSON objects are read too), and its replies:
//! `{"code":200,…}` on success, else `{"code","errorMessage"}` with RongCloud's code and HTTP
//! status. Each call maps onto Natter's own services, so its rules (mutes, bans, roles as the app)
//! hold here too. An app turns the mount off with `rongcloud_compat = false`.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use super::server::identity;
use crate::{
    accounts,
    auth::{Identity, server_sig::WINDOW_SECS},
    chat::{self, SendRequest, Via},
    domain::{AvatarUrl, ClientMsgId, ConversationId, GroupId, Meta, Name, UserId, random_id},
    error::{ApiError, ErrorCode},
    groups::{
        self, CreateGroupRequest, GroupActor, MembersRequest,
        admin::{self, MemberUpdate, UpdateGroupRequest},
    },
    lifecycle::{self, DeleteRequest, MessageRef, Scope},
    moderation::{self, BanRequest},
    node::Node,
    store::{
        apps::AppRecord,
        outbox::Hooks,
        users::{ImportUser, UserRecord},
    },
};

/// A refusal as RongCloud words it.
#[derive(Debug)]
struct RcError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl RcError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// 1002: a missing or malformed parameter.
    fn param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 1002, message)
    }

    fn signature(message: impl Into<String>) -> Self {
        metrics::counter!("natter_auth_failures_total", "reason" => "rongcloud_signature").increment(1);
        Self::new(StatusCode::UNAUTHORIZED, 1004, message)
    }

    fn into_response(self) -> HttpResponse {
        HttpResponse::build(self.status).json(json!({ "code": self.code, "errorMessage": self.message }))
    }
}

/// Natter's refusals in RongCloud's codes (documented in docs/migrating.md).
impl From<ApiError> for RcError {
    fn from(e: ApiError) -> Self {
        let (status, code) = match e.code {
            ErrorCode::NotAMember => (StatusCode::FORBIDDEN, 22406),
            ErrorCode::Muted => (StatusCode::FORBIDDEN, 22408),
            ErrorCode::Blocked => (StatusCode::FORBIDDEN, 405),
            ErrorCode::RateLimited => (StatusCode::TOO_MANY_REQUESTS, 1008),
            ErrorCode::PayloadTooLarge => (StatusCode::BAD_REQUEST, 1005),
            ErrorCode::Internal | ErrorCode::Unavailable | ErrorCode::HookUnavailable => {
                (StatusCode::INTERNAL_SERVER_ERROR, 1000)
            }
            ErrorCode::RequestTimeout => (StatusCode::GATEWAY_TIMEOUT, 1050),
            _ => (StatusCode::BAD_REQUEST, 1002),
        };
        RcError::new(status, code, e.message.into_owned())
    }
}

impl From<sqlx::Error> for RcError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::from(e).into()
    }
}

type RcResult<T> = Result<T, RcError>;

/// A request's parameters, in order, repeated keys kept.
struct Params(Vec<(String, String)>);

impl Params {
    /// A form body, or a JSON object (lists become repeated keys).
    fn parse(req: &HttpRequest, body: &[u8]) -> RcResult<Params> {
        let json = req.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"));
        if !json {
            return Ok(Params(form_urlencoded::parse(body).into_owned().collect()));
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| RcError::param(format!("the body is not JSON: {e}")))?;
        let Value::Object(map) = value else { return Err(RcError::param("the body must be a JSON object")) };
        let mut pairs = Vec::new();
        for (key, value) in map {
            let items = match value {
                Value::Array(items) => items,
                other => vec![other],
            };
            for item in items {
                let text = match item {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                pairs.push((key.clone(), text));
            }
        }
        Ok(Params(pairs))
    }

    fn one(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    fn required(&self, key: &str) -> RcResult<&str> {
        self.one(key).filter(|v| !v.is_empty()).ok_or_else(|| RcError::param(format!("{key} is required")))
    }

    fn user(&self, key: &str) -> RcResult<UserId> {
        parse_user(self.required(key)?)
    }

    /// Every value of a repeated key (at least one, at most `max`).
    fn users(&self, key: &str, max: usize) -> RcResult<Vec<UserId>> {
        let all = self.all(key);
        if all.is_empty() || all.len() > max {
            return Err(RcError::param(format!("{key}: give 1-{max}")));
        }
        all.into_iter().map(parse_user).collect()
    }

    fn group(&self, key: &str) -> RcResult<GroupId> {
        GroupId::parse(self.required(key)?).map_err(|e| RcError::param(e.0))
    }
}

fn parse_user(raw: &str) -> RcResult<UserId> {
    UserId::parse(raw).map_err(|e| RcError::param(e.0))
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    let rc = format!("rc-{name}");
    [name, rc.as_str()]
        .into_iter()
        .find_map(|n| req.headers().get(n).and_then(|v| v.to_str().ok()))
        .filter(|v| !v.is_empty())
}

/// RongCloud's signature: hex sha1 of secret, nonce and timestamp as sent, in that order (or
/// sorted, as some integration guides compute it).
fn signatures(secret: &str, nonce: &str, timestamp: &str) -> [String; 2] {
    let sha1 = |parts: &[&str]| {
        let mut h = Sha1::new();
        for p in parts {
            h.update(p.as_bytes());
        }
        hex::encode(h.finalize())
    };
    let mut sorted = [secret, nonce, timestamp];
    sorted.sort_unstable();
    [sha1(&[secret, nonce, timestamp]), sha1(&sorted)]
}

/// Authenticates a call; returns the app it speaks for.
async fn authenticate(node: &Node, req: &HttpRequest) -> RcResult<AppRecord> {
    let missing = |name: &str| RcError::signature(format!("{name} header is required"));
    let app_key = header(req, "app-key").ok_or_else(|| missing("App-Key"))?;
    let nonce = header(req, "nonce").ok_or_else(|| missing("Nonce"))?;
    let timestamp = header(req, "timestamp").ok_or_else(|| missing("Timestamp"))?;
    let signature = header(req, "signature").ok_or_else(|| missing("Signature"))?.to_ascii_lowercase();
    if nonce.len() > 64 || timestamp.len() > 20 {
        return Err(RcError::signature("Nonce or Timestamp is too long"));
    }
    let app = node
        .store
        .app_by_api_key(app_key)
        .await
        .map_err(ApiError::caused_by)?
        .ok_or_else(|| RcError::new(StatusCode::UNAUTHORIZED, 1001, "unknown App-Key"))?;
    let matched = signatures(app.api_secret.expose(), nonce, timestamp)
        .iter()
        .any(|expected| bool::from(expected.as_bytes().ct_eq(signature.as_bytes())));
    if !matched {
        return Err(RcError::signature("signature does not match"));
    }
    let raw: i64 = timestamp.parse().map_err(|_| RcError::signature("Timestamp must be a unix time"))?;
    // Milliseconds from some SDKs, seconds from others.
    let ts = if raw > 100_000_000_000 { raw / 1000 } else { raw };
    let now = crate::domain::now_millis() / 1000;
    if (now - ts).abs() > WINDOW_SECS {
        return Err(RcError::signature("Timestamp is more than 300 s from the server's clock"));
    }
    // A replay is the same signed tuple (see auth::server_sig).
    if !node.store.use_nonce(&app.id, &format!("rc:{signature}"), (ts + WINDOW_SECS + 1) * 1000).await? {
        return Err(RcError::signature("this signed request was already received (a replay)"));
    }
    if !app.settings.rongcloud_compat {
        return Err(RcError::new(StatusCode::FORBIDDEN, 1009, "the RongCloud API is turned off for this app"));
    }
    Ok(app)
}

/// `POST /compat/rongcloud/{method}.json`.
pub async fn handle(req: HttpRequest, path: web::Path<String>, payload: web::Payload) -> HttpResponse {
    let node = match super::node(&req) {
        Ok(node) => node,
        Err(e) => return RcError::from(e).into_response(),
    };
    // Read here rather than by the extractor, so an oversized body gets RongCloud's code too.
    let limit = node.config.http.max_body_bytes;
    let body = match payload.to_bytes_limited(limit).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => return RcError::param(format!("the body could not be read: {e}")).into_response(),
        Err(_) => {
            let message = format!("the body exceeds {limit} bytes (http.max_body_bytes)");
            return RcError::new(StatusCode::BAD_REQUEST, 1005, message).into_response();
        }
    };
    match call(&node, &req, path.as_str(), &body).await {
        Ok(mut reply) => {
            reply["code"] = json!(200);
            HttpResponse::Ok().json(reply)
        }
        Err(e) => e.into_response(),
    }
}

async fn call(node: &Node, req: &HttpRequest, method: &str, body: &[u8]) -> RcResult<Value> {
    let app = authenticate(node, req).await?;
    let p = Params::parse(req, body)?;
    match method {
        "user/getToken.json" => get_token(node, &app, &p).await,
        "user/refresh.json" => refresh_user(node, &app, &p).await,
        "user/info.json" => user_info(node, &app, &p).await,
        "user/checkOnline.json" => check_online(node, &app, &p).await,
        "user/block.json" => block(node, &app, &p).await,
        "user/unblock.json" => unblock(node, &app, &p).await,
        "user/block/query.json" => blocked(node, &app).await,
        "message/private/publish.json" => publish(node, &app, &p, Target::Users).await,
        "message/group/publish.json" => publish(node, &app, &p, Target::Groups).await,
        "message/recall.json" => recall(node, &app, &p).await,
        "group/create.json" => join(node, &app, &p, true).await,
        "group/join.json" => join(node, &app, &p, false).await,
        "group/quit.json" => quit(node, &app, &p).await,
        "group/dismiss.json" => dismiss(node, &app, &p).await,
        "group/refresh.json" => refresh_group(node, &app, &p).await,
        "group/user/query.json" => group_users(node, &app, &p).await,
        "group/user/gag/add.json" => gag(node, &app, &p, true).await,
        "group/user/gag/rollback.json" => gag(node, &app, &p, false).await,
        "group/user/gag/list.json" => gagged(node, &app, &p).await,
        "group/ban/add.json" => mute_groups(node, &app, &p, true).await,
        "group/ban/rollback.json" => mute_groups(node, &app, &p, false).await,
        other => {
            Err(RcError::new(StatusCode::NOT_FOUND, 404, format!("{other} is not a RongCloud method Natter serves")))
        }
    }
}

async fn existing(node: &Node, app: &AppRecord, id: &UserId) -> RcResult<UserRecord> {
    node.store.user_by_id(&app.id, id).await?.ok_or_else(|| RcError::param(format!("userId {id} does not exist")))
}

async fn as_user(node: &Node, app: &AppRecord, id: &UserId) -> RcResult<Identity> {
    Ok(identity(app, &existing(node, app, id).await?)?)
}

fn name_of(p: &Params, key: &str) -> RcResult<Option<Name>> {
    p.one(key).filter(|v| !v.is_empty()).map(|v| Name::parse(v).map_err(|e| RcError::param(e.0))).transpose()
}

fn portrait_of(p: &Params) -> RcResult<Option<AvatarUrl>> {
    p.one("portraitUri")
        .filter(|v| !v.is_empty())
        .map(|v| AvatarUrl::parse(v).map_err(|e| RcError::param(e.0)))
        .transpose()
}

/// `userId`, `name`, `portraitUri` → `{userId, token}`: the user is created or updated.
async fn get_token(node: &Node, app: &AppRecord, p: &Params) -> RcResult<Value> {
    let user_id = p.user("userId")?;
    let (name, avatar_url) = (name_of(p, "name")?, portrait_of(p)?);
    let request = accounts::AppTokenRequest {
        user_id: &user_id,
        name: name.as_ref(),
        avatar_url: avatar_url.as_ref(),
        ttl: None,
    };
    let issued = accounts::app_token(node, app, request).await?;
    Ok(json!({ "userId": issued.user.id, "token": issued.token }))
}

async fn refresh_user(node: &Node, app: &AppRecord, p: &Params) -> RcResult<Value> {
    let user_id = p.user("userId")?;
    existing(node, app, &user_id).await?;
    let (name, avatar_url) = (name_of(p, "name")?, portrait_of(p)?);
    let fields = ImportUser { first_name: name.as_ref(), avatar_url: avatar_url.as_ref(), ..ImportUser::default() };
    node.store
        .upsert_user(&app.id, &user_id, &fields, &Hooks::of(&app.settings), "import")
        .await
        .map_err(|e| ApiError::internal(format_args!("updating {user_id}: {e}")))?;
    Ok(json!({}))
}

async fn user_info(node: &Node, app: &AppRecord, p: &Params) -> RcResult<Value> {
    let user = existing(node, app, &p.user("userId")?).await?;
    Ok(json!({
        "userName": user.first_name,
        "userPortrait": user.avatar_url.unwrap_or_default(),
        "createTime": datetime(user.created_at),
    }))
}

async fn check_online(node: &Node, app: &AppRecord, p: &Params) -> RcResult<Value> {
    let user = existing(node, app, &p.user("userId")?).await?;
    let online = node.store.online_users(&app.id, &[user.key]).await?;
    Ok(json!({ "status": if online.contains(&user.key) { "1" } else { "0" } }))
}

/// `userId` (1-20, repeated), `minute` (1-43200): banned, sockets closed with 4503.
async fn block(node: &Node, app: &AppRecord, p: &Params) -> RcResult<Value> {
    let users = p.users("userId", 20)?;
    let minutes: u64 = p.required("minute")?.parse().map_err(|_| RcError::param("minute must be a number"))?;
    if !(1..=43200).contains(&minutes) {
        return Err(RcError::param("minute must be 1-43200"));
    }
    let mut records = Vec::new();
    for id in &users {
        records.push(existing(node, app, id).await?);
    }
    for user in &records {
        moderation::ban(node, &app.id, user, BanRequest { minutes: Some(minutes), reason: None }).await?;
    }
    Ok(json!({}))
}

async fn unblock(node: &Node, app: &AppRecord, p: &Params) -> RcResult<Value> {
    let users = p.users("userId", 20)?;
    for id in &users {
        let user = existing(node, app, id).await?;
        moderation::lift(node, &app.id, &user).await?;
    }
    Ok(json!({}))
}

async fn blocked(node: &Node, app: &AppRecord) -> RcResult<Value> {
    let bans = moderation::bans(node, &app.id).await?;
    let users: Vec<Value> = bans
        .iter()
        .map(|b| json!({ "userId": b.user, "blockEndTime": b.until.map_or_else(|| "9999-12-31 23:59:59".to_string(), datetime) }))
        .collect();
    Ok(json!({ "users": users }))
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Users,
    Groups,
}

/// The text of a RongCloud message and the meta that keeps it whole: `RC:TxtMsg`'s `content`
/// field is the text; every message keeps `objectName` and its content (JSON when it parses) in
/// `meta.rongcloud`, so a client renders any type.
fn message_of(object_name: &str, raw: &str) -> RcResult<(String, Meta)> {
    let parsed: Option<Value> = serde_json::from_str(raw).ok();
    let text = match (&parsed, object_name) {
        (Some(v), "RC:TxtMsg") => v["content"].as_str().map(str::to_string),
        _ => None,
    }
    .filter(|t| !t.is_empty())
    .unwrap_or_else(|| raw.to_string());
    let meta = json!({ "rongcloud": { "objectName": object_name, "content": parsed.unwrap_or_else(|| json!(raw)) } });
    let meta = Meta::parse(&meta.to_string()).map_err(|e| RcError::param(e.0))?;
    Ok((text, meta))
}

/// `fromUserId`, `toUserId` or `toGroupId` (repeated), `objectName`, `content`: one message to
/// each, sent as the user by the app (mutes do not apply; bans, blocks and membership do).
async fn publish(node: &Node, app: &AppRecord, p: &Params, target: Target) -> RcResult<Value> {
    let from = as_user(node, app, &p.user("fromUserId")?).await?;
    let object_name = p.required("objectName")?;
    let (text, meta) = message_of(object_name, p.required("content")?)?;
    let (key, max) = match target {
        Target::Users => ("toUserId", 1000),
        Target::Groups => ("toGroupId", 3),
    };
    let targets = p.all(key);
    if targets.is_empty() || targets.len() > max {
        return Err(RcError::param(format!("{key}: give 1-{max}")));
    }
    let mut uids = Vec::new();
    for to in targets {
        let (recipient, group) = match target {
            Target::Users => (Some(parse_user(to)?), None),
            Target::Groups => (None, Some(GroupId::parse(to).map_err(|e| RcError::param(e.0))?)),
        };
        let request = SendRequest {
            recipient,
            group,
            content: text.clone(),
            client_msg_id: ClientMsgId::parse(random_id("rc_", 12)).map_err(ApiError::caused_by)?,
            kind: None,
            meta: Some(meta.clone()),
            reply_to: None,
            mentions: Vec::new(),
        };
        let sent = chat::send(node, &from, request, Via::Server).await?;
        let who = if target == Target::Users { "userId" } else { "groupId" };
        uids.push(json!({ who: to, "messageUID": sent.message_id }));
    }
    Ok(json!({ "messageUIDs": uids }))
}

/// `fromUserId`, `conversationType` (1 private, 3 group), `targetId`, `messageUID`: the user's
/// own message recalled, at any time (as on RongCloud); `isDelete=1` deletes it instead of
/// leaving a tombstone.
async fn recall(node: &Node, app: &AppRecord, p: &Params) -> RcResult<Value> {
    let from = existing(node, app, &p.user("fromUserId")?).await?;
    let conversation = match p.required("conversationType")? {
        "1" => {
            let target = existing(node, app, &p.user("targetId")?).await?;
            crate::domain::direct_conversation_id(from.key, target.key)
        }
        "3" => ConversationId::parse(p.group("targetId")?.as_str()).map_err(|e| RcError::param(e.0))?,
        _ => return Err(RcError::param("conversationType must be 1 (private) or 3 (group)")),
    };
    let uid = p.required("messageUID")?;
    let not_found = || RcError::new(StatusCode::BAD_REQUEST, 25101, format!("no message {uid} of fromUserId here"));
    let (seq, sender) = node.store.message_by_id(&app.id, conversation.as_str(), uid).await?.ok_or_else(not_found)?;
    if sender != from.key {
        return Err(not_found());
    }
    let system = chat::system_identity(&app.id);
    if p.one("isDelete") == Some("1") {
        let request = DeleteRequest { conversation, seq, scope: Scope::All };
        lifecycle::delete(node, lifecycle::Actor::App(&system), request).await?;
    } else {
        lifecycle::recall(node, lifecycle::Actor::App(&system), MessageRef { conversation, seq }).await?;
    }
    Ok(json!({}))
}

/// `group/create` and `group/join`: `userId` (repeated), `groupId`, `groupName`. A group that
/// does not exist is created, owned by the first user; one that does gains the users (as on
/// RongCloud, creating an existing group joins them).
async fn join(node: &Node, app: &AppRecord, p: &Params, create: bool) -> RcResult<Value> {
    let users = p.users("userId", 1000)?;
    let group = p.group("groupId")?;
    let name = name_of(p, "groupName")?;
    match node.store.group_profile(&app.id, group.as_str()).await? {
        // Dismissed: RongCloud starts the id afresh, owned by the first user.
        Some(profile) if profile.dissolved_at.is_some() => {
            let name = match name {
                Some(name) => name,
                None => Name::parse(profile.name.as_str()).map_err(|e| RcError::param(e.0))?,
            };
            admin::recreate(node, &app.id, &group, &name, &users[0], &users[1..]).await?;
            return Ok(json!({}));
        }
        Some(_) => {
            let members = MembersRequest { members: users };
            admin::add_members(node, GroupActor::App(&app.id), &group, members).await?;
            return Ok(json!({}));
        }
        None => {}
    }
    let name = match name {
        Some(name) => name,
        None if create => return Err(RcError::param("groupName is required")),
        None => Name::parse(group.as_str()).map_err(|e| RcError::param(e.0))?,
    };
    let owner = as_user(node, app, &users[0]).await?;
    let request = CreateGroupRequest { id: Some(group), name, members: users[1..].to_vec() };
    groups::create(node, &owner, request).await?;
    Ok(json!({}))
}

/// `userId` (repeated), `groupId`: each user leaves (an owner hands the group over).
async fn quit(node: &Node, app: &AppRecord, p: &Params) -> RcResult<Value> {
    let users = p.users("userId", 1000)?;
    let group = p.group("groupId")?;
    for id in &users {
        let who = as_user(node, app, id).await?;
        match admin::leave(node, &who, &group).await {
            Ok(_) => {}
            // Not (or no longer) in it: RongCloud answers 200 all the same.
            Err(e) if e.code == ErrorCode::GroupNotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(json!({}))
}

async fn dismiss(node: &Node, app: &AppRecord, p: &Params) -> RcResult<Value> {
    let group = p.group("groupId")?;
    admin::dissolve(node, GroupActor::App(&app.id), &group).await?;
    Ok(json!({}))
}

async fn refresh_group(node: &Node, app: &AppRecord, p: &Params) -> RcResult<Value> {
    let group = p.group("groupId")?;
    let name = name_of(p, "groupName")?.ok_or_else(|| RcError::param("groupName is required"))?;
    let change = UpdateGroupRequest { name: Some(name), ..UpdateGroupRequest::default() };
    admin::update(node, GroupActor::App(&app.id), &group, change).await?;
    Ok(json!({}))
}

async fn group_users(node: &Node, app: &AppRecord, p: &Params) -> RcResult<Value> {
    let group = p.group("groupId")?;
    let view = groups::show(node, GroupActor::App(&app.id), &group).await?;
    let users: Vec<Value> = view.members.iter().map(|m| json!({ "id": m.id })).collect();
    Ok(json!({ "users": users }))
}

/// `userId` (repeated), `groupId`, `minute` (1-43200): the members may not send until then
/// (`rollback` lifts it).
async fn gag(node: &Node, app: &AppRecord, p: &Params, on: bool) -> RcResult<Value> {
    let users = p.users("userId", 20)?;
    let group = p.group("groupId")?;
    let until = if on {
        let minutes: i64 = p.required("minute")?.parse().map_err(|_| RcError::param("minute must be a number"))?;
        if !(1..=43200).contains(&minutes) {
            return Err(RcError::param("minute must be 1-43200"));
        }
        Some(crate::domain::now_millis() + minutes * 60_000)
    } else {
        None
    };
    for id in &users {
        let change = MemberUpdate { role: None, muted_until: Some(until) };
        admin::update_member(node, GroupActor::App(&app.id), &group, id, change).await?;
    }
    Ok(json!({}))
}

async fn gagged(node: &Node, app: &AppRecord, p: &Params) -> RcResult<Value> {
    let group = p.group("groupId")?;
    let view = groups::show(node, GroupActor::App(&app.id), &group).await?;
    let users: Vec<Value> = view
        .members
        .iter()
        .filter_map(|m| m.muted_until.map(|t| json!({ "userId": m.id, "time": datetime(t) })))
        .collect();
    Ok(json!({ "users": users }))
}

/// `groupId` (repeated): only the owner and admins (and the app) may send (`rollback` lifts it).
async fn mute_groups(node: &Node, app: &AppRecord, p: &Params, muted: bool) -> RcResult<Value> {
    let all = p.all("groupId");
    if all.is_empty() || all.len() > 20 {
        return Err(RcError::param("groupId: give 1-20"));
    }
    for raw in all {
        let group = GroupId::parse(raw).map_err(|e| RcError::param(e.0))?;
        let change = UpdateGroupRequest { muted: Some(muted), ..UpdateGroupRequest::default() };
        admin::update(node, GroupActor::App(&app.id), &group, change).await?;
    }
    Ok(json!({}))
}

/// Unix ms as RongCloud writes times: `yyyy-MM-dd HH:mm:ss` (UTC).
fn datetime(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_rongclouds_and_the_sorted_variant_some_guides_use() {
        // RongCloud's published example: secret, nonce 14314, timestamp 1408706337.
        let [official, sorted] = signatures("Y1W2MeFwwwRxa0", "14314", "1408706337");
        assert_eq!(official, "e107e3819638b81a00383951d1d871197910ffe6");
        assert_ne!(official, sorted);
    }

    #[test]
    fn times_read_as_rongcloud_writes_them() {
        assert_eq!(datetime(0), "1970-01-01 00:00:00");
        assert_eq!(datetime(1_408_706_337_000), "2014-08-22 11:18:57");
        assert_eq!(datetime(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn a_text_message_keeps_its_text_and_every_type_its_content() {
        let (text, meta) = message_of("RC:TxtMsg", r#"{"content":"hello","extra":"x"}"#).unwrap();
        assert_eq!(text, "hello");
        assert!(meta.as_str().contains(r#""objectName":"RC:TxtMsg""#));
        let (text, meta) = message_of("App:Custom", "not json").unwrap();
        assert_eq!(text, "not json");
        assert!(meta.as_str().contains(r#""content":"not json""#));
    }
}
