//! The server API (`/v1/server/...`): what an app's backend calls. Every request is signed
//! (see `auth::server_sig`) and acts for the app whose key signed it, never another.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde::{Deserialize, Serialize};

use super::{node, ok, parse_body, user_id};
use crate::{
    accounts::{self, UserView},
    auth::{Identity, server_sig},
    bus::Envelope,
    chat,
    domain::{AvatarUrl, ClientMsgId, Email, GroupId, Name, UserId, UserKind},
    error::{ApiError, ApiResult, CloseCode, ErrorCode},
    node::Node,
    presence::presence_of,
    store::{
        apps::AppRecord,
        outbox::Hooks,
        users::{ImportUser, UserRecord, UserWriteError},
    },
};

pub(super) async fn signed(req: &HttpRequest, body: &[u8]) -> ApiResult<(Node, AppRecord)> {
    let node = node(req)?;
    let app = server_sig::verify(&node, req, body).await?;
    Ok((node, app))
}

pub(super) fn identity(app: &AppRecord, user: &UserRecord) -> ApiResult<Identity> {
    Ok(Identity {
        app: app.id.clone(),
        user: user.key,
        id: UserId::parse(user.id.clone()).map_err(ApiError::caused_by)?,
        kind: user.kind,
        session_id: None,
        device_id: None,
    })
}

pub(super) async fn user(node: &Node, app: &AppRecord, id: &UserId) -> ApiResult<UserRecord> {
    node.store
        .user_by_id(&app.id, id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UserNotFound, format!("no user {id}")))
}

fn write_error(e: UserWriteError) -> ApiError {
    match e {
        UserWriteError::EmailTaken => ApiError::new(ErrorCode::EmailTaken, "email is already registered"),
        UserWriteError::IdTaken => ApiError::new(ErrorCode::Conflict, "user id is already taken"),
        UserWriteError::NotGuest => ApiError::new(ErrorCode::NotGuest, "not a guest"),
        UserWriteError::Db(e) => e.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    user_id: UserId,
    #[serde(default)]
    name: Option<Name>,
    #[serde(default)]
    avatar_url: Option<AvatarUrl>,
    /// Seconds; at most the app's `max_user_token_ttl`.
    #[serde(default)]
    ttl: Option<u64>,
}

#[derive(Serialize)]
struct TokenResponse {
    user_id: String,
    token: String,
    expires_at: i64,
}

/// `POST /v1/server/users/token`: a user token for the app's user, creating the user if missing
/// (RongCloud getToken).
pub async fn user_token(req: HttpRequest, body: web::Bytes) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    let input: TokenRequest = parse_body(&body)?;
    let request = accounts::AppTokenRequest {
        user_id: &input.user_id,
        name: input.name.as_ref(),
        avatar_url: input.avatar_url.as_ref(),
        ttl: input.ttl,
    };
    let issued = accounts::app_token(&node, &app, request).await?;
    Ok(ok(
        StatusCode::OK,
        TokenResponse { user_id: issued.user.id, token: issued.token, expires_at: issued.expires_at },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    id: UserId,
    #[serde(default)]
    first_name: Option<Name>,
    #[serde(default)]
    last_name: Option<Name>,
    #[serde(default)]
    nickname: Option<Name>,
    #[serde(default)]
    avatar_url: Option<AvatarUrl>,
    #[serde(default)]
    email: Option<Email>,
    #[serde(default)]
    kind: Option<UserKind>,
}

/// `POST /v1/server/users`: import or update a user (idempotent): 201 created, 200 updated.
pub async fn import_user(req: HttpRequest, body: web::Bytes) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    let input: ImportRequest = parse_body(&body)?;
    let fields = ImportUser {
        first_name: input.first_name.as_ref(),
        last_name: input.last_name.as_ref(),
        nickname: input.nickname.as_ref(),
        avatar_url: input.avatar_url.as_ref(),
        email: input.email.as_ref(),
        kind: input.kind,
    };
    let (user, created) = node
        .store
        .upsert_user(&app.id, &input.id, &fields, &Hooks::of(&app.settings), "import")
        .await
        .map_err(write_error)?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(ok(status, UserView::of_self(&user)))
}

/// `GET /v1/server/users/{id}`.
pub async fn get_user(req: HttpRequest, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, b"").await?;
    let found = user(&node, &app, &user_id(&path)?).await?;
    Ok(ok(StatusCode::OK, UserView::of_self(&found)))
}

/// `PATCH /v1/server/users/{id}/change-id/{new_id}`: the user keeps everything; live sessions
/// keep working and adopt the new id; the old id is free afterwards.
pub async fn change_id(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    let (old, new) = path.into_inner();
    let (old, new) = (user_id(&old)?, user_id(&new)?);
    let found = user(&node, &app, &old).await?;
    node.store.change_user_id(&app.id, found.key, &new).await.map_err(write_error)?;
    node.fanout.control(app.id.as_str(), &Envelope::Renamed { user: found.key.0, id: new.as_str().to_string() }, b"");
    Ok(ok(StatusCode::OK, serde_json::json!({ "id": new, "previous_id": old })))
}

/// `POST /v1/server/users/{id}/revoke-tokens`: every token issued so far stops working and the
/// user's sockets close with 4502 on every node.
pub async fn revoke_tokens(req: HttpRequest, path: web::Path<String>, body: web::Bytes) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    let found = user(&node, &app, &user_id(&path)?).await?;
    node.store.revoke_user_tokens(&app.id, found.key).await?;
    // Signed out everywhere: none of their devices is theirs to wake any more.
    node.store.remove_user_devices(&app.id, found.key).await?;
    accounts::kick(&node, &app.id, found.key.0, None, CloseCode::TokenRevoked);
    Ok(ok(StatusCode::OK, serde_json::json!({ "revoked": true })))
}

/// `GET /v1/server/users/{id}/presence`.
pub async fn user_presence(req: HttpRequest, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, b"").await?;
    let found = user(&node, &app, &user_id(&path)?).await?;
    let mut views = presence_of(&node.store, &app.id, std::slice::from_ref(&found)).await?;
    Ok(ok(StatusCode::OK, views.pop()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceQuery {
    user_ids: Vec<UserId>,
}

/// `POST /v1/server/presence/query` `{user_ids}` → the known users' states and the unknown ids.
pub async fn presence_query(req: HttpRequest, body: web::Bytes) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    let input: PresenceQuery = parse_body(&body)?;
    if input.user_ids.len() > 1000 {
        return Err(ApiError::validation("user_ids: at most 1000"));
    }
    let users = node.store.users_by_ids(&app.id, &input.user_ids).await?;
    let unknown: Vec<&str> =
        input.user_ids.iter().filter(|id| !users.iter().any(|u| u.id == id.as_str())).map(UserId::as_str).collect();
    let presence = presence_of(&node.store, &app.id, &users).await?;
    Ok(ok(StatusCode::OK, serde_json::json!({ "presence": presence, "unknown": unknown })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerMessage {
    /// The sending user; absent for a system message from the app itself.
    #[serde(default)]
    from: Option<UserId>,
    #[serde(default)]
    recipient: Option<UserId>,
    #[serde(default)]
    group: Option<GroupId>,
    content: String,
    client_msg_id: ClientMsgId,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    meta: Option<crate::domain::Meta>,
    #[serde(default)]
    reply_to: Option<i64>,
    #[serde(default)]
    mentions: Vec<UserId>,
}

/// `POST /v1/server/messages`: send as a user or as the app (`from` absent: `sender` is null),
/// with the same seq and idempotency rules as clients: 201 stored, 200 known `client_msg_id`.
pub async fn send_message(req: HttpRequest, body: web::Bytes) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    let input: ServerMessage = parse_body(&body)?;
    let sender = match &input.from {
        Some(id) => identity(&app, &user(&node, &app, id).await?)?,
        None => chat::system_identity(&app.id),
    };
    let send = chat::SendRequest {
        recipient: input.recipient,
        group: input.group,
        content: input.content,
        client_msg_id: input.client_msg_id,
        kind: input.kind,
        meta: input.meta,
        reply_to: input.reply_to,
        mentions: input.mentions,
    };
    let result = chat::send(&node, &sender, send, chat::Via::Server).await?;
    let status = if result.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(ok(status, result))
}
