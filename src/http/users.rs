//! `/v1/me` and `/v1/users`.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};

use super::{Authed, node, ok, parse_body};
use crate::{accounts, error::ApiResult};

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
