//! `/v1/groups`.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};

use super::{Authed, group_id, node, ok, parse_body, user_id};
use crate::{
    error::ApiResult,
    groups::{self, GroupActor, admin},
};

pub async fn create(req: HttpRequest, who: Authed, body: web::Bytes) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let input = parse_body(&body)?;
    Ok(ok(StatusCode::CREATED, groups::create(&node, &who.0, input).await?))
}

pub async fn list(req: HttpRequest, who: Authed) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    Ok(ok(StatusCode::OK, groups::list(&node, &who.0).await?))
}

pub async fn show(req: HttpRequest, who: Authed, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    Ok(ok(StatusCode::OK, groups::show(&node, GroupActor::User(&who.0), &group_id(&path)?).await?))
}

/// `PATCH /v1/groups/{id}` `{name?, avatar_url?, announcement?, muted?}`.
pub async fn update(
    req: HttpRequest,
    who: Authed,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let input = parse_body(&body)?;
    Ok(ok(StatusCode::OK, admin::update(&node, GroupActor::User(&who.0), &group_id(&path)?, input).await?))
}

/// `DELETE /v1/groups/{id}`: dissolves it (owner).
pub async fn dissolve(req: HttpRequest, who: Authed, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    Ok(ok(StatusCode::OK, admin::dissolve(&node, GroupActor::User(&who.0), &group_id(&path)?).await?))
}

/// `POST /v1/groups/{id}/leave`.
pub async fn leave(req: HttpRequest, who: Authed, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    Ok(ok(StatusCode::OK, admin::leave(&node, &who.0, &group_id(&path)?).await?))
}

pub async fn add_members(
    req: HttpRequest,
    who: Authed,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let input = parse_body(&body)?;
    Ok(ok(StatusCode::OK, admin::add_members(&node, GroupActor::User(&who.0), &group_id(&path)?, input).await?))
}

/// `PATCH /v1/groups/{id}/members/{user}` `{role?, muted_until?}`.
pub async fn update_member(
    req: HttpRequest,
    who: Authed,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let (group, user) = path.into_inner();
    let input = parse_body(&body)?;
    let view =
        admin::update_member(&node, GroupActor::User(&who.0), &group_id(&group)?, &user_id(&user)?, input).await?;
    Ok(ok(StatusCode::OK, view))
}

/// `DELETE /v1/groups/{id}/members/{user}`: kicks, or leaves when it names the caller.
pub async fn remove_member(
    req: HttpRequest,
    who: Authed,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let (group, user) = path.into_inner();
    let changed = admin::remove_member(&node, GroupActor::User(&who.0), &group_id(&group)?, &user_id(&user)?).await?;
    Ok(ok(StatusCode::OK, changed))
}
