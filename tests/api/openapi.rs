//! The machine-readable API: `docs/openapi.yaml` names exactly the routes the code serves, the
//! node serves it, every operation called as an app calls it answers what the document says, and
//! schemathesis (PyPI), fuzzing every operation of a live node with a user's token and signed
//! server-API requests, finds no server error and no response outside it.

use crate::common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::TestServer;
use natter::auth::server_sig::Scheme;

const ROUTES: &str = include_str!("../../src/http/mod.rs");
const DOC: &str = include_str!("../../docs/openapi.yaml");

/// `(METHOD, path)` for every `web::resource(path).route(web::method()…)` in the router, scopes
/// applied and `{name:regex}` segments written as `{name}`.
fn routes_in_code() -> BTreeSet<(String, String)> {
    let start = ROUTES.find("pub fn configure(").expect("the router's configure");
    let end = start + ROUTES[start..].find("\n}\n").expect("its end");
    let code = &ROUTES[start..end];
    let (mut found, mut prefix, mut resource) = (BTreeSet::new(), String::new(), String::new());
    let literal = |s: &str| s[..s.find('"').unwrap()].to_string();
    let mut rest = code;
    while let Some(at) = rest.find("web::") {
        rest = &rest[at + "web::".len()..];
        if let Some(after) = rest.strip_prefix("scope(\"") {
            prefix = literal(after);
        } else if let Some(after) = rest.strip_prefix("resource(") {
            resource = match after.strip_prefix('"') {
                Some(path) => format!("{prefix}{}", literal(path)),
                None if after.starts_with("crate::ws::PATH") => natter::ws::PATH.to_string(),
                None => panic!("a resource's path is a literal: {}", &after[..40]),
            };
        } else if let Some(method) =
            ["get", "post", "put", "patch", "delete"].iter().find(|m| rest.starts_with(&format!("{m}()")))
        {
            found.insert((method.to_uppercase(), normalise(&resource)));
        }
    }
    found
}

fn normalise(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = open + rest[open..].find('}').unwrap();
        let name = rest[open + 1..close].split(':').next().unwrap();
        out.push_str(&rest[..open]);
        out.push_str(&format!("{{{name}}}"));
        rest = &rest[close + 1..];
    }
    out + rest
}

fn routes_in(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

#[tokio::test]
async fn every_route_the_code_serves_is_in_the_document_and_the_other_way_round() {
    let server = TestServer::start();
    let (status, doc) = server.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let code = routes_in_code();
    assert!(code.len() > 40, "the router was read: {code:?}");
    let documented = routes_in(&doc);
    let undocumented: Vec<_> = code.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&code).collect();
    assert!(undocumented.is_empty(), "served but not in docs/openapi.yaml: {undocumented:?}");
    assert!(unserved.is_empty(), "in docs/openapi.yaml but not served: {unserved:?}");
    // Every operation names its answers, with an id generators can use.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            assert!(op["operationId"].is_string(), "{method} {path}: operationId");
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}: responses");
        }
    }
}

#[tokio::test]
async fn the_node_serves_the_document_as_yaml_and_as_json() {
    let server = TestServer::start();
    let res = reqwest::get(server.url("/openapi.yaml")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/yaml");
    assert_eq!(res.text().await.unwrap(), DOC);
    let res = reqwest::get(server.url("/openapi.json")).await.unwrap();
    assert_eq!(res.headers()["content-type"], "application/json");
    let doc: serde_json::Value = res.json().await.unwrap();
    assert_eq!(doc["info"]["title"], "Natter");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["securitySchemes"]["signature"].is_object());
    // A path served with other methods answers 405 naming them, in the error shape.
    let res = reqwest::Client::new().delete(server.url("/v1/groups")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    let allow = res.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

/// Needs python3 with schemathesis (`.ci/run` installs it). Every operation is fuzzed (examples,
/// coverage and fuzzing phases) against an embedded node; the hooks sign server-API requests (v2)
/// and give client-API requests a user's token (minted through the server API).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_response_outside_the_document() {
    let server = TestServer::start();
    let creds = server.server_client("default", Scheme::V2HmacSha256).await;
    let root = env!("CARGO_MANIFEST_DIR");
    let report = std::path::Path::new(root).join("target").join("schemathesis");
    std::fs::create_dir_all(&report).unwrap();
    let mut st = Command::new("python3");
    st.args(["-m", "schemathesis.cli", "--config-file", &format!("{root}/tests/support/schemathesis.toml")])
        .args(["run", &server.url("/openapi.json")])
        // Every check on what the server answers, and on authentication and methods. Left out:
        // `negative_data_rejection` and `positive_data_acceptance`, which hold the server's input
        // rules to exactly what JSON Schema can say, and Natter's are finer (limits in bytes
        // where JSON Schema counts characters, passwords too common to accept, cursors only it
        // issued, times that must lie in the future; optional fields take `null` as absent). Bad
        // input's answers are still checked: each must be a documented status with the error
        // shape, and never a 5xx.
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance"])
        .args(["--checks", "response_headers_conformance,response_schema_conformance"])
        .args(["--checks", "ignored_auth,missing_required_header,unsupported_method"])
        .args(["--phases", "examples,coverage,fuzzing", "--max-examples", "25", "--seed", "1"])
        .args(["--workers", "2", "--request-timeout", "10", "--max-time", "120"])
        .args(["--suppress-health-check", "all", "--report", "junit", "--report-dir"])
        .arg(&report)
        .env("PYTHONPATH", format!("{root}/tests/support"))
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("NATTER_URL", server.url(""))
        .env("NATTER_APP_KEY", &creds.key)
        .env("NATTER_APP_SECRET", &creds.secret)
        .env("NO_COLOR", "1")
        // Its cache of past failures stays out of the tree.
        .current_dir(&report);
    // Off the runtime's threads: the node under test runs on them.
    tokio::task::spawn_blocking(move || {
        common::run_tool("schemathesis (report: target/schemathesis/)", &mut st, Duration::from_secs(420))
    })
    .await
    .unwrap();
}

/// Needs python3 with schemathesis. tests/support/openapi_scenario.py calls every operation the
/// way an app does and validates each success against the document (the fuzzer mostly reaches
/// refusals; this reaches the success shapes), and fails if any operation was left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_called_as_an_app_calls_it_answers_what_the_document_says() {
    // With a VAPID key, so `GET /v1/push/vapid` has one to answer.
    let (vapid, _) = natter::push::webpush::Vapid::generate();
    let server = TestServer::start_with(&format!(
        "[default_app]\nregistrations_per_hour = 1000\nguest_signups_per_hour = 1000\nvapid_private_key = \"{vapid}\""
    ));
    let creds = server.server_client("default", Scheme::V2HmacSha256).await;
    let root = env!("CARGO_MANIFEST_DIR");
    let mut scenario = Command::new("python3");
    scenario
        .arg(format!("{root}/tests/support/openapi_scenario.py"))
        .env("PYTHONPATH", format!("{root}/tests/support"))
        .env("NATTER_URL", server.url(""))
        .env("NATTER_APP_KEY", &creds.key)
        .env("NATTER_APP_SECRET", &creds.secret)
        .env("NO_COLOR", "1");
    tokio::task::spawn_blocking(move || {
        common::run_tool("tests/support/openapi_scenario.py", &mut scenario, Duration::from_secs(180))
    })
    .await
    .unwrap();
}
