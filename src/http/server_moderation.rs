//! The server API's moderation: bans and the audit trail (`/v1/server/users/{id}/ban`,
//! `/v1/server/bans`, `/v1/server/audit`).

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};

use super::{
    ok, parse_body,
    server::{signed, user},
    user_id,
};
use crate::{
    error::ApiResult,
    moderation::{self, AuditRequest, BanRequest},
};

/// `POST /v1/server/users/{id}/ban` `{minutes?, reason?}`.
pub async fn ban(req: HttpRequest, path: web::Path<String>, body: web::Bytes) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    let target = user(&node, &app, &user_id(&path)?).await?;
    let input: BanRequest = parse_body(&body)?;
    Ok(ok(StatusCode::OK, moderation::ban(&node, &app.id, &target, input).await?))
}

/// `DELETE /v1/server/users/{id}/ban`.
pub async fn lift(req: HttpRequest, path: web::Path<String>, body: web::Bytes) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    let target = user(&node, &app, &user_id(&path)?).await?;
    let lifted = moderation::lift(&node, &app.id, &target).await?;
    Ok(ok(StatusCode::OK, serde_json::json!({ "user": target.id, "lifted": lifted })))
}

/// `GET /v1/server/bans`.
pub async fn bans(req: HttpRequest, body: web::Bytes) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    Ok(ok(StatusCode::OK, moderation::bans(&node, &app.id).await?))
}

/// `GET /v1/server/audit?user=&group=&cursor=&limit=`.
pub async fn audit(req: HttpRequest, q: web::Query<AuditRequest>, body: web::Bytes) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    let page = moderation::audit(&node, &app.id, &q).await?;
    Ok(super::ok_page(&page.entries, page.cursor.as_deref()))
}
