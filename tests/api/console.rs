//! The browser console: served from the binary at `/` under its own content policy, and driven
//! end to end in headless Chromium (tests/e2e/console.mjs).

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

    // Every module the page imports, and its stylesheet, is served with its type.
    let app = reqwest::get(server.url("/console/app.js")).await.unwrap().text().await.unwrap();
    let imports: Vec<&str> =
        app.lines().filter_map(|l| l.split("from './").nth(1)).map(|r| r.trim_end_matches("';")).collect();
    assert!(imports.len() >= 3, "{imports:?}");
    for file in imports.iter().copied().chain(["console.css"]) {
        let res = reqwest::get(server.url(&format!("/console/{file}"))).await.unwrap();
        assert_eq!(res.status(), 200, "{file}");
        let ty = res.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ty.starts_with(if file.ends_with(".css") { "text/css" } else { "text/javascript" }), "{file}: {ty}");
    }
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
    let mut child = Command::new("node")
        .arg(format!("{root}/tests/e2e/console.mjs"))
        .env("NATTER_BIN", env!("CARGO_BIN_EXE_natter"))
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs (install Node.js)");
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the browser test did not finish in 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "tests/e2e/console.mjs failed ({status}); see the log above and target/e2e-screenshots/");
}
