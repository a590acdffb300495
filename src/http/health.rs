//! `/healthz` (alive, no dependencies), `/readyz` (store, bus, not draining), `/metrics`.

use actix_web::{HttpResponse, http::StatusCode, web};
use serde_json::json;

use super::ok;
use crate::node::Node;

pub async fn healthz() -> HttpResponse {
    ok(StatusCode::OK, json!({ "status": "ok" }))
}

pub async fn readyz(node: web::Data<Node>) -> HttpResponse {
    let store = node.store.ping().await.is_ok();
    let bus = node.bus.is_connected();
    let draining = node.is_draining();
    let ready = store && bus && !draining;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    ok(status, json!({ "ready": ready, "store": store, "bus": bus, "draining": draining }))
}

pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(crate::telemetry::render_metrics())
}
