//! `/metrics` after a small chat exchange: the documented series exist with plausible values, and
//! every metric the Grafana dashboard queries is one the server exports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::HashSet, time::Duration};

use common::{Receiver, TestServer, Ws};

fn series(text: &str) -> HashSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

fn value(text: &str, prefix: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_the_documented_series_and_everything_the_dashboard_queries() {
    let server = TestServer::start_with("[webhooks]\npoll_ms = 50");
    let receiver = Receiver::start();
    let url = receiver.url("/hooks");
    server
        .configure_app("default", move |s| {
            s.webhook_url = url;
            s.allow_private_targets = true;
            s.webhook_events = vec!["message.sent".into()];
        })
        .await;
    let (alice, bob) = (server.register("alice@example.com").await, server.register("bob@example.com").await);
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    b.settle().await;
    for n in 0..10 {
        assert_eq!(a.send_dm(&bob.id, "hi", &format!("m{n}")).await["code"], 201);
    }
    b.messages(10).await;
    let mut bad = Ws::connect(&format!("{}?token=nope", server.ws_url()), None).await;
    assert_eq!(bad.closed().await, Some(4501));
    drop(b);
    assert_eq!(receiver.wait_for(10, Duration::from_secs(10)).await.len(), 10);
    // The outbox gauge is refreshed on the node's 5 s upkeep timer: poll until it is there
    // (bounded), with the process gauges refreshed here.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        natter::telemetry::metrics_upkeep();
        let text = reqwest::get(server.admin_url("/metrics")).await.unwrap().text().await.unwrap();
        if series(&text).contains("natter_webhook_outbox") || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let found = series(&text);
    let documented = [
        "natter_ws_connections",
        "natter_ws_connects_total",
        "natter_ws_frames_received_total",
        "natter_ws_frames_sent_total",
        "natter_ws_disconnects_total",
        "natter_messages_received_total",
        "natter_messages_delivered_total",
        "natter_message_ack_duration_seconds_bucket",
        "natter_delivery_duration_seconds_bucket",
        "natter_bus_publish_duration_seconds_bucket",
        "natter_db_query_duration_seconds_bucket",
        "natter_webhook_deliveries_total",
        "natter_webhook_duration_seconds_bucket",
        "natter_http_requests_total",
        "natter_auth_failures_total",
        "natter_build_info",
        "natter_webhook_outbox",
        "natter_process_resident_memory_bytes",
        "natter_process_cpu_seconds_total",
        "natter_process_open_fds",
        "natter_process_max_fds",
        "natter_bus_connected",
        "natter_db_pool_connections",
        "natter_db_errors_total",
        "natter_bus_publish_errors_total",
        "natter_http_request_duration_seconds_bucket",
    ];
    let missing: Vec<&&str> = documented.iter().filter(|m| !found.contains(**m)).collect();
    assert!(missing.is_empty(), "missing series {missing:?}\n{text}");
    assert_eq!(value(&text, "natter_messages_received_total"), 10.0);
    assert!(value(&text, "natter_messages_delivered_total") >= 10.0);
    assert_eq!(value(&text, "natter_ws_connections"), 1.0, "alice is still connected");
    assert!(value(&text, "natter_process_resident_memory_bytes") > 1_000_000.0);
    assert!(text.contains("natter_webhook_deliveries_total{event=\"message.sent\",result=\"delivered\"} 10"), "{text}");
    assert!(text.contains("natter_auth_failures_total{reason=\"invalid_token\"}"));
    assert!(text.contains("route=\"/v1/auth/register\",status=\"201\""));
    assert!(!text.contains(&alice.id) && !text.contains("default\""), "no user or app ids as labels");
    assert_eq!(value(&text, "natter_bus_connected"), 1.0);
    assert!(text.contains("# TYPE natter_process_cpu_seconds_total counter"), "CPU time is a counter");
    let described: HashSet<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# HELP ")).filter_map(|l| l.split(' ').next()).collect();
    let bare = |s: &str| ["_bucket", "_sum", "_count"].iter().find_map(|x| s.strip_suffix(x)).unwrap_or(s).to_string();
    let undescribed: Vec<String> = found.iter().map(|s| bare(s)).filter(|s| !described.contains(s.as_str())).collect();
    assert!(undescribed.is_empty(), "series without # HELP: {undescribed:?}");

    let dashboard =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/helm/natter/dashboards/natter.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    assert!(dash.get("__inputs").is_none());
    assert_eq!(dash["templating"]["list"][0]["name"], "datasource");
    let mut queried = HashSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("natter_") {
                    queried.insert(word.to_string());
                }
            }
        }
    }
    let unknown: Vec<&String> = queried.iter().filter(|m| !found.contains(*m)).collect();
    println!(
        "metrics: {} documented series present; dashboard queries {} metrics, unknown {unknown:?}",
        documented.len(),
        queried.len()
    );
    assert!(unknown.is_empty(), "the dashboard queries metrics the server does not export: {unknown:?}");
}
