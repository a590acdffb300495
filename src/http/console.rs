//! The browser console at `/`: static files compiled into the binary (no build step, no CDN),
//! served with a policy that lets them reach this origin's API and WebSocket and nothing else.

use actix_web::{HttpRequest, HttpResponse, http::header, web};

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::node::Node;

/// (path under /console/, content type, body)
const FILES: &[(&str, &str, &str)] = &[
    ("console.css", "text/css; charset=utf-8", include_str!("../../assets/console/console.css")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../assets/console/app.js")),
    ("view.js", "text/javascript; charset=utf-8", include_str!("../../assets/console/view.js")),
    ("push.js", JS, include_str!("../../assets/console/push.js")),
    // The service worker that shows pushes while no console tab is open (scope /console/).
    ("sw.js", JS, include_str!("../../assets/console/sw.js")),
    // The console is built on the client library apps import (clients/js), served as it is.
    ("client/index.js", JS, include_str!("../../clients/js/src/index.js")),
    ("client/client.js", JS, include_str!("../../clients/js/src/client.js")),
    ("client/errors.js", JS, include_str!("../../clients/js/src/errors.js")),
    ("client/rest.js", JS, include_str!("../../clients/js/src/rest.js")),
    ("client/store.js", JS, include_str!("../../clients/js/src/store.js")),
    ("client/transport.js", JS, include_str!("../../clients/js/src/transport.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

const INDEX: &str = include_str!("../../assets/console/index.html");

fn enabled(req: &HttpRequest) -> ApiResult<()> {
    let on = req.app_data::<web::Data<Node>>().is_some_and(|n| n.config.http.console);
    if on { Ok(()) } else { Err(ApiError::new(ErrorCode::NotFound, "the console is disabled (http.console)")) }
}

/// The page's own policy: scripts and styles from this origin only, network to this host only.
fn policy(req: &HttpRequest) -> String {
    let info = req.connection_info();
    let host = info.host();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' ws://{host} wss://{host}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

fn respond(req: &HttpRequest, content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        // Revalidated on every load, so a new binary's console is never mixed with an old one.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("Content-Security-Policy", policy(req)))
        .body(body)
}

/// `GET /`.
pub async fn index(req: HttpRequest) -> ApiResult<HttpResponse> {
    enabled(&req)?;
    Ok(respond(&req, "text/html; charset=utf-8", INDEX))
}

/// `GET /console/{file}` (`file` may name a path under `client/`).
pub async fn asset(req: HttpRequest, path: web::Path<String>) -> ApiResult<HttpResponse> {
    enabled(&req)?;
    let (_, content_type, body) = FILES
        .iter()
        .find(|(name, _, _)| *name == path.as_str())
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no console file {}", path.as_str())))?;
    Ok(respond(&req, content_type, body))
}
