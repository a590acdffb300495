//! Tencent IM UserSigs, minted by Tencent's own `tls-sig-api-v2` (the PyPI and npm packages, unmodified),
//! open sockets and the client API like any token; tampered, foreign, expired and over-long ones
//! are refused with their codes.

use crate::common;

use std::process::Command;

use common::{TestServer, User, Ws, close_code, raw_socket};
use natter::config::Secret;
use serde_json::json;

const SDKAPPID: u64 = 1400000001;
const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";

/// A UserSig from the vendor's library; `now` pins its clock (for an expired one).
pub(crate) fn mint(sdkappid: u64, key: &str, identifier: &str, expire: u64, now: Option<u64>) -> String {
    let clock = now.map(|t| format!("import time; time.time = lambda: {t}\n")).unwrap_or_default();
    let script = format!(
        "{clock}import sys, TLSSigAPIv2\nprint(TLSSigAPIv2.TLSSigAPIv2(int(sys.argv[1]), sys.argv[2]).gen_sig(sys.argv[3], int(sys.argv[4])))"
    );
    let out = Command::new("python3")
        .args(["-c", &script, &sdkappid.to_string(), key, identifier, &expire.to_string()])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "tls-sig-api-v2 (pip install tls-sig-api-v2): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
}

/// A UserSig from the vendor's npm package (`userbuf`: one that signs a `TLS.userbuf` too).
fn mint_npm(sdkappid: u64, key: &str, identifier: &str, expire: u64, userbuf: bool) -> String {
    let mut args = vec![
        "tests/support/usersig_npm.js".to_string(),
        sdkappid.to_string(),
        key.to_string(),
        identifier.to_string(),
        expire.to_string(),
    ];
    if userbuf {
        args.push("userbuf".into());
    }
    let out = Command::new("node").args(&args).output().expect("node runs");
    assert!(out.status.success(), "tls-sig-api-v2 (npm): {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
}

fn as_user(token: &str, id: &str) -> User {
    User { token: token.to_string(), refresh: String::new(), id: id.to_string() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usersigs_from_tencents_library_connect_and_forgeries_are_refused() {
    let server = TestServer::start();
    server
        .configure_app("default", |s| {
            s.tencent_sdkappid = SDKAPPID;
            s.tencent_key = Secret::new(KEY);
        })
        .await;
    let alice_sig = mint(SDKAPPID, KEY, "alice_tx", 86400, None);
    let bob_sig = mint(SDKAPPID, KEY, "bob_tx", 86400, None);

    // REST: the user is created on first sight.
    let (status, me) = server.get("/v1/me", Some(&alice_sig)).await;
    assert_eq!((status, me["data"]["id"].as_str()), (200, Some("alice_tx")), "{me}");

    // Sockets, with the header and with the login action; a direct message between the two.
    let mut alice = server.connect(&as_user(&alice_sig, "alice_tx")).await;
    let mut bob = Ws::connect(&server.ws_url(), None).await;
    let reply = bob.action("login", json!({"token": bob_sig})).await;
    assert_eq!(reply["code"], 200, "{reply}");
    let sent = alice.send_dm("bob_tx", "hi from a UserSig", "u1").await;
    assert_eq!(sent["code"], 201, "{sent}");
    assert_eq!(bob.next_message().await["content"], "hi from a UserSig");

    // Refusals, each with its code.
    let mut tampered = alice_sig.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let cases = [
        ("tampered", tampered, "invalid_token"),
        ("another key", mint(SDKAPPID, "not-the-key", "alice_tx", 86400, None), "invalid_token"),
        ("unknown SDKAppID", mint(1400000999, KEY, "alice_tx", 86400, None), "invalid_token"),
        ("expired", mint(SDKAPPID, KEY, "alice_tx", 86400, Some(1_600_000_000)), "token_expired"),
        ("over max_user_token_ttl", mint(SDKAPPID, KEY, "alice_tx", 400 * 86400, None), "invalid_token"),
        ("an id Natter cannot hold", mint(SDKAPPID, KEY, "bad id!", 86400, None), "invalid_token"),
    ];
    for (what, token, code) in cases {
        let (status, body) = server.get("/v1/me", Some(&token)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some(code)), "{what}: {body}");
        let mut io = raw_socket(&server, &token).await;
        assert_eq!(close_code(&mut io).await, Some(4501), "{what}: the socket is closed with 4501");
    }
    // Revoking the user's tokens refuses the UserSigs minted before.
    let api = server.server_client("default", natter::auth::server_sig::Scheme::V2HmacSha256).await;
    let (status, _) = api.call("POST", "/v1/server/users/alice_tx/revoke-tokens", None).await;
    assert_eq!(status, 200);
    let (status, body) = server.get("/v1/me", Some(&alice_sig)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("token_revoked")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_without_tencent_settings_accepts_no_usersig() {
    let server = TestServer::start();
    let token = mint(SDKAPPID, KEY, "alice_tx", 86400, None);
    let (status, body) = server.get("/v1/me", Some(&token)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_token")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usersigs_from_tencents_npm_package_connect_and_forgeries_are_refused() {
    let server = TestServer::start();
    server
        .configure_app("default", |s| {
            s.tencent_sdkappid = SDKAPPID;
            s.tencent_key = Secret::new(KEY);
        })
        .await;
    let plain = mint_npm(SDKAPPID, KEY, "npm_alice", 86400, false);
    let with_userbuf = mint_npm(SDKAPPID, KEY, "npm_bob", 86400, true);
    for (token, id) in [(&plain, "npm_alice"), (&with_userbuf, "npm_bob")] {
        let (status, me) = server.get("/v1/me", Some(token)).await;
        assert_eq!((status, me["data"]["id"].as_str()), (200, Some(id)), "{me}");
    }
    let mut alice = server.connect(&as_user(&plain, "npm_alice")).await;
    let mut bob = server.connect(&as_user(&with_userbuf, "npm_bob")).await;
    bob.settle().await;
    assert_eq!(alice.send_dm("npm_bob", "minted in node", "n1").await["code"], 201);
    assert_eq!(bob.next_message().await["content"], "minted in node");

    for (what, token) in [
        ("another key", mint_npm(SDKAPPID, "not-the-key", "npm_alice", 86400, false)),
        ("unknown SDKAppID", mint_npm(1400000999, KEY, "npm_alice", 86400, false)),
        ("over max_user_token_ttl", mint_npm(SDKAPPID, KEY, "npm_alice", 400 * 86400, false)),
    ] {
        let (status, body) = server.get("/v1/me", Some(&token)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_token")), "{what}: {body}");
        let mut io = raw_socket(&server, &token).await;
        assert_eq!(close_code(&mut io).await, Some(4501), "{what}: the socket is closed with 4501");
    }
}
