//! The browser console: served from the binary at `/` under its own content policy, and driven
//! end to end in headless Chromium (tests/e2e/console.mjs).

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::TestServer;

#[tokio::test]
async fn the_console_is_served_at_the_root_with_a_policy_that_reaches_only_this_server() {
    let server = TestServer::start();
    let res = reqwest::get(server.url("/")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = res.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
    assert!(csp.contains(&format!("connect-src 'self' ws://{0} wss://{0}", server.addr)), "{csp}");
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/console/app.js">"#));
    assert!(!html.contains("http://") && !html.contains("https://"), "no CDN or other origin");

    // Every module the page imports, directly or through the client library it is built on
    // (clients/js), and its stylesheet, is served with its type.
    let mut modules = vec!["app.js".to_string()];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(file) = modules.pop() {
        if !seen.insert(file.clone()) {
            continue;
        }
        let res = reqwest::get(server.url(&format!("/console/{file}"))).await.unwrap();
        assert_eq!(res.status(), 200, "{file}");
        let ty = res.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ty.starts_with("text/javascript"), "{file}: {ty}");
        let dir = file.rsplit_once('/').map(|(d, _)| format!("{d}/")).unwrap_or_default();
        let text = res.text().await.unwrap();
        for import in text.lines().filter_map(|l| l.split(" from './").nth(1)) {
            modules.push(format!("{dir}{}", import.trim_end_matches("';")));
        }
    }
    assert!(seen.contains("client/client.js") && seen.contains("client/transport.js"), "{seen:?}");
    let res = reqwest::get(server.url("/console/console.css")).await.unwrap();
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/css"));
    assert_eq!(reqwest::get(server.url("/console/client/nope.js")).await.unwrap().status(), 404);
    let (status, body) = server.get("/console/secrets.js", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    // The API keeps its own, stricter policy.
    let res = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(res.headers()["content-security-policy"], "default-src 'none'; frame-ancestors 'none'");
}

#[tokio::test]
async fn the_console_can_be_turned_off() {
    let server = TestServer::start_with("[http]\nconsole = false\n");
    let (status, body) = server.get("/", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    assert_eq!(server.get("/console/app.js", None).await.0, 404);
}

/// Needs node, npm (playwright-core is installed into target/e2e by the script) and Debian's
/// chromium at /usr/bin/chromium. Screenshots: target/e2e-screenshots/.
#[test]
fn two_people_and_a_guest_chat_in_the_browser_console_across_a_server_restart() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut node = Command::new("node");
    node.arg(format!("{root}/tests/e2e/console.mjs")).env("NATTER_BIN", env!("CARGO_BIN_EXE_natter"));
    common::run_tool(
        "tests/e2e/console.mjs (screenshots: target/e2e-screenshots/)",
        &mut node,
        Duration::from_secs(300),
    );
}
