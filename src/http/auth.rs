//! `/v1/auth/*`.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};

use super::{Authed, client_ip, node, ok, parse_body};
use crate::{accounts, error::ApiResult};

fn app_header(req: &HttpRequest) -> Option<&str> {
    req.headers().get("x-app-id").and_then(|v| v.to_str().ok())
}

pub async fn register(req: HttpRequest, body: web::Bytes) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    // Refused before the body is even parsed: a flood that ignores "retry" costs little.
    node.passwords.admit_hash()?;
    let input = parse_body(&body)?;
    let app = accounts::app_for(&node, app_header(&req)).await?;
    let ip = client_ip(&req, &node);
    Ok(ok(StatusCode::CREATED, accounts::register(&node, &app, input, &ip).await?))
}

pub async fn login(req: HttpRequest, body: web::Bytes) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let input = parse_body(&body)?;
    let app = accounts::app_for(&node, app_header(&req)).await?;
    let ip = client_ip(&req, &node);
    Ok(ok(StatusCode::OK, accounts::login(&node, &app, input, &ip).await?))
}

pub async fn guest(req: HttpRequest, body: web::Bytes) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let input = parse_body(&body)?;
    let app = accounts::app_for(&node, app_header(&req)).await?;
    let ip = client_ip(&req, &node);
    Ok(ok(StatusCode::CREATED, accounts::guest(&node, &app, &ip, input).await?))
}

pub async fn upgrade(req: HttpRequest, who: Authed, body: web::Bytes) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let input = parse_body(&body)?;
    Ok(ok(StatusCode::OK, accounts::upgrade(&node, &who.0, input).await?))
}

pub async fn refresh(req: HttpRequest, body: web::Bytes) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let input = parse_body(&body)?;
    Ok(ok(StatusCode::OK, accounts::refresh(&node, input).await?))
}

pub async fn logout(req: HttpRequest, who: Authed) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    accounts::logout(&node, &who.0).await?;
    Ok(ok(StatusCode::OK, serde_json::json!({ "logged_out": true })))
}
