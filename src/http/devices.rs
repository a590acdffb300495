//! `/v1/me/devices` (a user's own devices for push), `/v1/push/vapid`, and the server API's view
//! of a user's devices.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};

use super::{Authed, node, ok, parse_body, server, user_id};
use crate::{error::ApiResult, push::devices};

/// `POST /v1/me/devices` `{platform, token | subscription, app_version?}`.
pub async fn register(req: HttpRequest, who: Authed, body: web::Bytes) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let input: devices::RegisterRequest = parse_body(&body)?;
    Ok(ok(StatusCode::CREATED, devices::register(&node, &who.0, input).await?))
}

/// `GET /v1/me/devices`.
pub async fn list(req: HttpRequest, who: Authed) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    Ok(ok(StatusCode::OK, devices::list(&node, &who.0.app, who.0.user).await?))
}

/// `DELETE /v1/me/devices/{id}`.
pub async fn remove(req: HttpRequest, who: Authed, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    devices::remove(&node, &who.0.app, who.0.user, &path).await?;
    Ok(ok(StatusCode::OK, serde_json::json!({ "id": path.into_inner(), "removed": true })))
}

/// `GET /v1/push/vapid`: the app's VAPID public key, for `pushManager.subscribe`.
pub async fn vapid(req: HttpRequest, who: Authed) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    Ok(ok(StatusCode::OK, devices::vapid_key(&node, &who.0.app).await?))
}

/// `GET /v1/server/users/{id}/devices`.
pub async fn server_list(req: HttpRequest, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let (node, app) = server::signed(&req, b"").await?;
    let found = server::user(&node, &app, &user_id(&path)?).await?;
    Ok(ok(StatusCode::OK, devices::list(&node, &app.id, found.key).await?))
}

/// `DELETE /v1/server/users/{id}/devices/{device}`.
pub async fn server_remove(req: HttpRequest, path: web::Path<(String, String)>) -> ApiResult<HttpResponse> {
    let (node, app) = server::signed(&req, b"").await?;
    let (user, device) = path.into_inner();
    let found = server::user(&node, &app, &user_id(&user)?).await?;
    devices::remove(&node, &app.id, found.key, &device).await?;
    Ok(ok(StatusCode::OK, serde_json::json!({ "id": device, "removed": true })))
}
