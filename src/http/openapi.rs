//! `/openapi.json` and `/openapi.yaml`: the REST API's machine-readable description
//! (`docs/openapi.yaml`, compiled in; build.rs turns it into the JSON), for clients to generate
//! from and for API tools to test against.

use actix_web::{HttpResponse, http::header};

const YAML: &str = include_str!("../../docs/openapi.yaml");
const JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));

fn respond(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        // The document changes with the binary only; an hour spares generators a refetch.
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(body)
}

/// `GET /openapi.json`.
pub async fn json() -> HttpResponse {
    respond("application/json", JSON)
}

/// `GET /openapi.yaml`.
pub async fn yaml() -> HttpResponse {
    respond("application/yaml", YAML)
}
