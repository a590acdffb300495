//! The scripts of docs/app-server.md, run as written against a real node.

use crate::common;

use std::process::Command;

use common::TestServer;
use natter::auth::server_sig::Scheme;
use serde_json::Value;

fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_guide_embeds_each_example_verbatim() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/app-server.md")).unwrap();
    for name in ["sign.sh", "sign.py", "sign.mjs", "mint_hs256.py"] {
        let path = format!("{}/docs/examples/{name}", env!("CARGO_MANIFEST_DIR"));
        let script = std::fs::read_to_string(path).unwrap();
        assert!(guide.contains(script.trim_end()), "docs/app-server.md is out of date with docs/examples/{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_scripts_work_as_written() {
    let server = TestServer::start();
    let api = server.server_client("default", Scheme::V2HmacSha256).await;
    let url = format!("http://{}", server.addr);
    let env = [("NATTER_URL", url.as_str()), ("APP_KEY", api.key.as_str()), ("APP_SECRET", api.secret.as_str())];

    let out = run("bash", &["docs/examples/sign.sh", "POST", "/v1/server/users", r#"{"id":"from-shell"}"#], &env);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"]["id"], "from-shell", "{out}");
    let out = run("bash", &["docs/examples/sign.sh", "GET", "/v1/server/users/from-shell"], &env);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["data"]["id"], "from-shell");

    let out = run(
        "python3",
        &["docs/examples/sign.py", "POST", "/v1/server/users/token", r#"{"user_id":"from-python"}"#],
        &env,
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], 200, "{out}");
    let token = v["reply"]["data"]["token"].as_str().unwrap().to_string();
    assert_eq!(server.get("/v1/me", Some(&token)).await.1["data"]["id"], "from-python");

    let out = run("node", &["docs/examples/sign.mjs", "PATCH", "/v1/server/users/from-python/change-id/renamed"], &env);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["status"].as_i64(), v["reply"]["data"]["id"].as_str()), (Some(200), Some("renamed")), "{out}");
    assert_eq!(server.get("/v1/me", Some(&token)).await.1["data"]["id"], "renamed", "the old token follows the rename");

    let secret = "guide-user-sig-secret-0123456789";
    server.configure_app("default", |s| s.user_sig_secret = natter::config::Secret::new(secret)).await;
    let token = run(
        "python3",
        &["docs/examples/mint_hs256.py", "minted-user", "3600"],
        &[("APP_ID", "default"), ("USER_SIG_SECRET", secret)],
    );
    let (status, me) = server.get("/v1/me", Some(token.trim())).await;
    assert_eq!((status, me["data"]["id"].as_str()), (200, Some("minted-user")), "{me}");
}
