//! `/v1/conversations`.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};

use super::{Authed, node, ok};
use crate::{
    chat::{self, HistoryRequest},
    domain::ConversationId,
    error::{ApiError, ApiResult},
};

pub async fn conversations(req: HttpRequest, who: Authed) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    Ok(ok(StatusCode::OK, chat::conversations(&node, &who.0).await?))
}

pub async fn messages(
    req: HttpRequest,
    who: Authed,
    path: web::Path<String>,
    q: web::Query<HistoryRequest>,
) -> ApiResult<HttpResponse> {
    let node = node(&req)?;
    let conv = ConversationId::parse(path.into_inner()).map_err(|e| ApiError::validation(e.0))?;
    let messages = chat::history(&node, &who.0, &conv, q.into_inner()).await?;
    Ok(ok(StatusCode::OK, crate::wire::MessagePage { messages }))
}
