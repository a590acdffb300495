//! `/v1/conversations`.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};

use super::{Authed, conversation_id, node, ok, ok_page, parse_body};
use crate::{
    chat::{self, HistoryRequest},
    domain::{Meta, ReactionKey},
    error::{ApiError, ApiResult},
    inbox::{self, ListRequest, PrefsRequest},
    lifecycle::{self, Actor, DeleteRequest, EditRequest, MessageRef, ReactRequest, Scope},
};

pub async fn conversations(req: HttpRequest, who: Authed, q: web::Query<ListRequest>) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let page = inbox::list(&node, &who.0.app, who.0.user, q.into_inner()).await?;
    Ok(ok_page(&page.conversations, page.cursor.as_deref()))
}

pub async fn set_conversation(
    req: HttpRequest,
    who: Authed,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let conv = conversation_id(&path)?;
    let prefs: PrefsRequest = parse_body(&body)?;
    Ok(ok(StatusCode::OK, inbox::set_prefs(&node, &who.0, &conv, prefs).await?))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EditBody {
    pub(super) content: String,
    #[serde(default)]
    pub(super) meta: Option<Meta>,
}

pub async fn edit(
    req: HttpRequest,
    who: Authed,
    path: web::Path<(String, i64)>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let (id, seq) = path.into_inner();
    let body: EditBody = parse_body(&body)?;
    let edit = EditRequest { conversation: conversation_id(&id)?, seq, content: body.content, meta: body.meta };
    Ok(ok(StatusCode::OK, lifecycle::edit(&node, Actor::User(&who.0), edit).await?))
}

pub async fn recall(req: HttpRequest, who: Authed, path: web::Path<(String, i64)>) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let (id, seq) = path.into_inner();
    let target = MessageRef { conversation: conversation_id(&id)?, seq };
    Ok(ok(StatusCode::OK, lifecycle::recall(&node, Actor::User(&who.0), target).await?))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeQuery {
    pub scope: Scope,
}

pub async fn delete(
    req: HttpRequest,
    who: Authed,
    path: web::Path<(String, i64)>,
    q: web::Query<ScopeQuery>,
) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let (id, seq) = path.into_inner();
    let target = DeleteRequest { conversation: conversation_id(&id)?, seq, scope: q.scope };
    Ok(ok(StatusCode::OK, lifecycle::delete(&node, Actor::User(&who.0), target).await?))
}

pub async fn react_on(
    req: HttpRequest,
    who: Authed,
    path: web::Path<(String, i64, String)>,
) -> ApiResult<HttpResponse> {
    react(req, who, path, true).await
}

pub async fn react_off(
    req: HttpRequest,
    who: Authed,
    path: web::Path<(String, i64, String)>,
) -> ApiResult<HttpResponse> {
    react(req, who, path, false).await
}

async fn react(
    req: HttpRequest,
    who: Authed,
    path: web::Path<(String, i64, String)>,
    on: bool,
) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let (id, seq, key) = path.into_inner();
    let key = ReactionKey::parse(key).map_err(|e| ApiError::validation(e.0))?;
    let target = ReactRequest { conversation: conversation_id(&id)?, seq, key, on };
    Ok(ok(StatusCode::OK, lifecycle::react(&node, Actor::User(&who.0), target).await?))
}

pub async fn messages(
    req: HttpRequest,
    who: Authed,
    path: web::Path<String>,
    q: web::Query<HistoryRequest>,
) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let conv = conversation_id(&path)?;
    let messages = chat::history(&node, &who.0, &conv, q.into_inner()).await?;
    Ok(ok(StatusCode::OK, crate::wire::MessagePage { messages }))
}
