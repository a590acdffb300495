//! `/v1/groups`.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};

use super::{Authed, group_id, node, ok, parse_body, user_id};
use crate::{error::ApiResult, groups};

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
    Ok(ok(StatusCode::OK, groups::show(&node, &who.0, &group_id(&path)?).await?))
}

pub async fn add_members(
    req: HttpRequest,
    who: Authed,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let input = parse_body(&body)?;
    Ok(ok(StatusCode::OK, groups::add_members(&node, &who.0, &group_id(&path)?, input).await?))
}

pub async fn remove_member(
    req: HttpRequest,
    who: Authed,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let (group, user) = path.into_inner();
    let user = user_id(&user)?;
    Ok(ok(StatusCode::OK, groups::remove_member(&node, &who.0, &group_id(&group)?, &user).await?))
}
