//! The server API's side of a message's life and of the conversation list: the app edits,
//! recalls and deletes any message (no time windows, no before-send hook), reacts for a user,
//! and reads a user's conversation list.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde::Deserialize;

use super::{
    chat::EditBody,
    conversation_id, ok, ok_page, parse_body,
    server::{identity, signed, user},
    user_id,
};
use crate::{
    chat,
    domain::{ReactionKey, UserId},
    error::{ApiError, ApiResult},
    inbox::{self, ListRequest},
    lifecycle::{self, Actor, DeleteRequest, EditRequest, MessageRef, ReactRequest, Scope},
};

/// `PATCH /v1/server/conversations/{id}/messages/{seq}`.
pub async fn edit(req: HttpRequest, path: web::Path<(String, i64)>, body: web::Bytes) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    let (id, seq) = path.into_inner();
    let input: EditBody = parse_body(&body)?;
    let system = chat::system_identity(&app.id);
    let edit = EditRequest { conversation: conversation_id(&id)?, seq, content: input.content, meta: input.meta };
    Ok(ok(StatusCode::OK, lifecycle::edit(&node, Actor::App(&system), edit).await?))
}

/// `POST /v1/server/conversations/{id}/messages/{seq}/recall`.
pub async fn recall(req: HttpRequest, path: web::Path<(String, i64)>, body: web::Bytes) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    let (id, seq) = path.into_inner();
    let system = chat::system_identity(&app.id);
    let target = MessageRef { conversation: conversation_id(&id)?, seq };
    Ok(ok(StatusCode::OK, lifecycle::recall(&node, Actor::App(&system), target).await?))
}

/// `DELETE /v1/server/conversations/{id}/messages/{seq}`: for everyone.
pub async fn delete(req: HttpRequest, path: web::Path<(String, i64)>, body: web::Bytes) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    let (id, seq) = path.into_inner();
    let system = chat::system_identity(&app.id);
    let target = DeleteRequest { conversation: conversation_id(&id)?, seq, scope: Scope::All };
    Ok(ok(StatusCode::OK, lifecycle::delete(&node, Actor::App(&system), target).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForUser {
    user: UserId,
}

/// `PUT /v1/server/conversations/{id}/messages/{seq}/reactions/{key}?user=…`.
pub async fn react_on(
    req: HttpRequest,
    path: web::Path<(String, i64, String)>,
    q: web::Query<ForUser>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    react(req, path, q, body, true).await
}

/// `DELETE /v1/server/conversations/{id}/messages/{seq}/reactions/{key}?user=…`.
pub async fn react_off(
    req: HttpRequest,
    path: web::Path<(String, i64, String)>,
    q: web::Query<ForUser>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    react(req, path, q, body, false).await
}

async fn react(
    req: HttpRequest,
    path: web::Path<(String, i64, String)>,
    q: web::Query<ForUser>,
    body: web::Bytes,
    on: bool,
) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    let (id, seq, key) = path.into_inner();
    let who = identity(&app, &user(&node, &app, &q.user).await?)?;
    let key = ReactionKey::parse(key).map_err(|e| ApiError::validation(e.0))?;
    let target = ReactRequest { conversation: conversation_id(&id)?, seq, key, on };
    Ok(ok(StatusCode::OK, lifecycle::react(&node, Actor::App(&who), target).await?))
}

/// `GET /v1/server/users/{id}/conversations`: the user's conversation list, as they see it.
pub async fn conversations(
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<ListRequest>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    let id = user_id(&path)?;
    let who = user(&node, &app, &id).await?;
    let page = inbox::list(&node, &app.id, who.key, q.into_inner()).await?;
    Ok(ok_page(&page.conversations, page.cursor.as_deref()))
}
