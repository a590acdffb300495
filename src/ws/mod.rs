//! The WebSocket endpoint (`GET /ws`), its frames and its per-connection session actor.

pub mod protocol;
pub mod session;

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use actix_web_actors::ws;

use crate::{
    domain::AppId,
    error::{ApiError, ErrorCode},
    http::bearer_token,
    node::Node,
};
use session::WsSession;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get(name).cloned())
}

/// Upgrades to a WebSocket. A token (header or `?token=`) is checked first; a bad one still
/// upgrades and is closed with 4501 so browsers, which cannot read a refused handshake, learn why.
pub async fn connect(
    req: HttpRequest,
    stream: web::Payload,
    node: web::Data<Node>,
) -> Result<HttpResponse, actix_web::Error> {
    let node = node.get_ref().clone();
    if node.is_draining() {
        return Ok(ApiError::new(ErrorCode::Unavailable, "node is draining; connect to another").error_response());
    }
    let token = bearer_token(&req).or_else(|| query_param(&req, "token"));
    let app_hint = req
        .headers()
        .get("x-app-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query_param(&req, "app"));
    let app_hint = match app_hint.map(AppId::parse).transpose() {
        Ok(hint) => hint,
        Err(e) => return Ok(ApiError::validation(e.0).error_response()),
    };
    let (identity, rejected) = match token {
        None => (None, None),
        Some(token) => match node.authenticate(&token).await {
            Ok(who) => {
                let conversations =
                    node.store.active_conversations(&who.app, who.user).await.map_err(ApiError::from)?;
                (Some((who, conversations)), None)
            }
            Err(e) => (None, Some(e)),
        },
    };
    let app = identity.as_ref().map(|(w, _)| w.app.clone()).or_else(|| app_hint.clone());
    if let (Some(app), Some(origin)) = (app, req.headers().get("origin").and_then(|o| o.to_str().ok())) {
        let record = node.app(&app).await?;
        let allowed = &record.settings.allowed_origins;
        if !allowed.is_empty() && !allowed.iter().any(|a| a == origin) {
            return Ok(ApiError::new(ErrorCode::Forbidden, "origin not allowed for this app").error_response());
        }
    }
    let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    let ip = crate::http::client_ip(&req, &node);
    let session = WsSession::new(id, node.clone(), identity, rejected, app_hint, ip);
    ws::WsResponseBuilder::new(session, &req, stream).frame_size(node.config.ws.max_frame_bytes).start()
}
