//! `/healthz` (alive, no dependencies), `/readyz` (this pod: started, not draining, store
//! reachable; the bus is reported, not required), and `/metrics`, which only the admin listener
//! serves.

use actix_web::{HttpResponse, http::StatusCode, web};
use serde_json::json;

use super::ok;
use crate::node::Node;

pub async fn healthz() -> HttpResponse {
    ok(StatusCode::OK, json!({ "status": "ok" }))
}

/// The admin listener's routes.
pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

pub async fn readyz(node: web::Data<Node>) -> HttpResponse {
    let store = node.store.ping().await.is_ok();
    let bus = node.bus.is_connected();
    let draining = node.is_draining();
    // Sends commit without the bus (it only fans out), and a NATS outage would otherwise take
    // every pod out of its Service at once; the bus state is reported and exported as a metric.
    let ready = store && !draining;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    ok(status, json!({ "ready": ready, "store": store, "bus": bus, "draining": draining }))
}

pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(crate::telemetry::render_metrics())
}
