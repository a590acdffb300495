//! `/v1/me` (with the caller's blocks) and `/v1/users`.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};

use super::{Authed, node, ok, parse_body, user_id};
use crate::{accounts, error::ApiResult, moderation};

pub async fn me(req: HttpRequest, who: Authed) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    Ok(ok(StatusCode::OK, accounts::me(&node, &who.0).await?))
}

pub async fn update_me(req: HttpRequest, who: Authed, body: web::Bytes) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let input = parse_body(&body)?;
    Ok(ok(StatusCode::OK, accounts::update_me(&node, &who.0, input).await?))
}

pub async fn query(
    req: HttpRequest,
    who: Authed,
    q: web::Query<accounts::UserQueryRequest>,
) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    Ok(ok(StatusCode::OK, accounts::query(&node, &who.0.app, q.into_inner()).await?))
}

/// `POST /v1/me/blocks` `{user}`.
pub async fn block(req: HttpRequest, who: Authed, body: web::Bytes) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let input: moderation::BlockRequest = parse_body(&body)?;
    Ok(ok(StatusCode::OK, moderation::block(&node, &who.0, &input.user).await?))
}

/// `DELETE /v1/me/blocks/{user}`.
pub async fn unblock(req: HttpRequest, who: Authed, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let user = user_id(&path)?;
    Ok(ok(StatusCode::OK, moderation::unblock(&node, &who.0, &user).await?))
}

/// `GET /v1/me/blocks`.
pub async fn blocks(req: HttpRequest, who: Authed) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    Ok(ok(StatusCode::OK, moderation::blocks(&node, &who.0).await?))
}
