//! Tencent IM's REST API at `/compat/tencent/v4/{servicename}/{command}`: an app server written
//! for Tencent's independent-account mode switches to Natter by changing its domain; its
//! SDKAppID, key and administrator stay (the app's `tencent_sdkappid`, `tencent_key`,
//! `tencent_admin`).
//!
//! Tencent's ways are kept: the query string `sdkappid`, `identifier` (the administrator),
//! `usersig` (a UserSig minted for it), `random`, `contenttype=json`; JSON bodies with Tencent's
//! field names; and replies that are always HTTP 200 with `ActionStatus` ("OK" / "FAIL"),
//! `ErrorCode` (0 or Tencent's code) and `ErrorInfo`. Each command maps onto Natter's own
//! services, so their rules (bans, blocks, membership, roles as the app) hold here too.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value, json};

use super::server::identity;
use crate::{
    auth::{Identity, usersig},
    chat::{self, SendRequest, Via},
    domain::{AvatarUrl, ClientMsgId, GroupId, Meta, Name, Role, UserId, UserKind, random_id},
    error::{ApiError, ErrorCode},
    groups::{
        self, CreateGroupRequest, GroupActor, MembersRequest,
        admin::{self, MemberUpdate, UpdateGroupRequest},
    },
    node::Node,
    store::{
        apps::AppRecord,
        outbox::Hooks,
        users::{ImportUser, UserRecord},
    },
    tencent::{self, TimMessage},
};

/// A refusal as Tencent words it: HTTP 200, `ActionStatus: FAIL`.
#[derive(Debug)]
struct TimError {
    code: u32,
    info: String,
}

impl TimError {
    fn new(code: u32, info: impl Into<String>) -> Self {
        Self { code, info: info.into() }
    }

    fn into_response(self) -> HttpResponse {
        HttpResponse::Ok().json(json!({ "ActionStatus": "FAIL", "ErrorCode": self.code, "ErrorInfo": self.info }))
    }
}

impl From<sqlx::Error> for TimError {
    fn from(e: sqlx::Error) -> Self {
        Service::Any.error(ApiError::from(e))
    }
}

type TimResult<T> = Result<T, TimError>;

/// The service a command belongs to: Tencent numbers its errors per service.
#[derive(Clone, Copy, PartialEq)]
enum Service {
    Account,
    Message,
    Group,
    Any,
}

impl Service {
    fn of(name: &str) -> Service {
        match name {
            "im_open_login_svc" => Service::Account,
            "openim" => Service::Message,
            "group_open_http_svc" => Service::Group,
            _ => Service::Any,
        }
    }

    /// A missing or malformed field.
    fn param(self, info: impl Into<String>) -> TimError {
        let code = match self {
            Service::Account => 70402,
            Service::Message => 90001,
            Service::Group => 10004,
            Service::Any => 60003,
        };
        TimError::new(code, info)
    }

    /// Natter's refusals in this service's codes (documented in docs/migrating.md).
    fn error(self, e: ApiError) -> TimError {
        let group = self == Service::Group;
        let code = match e.code {
            ErrorCode::UserNotFound if group => 10004,
            ErrorCode::UserNotFound => 90012,
            ErrorCode::GroupNotFound | ErrorCode::GroupDissolved => 10010,
            ErrorCode::NotAMember => 10007,
            ErrorCode::Muted => 10017,
            ErrorCode::Blocked => 20007,
            ErrorCode::Banned => 70051,
            ErrorCode::Conflict => 10021,
            ErrorCode::GroupFull => 10014,
            ErrorCode::AdminOnly | ErrorCode::OwnerOnly | ErrorCode::Outranked | ErrorCode::OwnerProtected => 10007,
            ErrorCode::PayloadTooLarge if group => 10004,
            ErrorCode::PayloadTooLarge => 90005,
            ErrorCode::RateLimited => 60007,
            ErrorCode::RequestTimeout => 60008,
            ErrorCode::Internal | ErrorCode::Unavailable | ErrorCode::HookUnavailable => match self {
                Service::Account => 70500,
                Service::Message => 90994,
                Service::Group | Service::Any => 10002,
            },
            _ => return self.param(e.message.into_owned()),
        };
        TimError::new(code, e.message.into_owned())
    }
}

/// The query string's fields.
struct Query {
    sdkappid: String,
    identifier: String,
    usersig: String,
}

impl Query {
    fn parse(raw: &str) -> Query {
        let mut q = Query { sdkappid: String::new(), identifier: String::new(), usersig: String::new() };
        for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
            match key.as_ref() {
                "sdkappid" => q.sdkappid = value.into_owned(),
                "identifier" => q.identifier = value.into_owned(),
                "usersig" => q.usersig = value.into_owned(),
                _ => {}
            }
        }
        q
    }
}

/// Authenticates a call: the administrator's UserSig for the SDKAppID named. Returns the app.
async fn authenticate(node: &Node, req: &HttpRequest) -> TimResult<AppRecord> {
    let q = Query::parse(req.query_string());
    let sdkappid: u64 = q.sdkappid.parse().map_err(|_| TimError::new(60006, "sdkappid is missing or invalid"))?;
    if q.identifier.is_empty() || q.usersig.is_empty() {
        return Err(TimError::new(60004, "identifier and usersig are required"));
    }
    let refused = |code: u32, info: &str| {
        metrics::counter!("natter_auth_failures_total", "reason" => "tencent_usersig").increment(1);
        TimError::new(code, info)
    };
    let checked = match usersig::check(&node.store, &q.usersig).await.map_err(|e| Service::Any.error(e))? {
        Ok(checked) => checked,
        Err(r) => {
            let code = match r {
                usersig::Refusal::Malformed | usersig::Refusal::Version | usersig::Refusal::TooLong => 70003,
                usersig::Refusal::UnknownApp => 70020,
                usersig::Refusal::Signature | usersig::Refusal::NotYetValid => 70009,
                usersig::Refusal::Expired => 70001,
            };
            return Err(refused(code, &format!("usersig: {r}")));
        }
    };
    if checked.sdkappid != sdkappid {
        return Err(refused(70014, "sdkappid does not match the one the usersig was minted for"));
    }
    if checked.identifier != q.identifier {
        return Err(refused(70013, "identifier does not match the one the usersig was minted for"));
    }
    if checked.identifier != checked.app.settings.tencent_admin {
        return Err(refused(70403, "the REST API needs the app's administrator (tencent_admin) as identifier"));
    }
    Ok(checked.app)
}

/// `POST /compat/tencent/v4/{servicename}/{command}`.
pub async fn handle(req: HttpRequest, path: web::Path<(String, String)>, payload: web::Payload) -> HttpResponse {
    let (service, command) = path.into_inner();
    let node = match super::node(&req) {
        Ok(node) => node,
        Err(e) => return Service::Any.error(e).into_response(),
    };
    // Read here rather than by the extractor, so an oversized body is refused Tencent's way
    // (HTTP 200, ActionStatus FAIL) like every other refusal.
    let limit = node.config.http.max_body_bytes;
    let body = match payload.to_bytes_limited(limit).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => return TimError::new(60002, format!("the body could not be read: {e}")).into_response(),
        Err(_) => {
            let info = format!("the body exceeds {limit} bytes (http.max_body_bytes)");
            return TimError::new(if Service::of(&service) == Service::Group { 10004 } else { 90005 }, info)
                .into_response();
        }
    };
    match call(&node, &req, &service, &command, &body).await {
        Ok(Value::Object(fields)) => {
            let mut reply = Map::new();
            reply.insert("ActionStatus".into(), json!("OK"));
            reply.insert("ErrorCode".into(), json!(0));
            reply.insert("ErrorInfo".into(), json!(""));
            reply.extend(fields);
            HttpResponse::Ok().json(Value::Object(reply))
        }
        Ok(_) => Service::Any.error(ApiError::internal("a reply that is not an object")).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn call(node: &Node, req: &HttpRequest, service: &str, command: &str, body: &[u8]) -> TimResult<Value> {
    let app = authenticate(node, req).await?;
    let s = Service::of(service);
    let body = Body::parse(s, body)?;
    let tim = Tim { node, app: &app, s, body: &body };
    match (service, command) {
        ("im_open_login_svc", "account_import") => tim.account_import().await,
        ("im_open_login_svc", "multiaccount_import") => tim.multiaccount_import().await,
        ("im_open_login_svc", "account_check") => tim.account_check().await,
        ("openim", "querystate") => tim.query_state().await,
        ("openim", "sendmsg") => tim.send_msg().await,
        ("openim", "batchsendmsg") => tim.batch_send_msg().await,
        ("group_open_http_svc", "create_group") => tim.create_group().await,
        ("group_open_http_svc", "add_group_member") => tim.add_group_member().await,
        ("group_open_http_svc", "delete_group_member") => tim.delete_group_member().await,
        ("group_open_http_svc", "destroy_group") => tim.destroy_group().await,
        ("group_open_http_svc", "send_group_msg") => tim.send_group_msg().await,
        ("group_open_http_svc", "get_group_member_info") => tim.group_members().await,
        _ => Err(TimError::new(60002, format!("{service}/{command} is not a Tencent command Natter serves"))),
    }
}

/// A request body: a JSON object.
struct Body(Map<String, Value>);

impl Body {
    fn parse(s: Service, raw: &[u8]) -> TimResult<Body> {
        match serde_json::from_slice(raw) {
            Ok(Value::Object(map)) => Ok(Body(map)),
            Ok(_) => Err(s.param("the body must be a JSON object")),
            Err(e) => Err(s.param(format!("the body is not JSON: {e}"))),
        }
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str).filter(|v| !v.is_empty())
    }

    fn u64(&self, key: &str) -> Option<u64> {
        self.0.get(key).and_then(Value::as_u64)
    }

    fn list(&self, key: &str) -> Option<&Vec<Value>> {
        self.0.get(key).and_then(Value::as_array)
    }
}

/// A message ready to send: its text, its `meta.tencent`, and its deduplicating id.
struct Outgoing {
    text: String,
    meta: Meta,
    id: ClientMsgId,
}

/// One call: the node, the app it speaks for, the service and the body.
struct Tim<'a> {
    node: &'a Node,
    app: &'a AppRecord,
    s: Service,
    body: &'a Body,
}

impl Tim<'_> {
    fn user_id(&self, raw: &str) -> TimResult<UserId> {
        UserId::parse(raw).map_err(|e| self.s.param(format!("{raw}: {}", e.0)))
    }

    fn required_user(&self, key: &str) -> TimResult<UserId> {
        let raw = self.body.str(key).ok_or_else(|| self.s.param(format!("{key} is required")))?;
        self.user_id(raw)
    }

    /// A list of accounts, given as strings (`To_Account`) or objects (`{"Member_Account"}`).
    fn accounts(&self, key: &str, field: &str, max: usize) -> TimResult<Vec<String>> {
        let items = self.body.list(key).ok_or_else(|| self.s.param(format!("{key} must be a list")))?;
        if items.is_empty() || items.len() > max {
            return Err(self.s.param(format!("{key}: give 1-{max}")));
        }
        items
            .iter()
            .map(|item| {
                item.as_str()
                    .or_else(|| item.get(field).and_then(Value::as_str))
                    .map(str::to_string)
                    .ok_or_else(|| self.s.param(format!("{key}: every entry needs {field}")))
            })
            .collect()
    }

    fn group(&self) -> TimResult<GroupId> {
        let raw = self.body.str("GroupId").ok_or_else(|| self.s.param("GroupId is required"))?;
        GroupId::parse(raw).map_err(|e| TimError::new(10015, format!("GroupId {raw}: {}", e.0)))
    }

    async fn existing(&self, id: &UserId) -> TimResult<Option<UserRecord>> {
        Ok(self.node.store.user_by_id(&self.app.id, id).await?)
    }

    async fn as_user(&self, id: &UserId) -> TimResult<Identity> {
        let user = self.existing(id).await?.ok_or_else(|| {
            self.s.error(ApiError::new(ErrorCode::UserNotFound, format!("account {id} does not exist")))
        })?;
        identity(self.app, &user).map_err(|e| self.s.error(e))
    }

    /// The administrator as a user of the app (a service account, created on first use): what
    /// Tencent shows as the sender of a message sent without `From_Account`.
    async fn admin(&self) -> TimResult<Identity> {
        let id = self.user_id(&self.app.settings.tencent_admin)?;
        if let Some(user) = self.existing(&id).await? {
            return identity(self.app, &user).map_err(|e| self.s.error(e));
        }
        let fields = ImportUser { kind: Some(UserKind::Service), ..ImportUser::default() };
        let (user, _) = self
            .node
            .store
            .upsert_user(&self.app.id, &id, &fields, &Hooks::of(&self.app.settings), "import")
            .await
            .map_err(|e| self.s.error(ApiError::internal(format_args!("creating the administrator: {e}"))))?;
        identity(self.app, &user).map_err(|e| self.s.error(e))
    }

    async fn import(&self, id: &UserId, nick: Option<&Name>, face: Option<&AvatarUrl>) -> TimResult<()> {
        let fields = ImportUser { nickname: nick, avatar_url: face, ..ImportUser::default() };
        self.node
            .store
            .upsert_user(&self.app.id, id, &fields, &Hooks::of(&self.app.settings), "import")
            .await
            .map_err(|e| self.s.error(ApiError::internal(format_args!("importing {id}: {e}"))))?;
        Ok(())
    }

    /// `{UserID (or Identifier), Nick?, FaceUrl?}`: the account created, or its profile updated.
    async fn account_import(&self) -> TimResult<Value> {
        let raw = self.body.str("UserID").or_else(|| self.body.str("Identifier"));
        let id = self.user_id(raw.ok_or_else(|| self.s.param("UserID is required"))?)?;
        let nick = self.body.str("Nick").map(Name::parse).transpose().map_err(|e| self.s.param(e.0))?;
        let face = self.body.str("FaceUrl").map(AvatarUrl::parse).transpose().map_err(|e| self.s.param(e.0))?;
        self.import(&id, nick.as_ref(), face.as_ref()).await?;
        Ok(json!({}))
    }

    /// `{Accounts: [..100]}` → `{FailAccounts}`: those that could not be imported.
    async fn multiaccount_import(&self) -> TimResult<Value> {
        let mut failed = Vec::new();
        for raw in self.accounts("Accounts", "UserID", 100)? {
            let imported = match UserId::parse(raw.as_str()) {
                Ok(id) => self.import(&id, None, None).await.is_ok(),
                Err(_) => false,
            };
            if !imported {
                failed.push(raw);
            }
        }
        Ok(json!({ "FailAccounts": failed }))
    }

    /// `{CheckItem: [{UserID}..100]}` → `{ResultItem: [{UserID, ResultCode, AccountStatus}]}`.
    async fn account_check(&self) -> TimResult<Value> {
        let mut results = Vec::new();
        for raw in self.accounts("CheckItem", "UserID", 100)? {
            let found = match UserId::parse(raw.as_str()) {
                Ok(id) => self.existing(&id).await?.is_some(),
                Err(_) => false,
            };
            let status = if found { "Imported" } else { "NotImported" };
            results.push(json!({ "UserID": raw, "ResultCode": 0, "ResultInfo": "", "AccountStatus": status }));
        }
        Ok(json!({ "ResultItem": results }))
    }

    /// `{To_Account: [..500]}` → `{QueryResult: [{To_Account, Status}], ErrorList}`; an unknown
    /// account is listed in `ErrorList` with 70107.
    async fn query_state(&self) -> TimResult<Value> {
        let mut known = Vec::new();
        let mut errors = Vec::new();
        for raw in self.accounts("To_Account", "To_Account", 500)? {
            match UserId::parse(raw.as_str()) {
                Ok(id) => match self.existing(&id).await? {
                    Some(user) => known.push((raw, user.key)),
                    None => errors.push(json!({ "To_Account": raw, "ErrorCode": 70107 })),
                },
                Err(_) => errors.push(json!({ "To_Account": raw, "ErrorCode": 70107 })),
            }
        }
        let keys: Vec<_> = known.iter().map(|(_, key)| *key).collect();
        let online = self.node.store.online_users(&self.app.id, &keys).await?;
        let results: Vec<Value> = known
            .iter()
            .map(|(id, key)| json!({ "To_Account": id, "Status": if online.contains(key) { "Online" } else { "Offline" } }))
            .collect();
        Ok(json!({ "QueryResult": results, "ErrorList": errors }))
    }

    /// The message of a body (`MsgBody`, `CloudCustomData`) as Natter stores it, and the id that
    /// deduplicates it: `MsgRandom` (or `Random`) and `MsgSeq`, as Tencent deduplicates a resend.
    /// Built once, however many recipients it goes to.
    fn message(&self, random_key: &str) -> TimResult<Outgoing> {
        let body = self.body.list("MsgBody").ok_or_else(|| self.s.param("MsgBody must be a list"))?;
        let custom = self.body.str("CloudCustomData");
        let message = TimMessage::parse(body, custom).map_err(|e| self.s.param(e))?;
        let random = match self.body.u64(random_key) {
            Some(r) if r <= u64::from(u32::MAX) => r,
            _ => return Err(self.s.param(format!("{random_key} must be a 32-bit unsigned number"))),
        };
        let id = match self.body.u64("MsgSeq") {
            Some(seq) => format!("tim-{random}-{seq}"),
            None => format!("tim-{random}"),
        };
        Ok(Outgoing {
            text: message.text(),
            meta: message.to_meta().map_err(|e| self.s.param(e))?,
            id: ClientMsgId::parse(id).map_err(ApiError::caused_by).map_err(|e| self.s.error(e))?,
        })
    }

    async fn send(
        &self,
        from: &Identity,
        to: Option<UserId>,
        group: Option<GroupId>,
        m: &Outgoing,
    ) -> TimResult<chat::SendResult> {
        let request = SendRequest {
            recipient: to,
            group,
            content: m.text.clone(),
            client_msg_id: m.id.clone(),
            kind: None,
            meta: Some(m.meta.clone()),
            reply_to: None,
            mentions: Vec::new(),
        };
        chat::send(self.node, from, request, Via::Server).await.map_err(|e| self.s.error(e))
    }

    async fn sender(&self) -> TimResult<Identity> {
        match self.body.str("From_Account") {
            Some(raw) => self.as_user(&self.user_id(raw)?).await,
            None => self.admin().await,
        }
    }

    /// `{From_Account?, To_Account, MsgRandom, MsgSeq?, MsgBody, CloudCustomData?}` →
    /// `{MsgTime, MsgKey}`; without `From_Account` the administrator sends.
    async fn send_msg(&self) -> TimResult<Value> {
        let message = self.message("MsgRandom")?;
        let from = self.sender().await?;
        let to = self.required_user("To_Account")?;
        if self.existing(&to).await?.is_none() {
            return Err(TimError::new(90012, format!("To_Account {to} does not exist")));
        }
        let sent = self.send(&from, Some(to), None, &message).await?;
        Ok(json!({ "MsgTime": sent.created_at / 1000, "MsgKey": sent.message_id }))
    }

    /// `{From_Account?, To_Account: [..500], MsgRandom, MsgBody}` → `{MsgKey, ErrorList}`: one
    /// message to each; those that failed are listed with their code.
    async fn batch_send_msg(&self) -> TimResult<Value> {
        let message = self.message("MsgRandom")?;
        let from = self.sender().await?;
        let mut errors = Vec::new();
        let mut keys = Vec::new();
        for raw in self.accounts("To_Account", "To_Account", 500)? {
            let outcome = match UserId::parse(raw.as_str()) {
                Ok(to) if self.existing(&to).await?.is_some() => {
                    self.send(&from, Some(to), None, &message).await.map(|sent| sent.message_id)
                }
                _ => Err(TimError::new(90012, "To_Account does not exist")),
            };
            match outcome {
                Ok(message_id) => keys.push(message_id),
                Err(e) => errors.push(json!({ "To_Account": raw, "ErrorCode": e.code })),
            }
        }
        let key = keys.first().cloned().unwrap_or_default();
        Ok(json!({ "MsgKey": key, "ErrorList": errors }))
    }

    /// `{Owner_Account?, Type, GroupId?, Name, Notification?, FaceUrl?, MemberList?}` →
    /// `{GroupId}`. Without `Owner_Account` the administrator owns the group.
    async fn create_group(&self) -> TimResult<Value> {
        let name = Name::parse(self.body.str("Name").ok_or_else(|| self.s.param("Name is required"))?)
            .map_err(|e| self.s.param(e.0))?;
        if let Some(kind) = self.body.str("Type")
            && !tencent::GROUP_TYPES.contains(&kind)
        {
            return Err(self.s.param(format!("Type {kind} is not a group type Natter keeps")));
        }
        let id = match self.body.str("GroupId") {
            Some(_) => self.group()?,
            None => GroupId::parse(random_id("tgs_", 10)).map_err(|e| self.s.error(ApiError::caused_by(e)))?,
        };
        let owner = match self.body.str("Owner_Account") {
            Some(raw) => self.as_user(&self.user_id(raw)?).await?,
            None => self.admin().await?,
        };
        let mut members = Vec::new();
        let mut admins = Vec::new();
        for item in self.body.list("MemberList").map(Vec::as_slice).unwrap_or_default() {
            let raw = item.get("Member_Account").and_then(Value::as_str);
            let member =
                self.user_id(raw.ok_or_else(|| self.s.param("MemberList: every entry needs Member_Account"))?)?;
            if item.get("Role").and_then(Value::as_str) == Some("Admin") {
                admins.push(member.clone());
            }
            members.push(member);
        }
        let change = UpdateGroupRequest {
            avatar_url: self
                .body
                .str("FaceUrl")
                .map(|u| AvatarUrl::parse(u).map(Some))
                .transpose()
                .map_err(|e| self.s.param(e.0))?,
            announcement: self
                .body
                .str("Notification")
                .map(|a| crate::domain::Announcement::parse(a).map(Some))
                .transpose()
                .map_err(|e| self.s.param(e.0))?,
            ..UpdateGroupRequest::default()
        };
        let request = CreateGroupRequest { id: Some(id.clone()), name, members };
        groups::create(self.node, &owner, request).await.map_err(|e| self.s.error(e))?;
        let app = GroupActor::App(&self.app.id);
        if change.avatar_url.is_some() || change.announcement.is_some() {
            admin::update(self.node, app, &id, change).await.map_err(|e| self.s.error(e))?;
        }
        for member in &admins {
            let promote = MemberUpdate { role: Some(Role::Admin), muted_until: None };
            admin::update_member(self.node, app, &id, member, promote).await.map_err(|e| self.s.error(e))?;
        }
        Ok(json!({ "GroupId": id.as_str() }))
    }

    /// `{GroupId, MemberList: [{Member_Account}..300]}` → `{MemberList: [{Member_Account,
    /// Result}]}`: 1 added, 2 already a member, 0 failed (no such account).
    async fn add_group_member(&self) -> TimResult<Value> {
        let group = self.group()?;
        let wanted = self.accounts("MemberList", "Member_Account", 300)?;
        let app = GroupActor::App(&self.app.id);
        let view = groups::show(self.node, app, &group).await.map_err(|e| self.s.error(e))?;
        let mut results = Vec::new();
        let mut adding = Vec::new();
        for raw in wanted {
            let result = match UserId::parse(raw.as_str()) {
                Ok(_) if view.members.iter().any(|m| m.id == raw) => 2,
                Ok(id) if self.existing(&id).await?.is_some() => {
                    adding.push(id);
                    1
                }
                _ => 0,
            };
            results.push(json!({ "Member_Account": raw, "Result": result }));
        }
        if !adding.is_empty() {
            admin::add_members(self.node, app, &group, MembersRequest { members: adding })
                .await
                .map_err(|e| self.s.error(e))?;
        }
        Ok(json!({ "MemberList": results }))
    }

    /// `{GroupId, MemberToDel_Account: [..100]}`: each removed (accounts not in the group are
    /// passed over, as on Tencent).
    async fn delete_group_member(&self) -> TimResult<Value> {
        let group = self.group()?;
        let app = GroupActor::App(&self.app.id);
        for raw in self.accounts("MemberToDel_Account", "Member_Account", 100)? {
            let id = self.user_id(&raw)?;
            match admin::kick(self.node, app, &group, &id).await {
                Ok(_) => {}
                Err(e) if e.code == ErrorCode::NotAMember || e.code == ErrorCode::UserNotFound => {}
                Err(e) => return Err(self.s.error(e)),
            }
        }
        Ok(json!({}))
    }

    async fn destroy_group(&self) -> TimResult<Value> {
        let group = self.group()?;
        admin::dissolve(self.node, GroupActor::App(&self.app.id), &group).await.map_err(|e| self.s.error(e))?;
        Ok(json!({}))
    }

    /// `{GroupId, From_Account?, Random, MsgBody, CloudCustomData?}` → `{MsgTime, MsgSeq}`;
    /// without `From_Account` the app sends a system message (no member sender).
    async fn send_group_msg(&self) -> TimResult<Value> {
        let group = self.group()?;
        let message = self.message("Random")?;
        let from = match self.body.str("From_Account") {
            Some(raw) => self.as_user(&self.user_id(raw)?).await?,
            None => chat::system_identity(&self.app.id),
        };
        let sent = self.send(&from, None, Some(group), &message).await?;
        Ok(json!({ "MsgTime": sent.created_at / 1000, "MsgSeq": sent.seq }))
    }

    /// `{GroupId}` → `{MemberNum, MemberList: [{Member_Account, Role, ShutUpUntil}]}`.
    async fn group_members(&self) -> TimResult<Value> {
        let group = self.group()?;
        let view = groups::show(self.node, GroupActor::App(&self.app.id), &group).await.map_err(|e| self.s.error(e))?;
        let members: Vec<Value> = view
            .members
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::Owner => "Owner",
                    Role::Admin => "Admin",
                    Role::Member => "Member",
                };
                json!({ "Member_Account": m.id, "Role": role, "ShutUpUntil": m.muted_until.map_or(0, |t| t / 1000) })
            })
            .collect();
        Ok(json!({ "MemberNum": members.len(), "MemberList": members }))
    }
}
