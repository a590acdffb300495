//! The WebSocket endpoint (`GET /ws`): the handshake, the protocol frames, the transport under
//! each connection and the per-connection session actor.
//!
//! Upgrade requests never reach actix-web's router: the HTTP/1 dispatcher hands them, with the
//! connection, to [`upgrade`], and lets go of its own buffers. The session actor then owns the
//! socket through [`socket`].

pub mod cursor;
pub mod protocol;
pub mod session;
pub mod socket;

use std::{
    io::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

use actix::{Actor, AsyncContext};
use actix_codec::Framed;
use actix_http::{HttpMessage as _, Request, StatusCode, h1};
use actix_web::{HttpResponse, ResponseError};
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::{
    auth::Identity,
    domain::AppId,
    error::{ApiError, ErrorCode},
    http::{
        credentials::{bearer_token, peer_ip},
        rejections::JsonRejections,
    },
    hub::admission::Ticket,
    node::Node,
    store::conversations::Active,
};
use session::{Opened, WsSession};

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// The path clients connect to.
pub const PATH: &str = "/ws";

fn query_param(req: &Request, name: &str) -> Option<String> {
    let query = req.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// What a handshake settled before the socket opens.
struct Accepted {
    /// Its place on the node (`hub::admission`).
    ticket: Ticket,
    identity: Option<(Identity, Vec<Active>)>,
    /// A token given at connect that was refused: the socket opens and closes with 4501, so
    /// browsers, which cannot read a refused handshake, learn why.
    rejected: Option<ApiError>,
    app_hint: Option<AppId>,
    accept_key: [u8; 28],
}

/// A refused handshake: the error, and when to try again for a node without room.
struct Refusal {
    error: ApiError,
    retry_after_secs: Option<u64>,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal { error, retry_after_secs: None }
    }
}

/// Checks an upgrade request: the handshake headers, room on the node, the token (header or
/// `?token=`), the app hint and the app's origin allowlist.
async fn handshake(node: &Node, req: &Request) -> Result<Accepted, Refusal> {
    if req.path() != PATH {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no WebSocket endpoint here; connect to {PATH}")).into());
    }
    actix_http::ws::verify_handshake(req.head())
        .map_err(|e| ApiError::validation(format!("websocket handshake: {e}")))?;
    let accept_key = req
        .headers()
        .get(actix_http::header::SEC_WEBSOCKET_KEY)
        .map(|key| actix_http::ws::hash_key(key.as_bytes()))
        .ok_or_else(|| ApiError::validation("websocket handshake: Sec-WebSocket-Key is missing"))?;
    if node.is_draining() {
        return Err(ApiError::new(ErrorCode::Unavailable, "node is draining; connect to another").into());
    }
    let mut ticket = node
        .admission
        .admit()
        .map_err(|full| Refusal { error: full.error(), retry_after_secs: Some(full.retry_after_secs) })?;
    let token = bearer_token(req.headers()).or_else(|| query_param(req, "token"));
    let app_hint = req
        .headers()
        .get("x-app-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query_param(req, "app"))
        .map(AppId::parse)
        .transpose()
        .map_err(|e| ApiError::validation(e.0))?;
    let (identity, rejected) = match token {
        None => (None, None),
        Some(token) => match node.authenticate_connection(&token).await {
            Ok(subject) => (Some(subject), None),
            // The server's own failure is the handshake's answer, not a verdict on the token.
            Err(e) if e.code == ErrorCode::Internal => return Err(e.into()),
            Err(e) => (None, Some(e)),
        },
    };
    let app = identity.as_ref().map(|(w, _)| w.app.clone()).or_else(|| app_hint.clone());
    if let (Some(app), Some(origin)) = (app, req.headers().get("origin").and_then(|o| o.to_str().ok())) {
        let record = node.app(&app).await?;
        let allowed = &record.settings.allowed_origins;
        if !allowed.is_empty() && !allowed.iter().any(|a| a == origin) {
            return Err(ApiError::new(ErrorCode::Forbidden, "origin not allowed for this app").into());
        }
    }
    if identity.is_none() {
        // Waiting for a login frame (or closing on a refused token) is no work for the node.
        ticket.started();
    }
    Ok(Accepted { ticket, identity, rejected, app_hint, accept_key })
}

/// Serves one upgrade request handed over by the HTTP/1 dispatcher: answers 101 and starts a
/// session actor on the socket, or answers the error and closes.
pub async fn upgrade(
    node: Node,
    req: Request,
    framed: Framed<JsonRejections<TcpStream>, h1::Codec>,
) -> Result<(), actix_web::Error> {
    if let Err(e) = accept(node, req, framed).await {
        // The client went away mid-handshake: nothing left to answer.
        tracing::debug!(error = %e, "websocket handshake write failed");
    }
    Ok(())
}

async fn accept(node: Node, req: Request, framed: Framed<JsonRejections<TcpStream>, h1::Codec>) -> std::io::Result<()> {
    let parts = framed.into_parts();
    let mut io = parts.io.into_inner();
    // The dispatcher's read buffer is 8 KiB of capacity; keep only bytes that followed the
    // request (rarely any), not the buffer.
    let read_buf = bytes::BytesMut::from(&parts.read_buf[..]);
    let accepted = handshake(&node, &req).await;
    let status = match &accepted {
        Ok(_) => 101,
        Err(r) => r.error.code.status(),
    };
    metrics::counter!("natter_http_requests_total", "route" => PATH, "status" => status.to_string()).increment(1);
    let accepted = match accepted {
        Ok(a) => a,
        Err(r) => {
            io.write_all(&error_response(&r.error, r.retry_after_secs)).await?;
            return io.shutdown().await;
        }
    };
    let mut head = Vec::with_capacity(160);
    head.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ",
    );
    head.extend_from_slice(&accepted.accept_key);
    head.extend_from_slice(b"\r\n\r\n");
    io.write_all(&head).await?;

    let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    let ip = peer_ip(req.peer_addr(), req.headers(), &node);
    let (socket, incoming) = socket::split(io, read_buf, node.config.ws.max_frame_bytes);
    let Accepted { ticket, identity, rejected, app_hint, .. } = accepted;
    let opened = Opened { ticket, identity, rejected, app_hint, client_ip: ip };
    WsSession::create(move |ctx| {
        ctx.add_stream(incoming);
        WsSession::new(id, node, socket, opened)
    });
    Ok(())
}

/// A refused handshake as a complete HTTP/1.1 response with the usual JSON error body (and
/// `Retry-After` when the node had no room).
fn error_response(e: &ApiError, retry_after_secs: Option<u64>) -> Vec<u8> {
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // Two strings: always encodable; the bare code stands in if that ever changes.
    let body = serde_json::to_vec(&e.body())
        .unwrap_or_else(|_| format!(r#"{{"error":{{"code":"{}","message":""}}}}"#, e.code.as_str()).into_bytes());
    let mut out = Vec::with_capacity(160 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if let Some(secs) = retry_after_secs {
        let _ = write!(out, "retry-after: {secs}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

/// `GET /ws` without `Upgrade: websocket` (upgrades never reach the router).
pub async fn not_upgraded() -> HttpResponse {
    ApiError::validation("websocket handshake: send Upgrade: websocket and Connection: Upgrade").error_response()
}
