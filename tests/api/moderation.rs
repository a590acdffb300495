//! App-wide bans through the server API: sockets closed with 4503, every way back in refused with
//! 403 `banned` until the ban is lifted or ends by itself, and an audit trail of both. A user's
//! own blocks: direct messages refused and stored nowhere, typing and presence withheld.

use crate::common;

use std::time::{Duration, Instant};

use common::{Backend, TestServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use natter::{auth::server_sig::Scheme, domain::UserId};
use serde_json::{Value, json};

fn banned_reply(status: u16, body: &Value) -> (u16, Option<&str>) {
    (status, body["error"]["code"].as_str())
}

async fn a_banned_user_is_closed_with_4503_and_refused_everywhere_until_the_ban_is_lifted(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let secret = "moderation-user-sig-secret-0123456789";
    server.configure_app("default", |s| s.user_sig_secret = natter::config::Secret::new(secret)).await;
    let api = server.server_client("default", Scheme::V2HmacSha256).await;
    let alice = server.register("alice@example.com").await;
    let bob = server.register("bob@example.com").await;
    let mut phone = server.connect(&alice).await;
    let mut bystander = server.connect(&bob).await;
    phone.settle().await;

    let started = Instant::now();
    let (status, body) =
        api.call("POST", &format!("/v1/server/users/{}/ban", alice.id), Some(json!({"reason": "spam"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["data"]["until"].clone(), body["data"]["reason"].as_str()), (Value::Null, Some("spam")));
    assert_eq!(phone.closed().await, Some(4503));
    println!("ban: socket closed with 4503 after {:?}", started.elapsed());
    bystander.settle().await;

    // Every way back in.
    let (status, body) = server
        .post("/v1/auth/login", None, json!({"email": "alice@example.com", "password": "correct horse battery"}))
        .await;
    assert_eq!(banned_reply(status, &body), (403, Some("banned")));
    assert!(body["error"]["message"].as_str().unwrap().contains("spam"), "{body}");
    let (status, body) = server.get("/v1/me", Some(&alice.token)).await;
    assert_eq!(banned_reply(status, &body), (403, Some("banned")));
    let mut again = server.connect(&alice).await;
    assert_eq!(again.closed().await, Some(4503), "a connect is refused with the ban's close code");
    let (status, body) = server.post("/v1/auth/refresh", None, json!({"refresh_token": alice.refresh})).await;
    assert_eq!(banned_reply(status, &body), (403, Some("banned")));
    let (status, _) = api.call("POST", "/v1/server/users", Some(json!({"id": "minted"}))).await;
    assert!(status == 200 || status == 201);
    let (status, body) = api.call("POST", "/v1/server/users/minted/ban", Some(json!({"minutes": 30}))).await;
    assert_eq!(status, 200, "{body}");
    let until = body["data"]["until"].as_i64().unwrap();
    let expected = natter::domain::now_millis() + 30 * 60_000;
    assert!((until - expected).abs() < 10_000, "a 30-minute ban ends in 30 minutes: {until} vs {expected}");
    let now = natter::domain::now_millis() / 1000;
    let claims = json!({"iss": "default", "sub": "minted", "iat": now, "exp": now + 600});
    let minted =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))
            .unwrap();
    let (status, body) = server.get("/v1/me", Some(&minted)).await;
    assert_eq!(banned_reply(status, &body), (403, Some("banned")), "a token the app signed is refused too");

    let (status, body) = api.call("GET", "/v1/server/bans", None).await;
    assert_eq!(status, 200);
    let listed: Vec<(&str, Option<i64>)> =
        body["data"].as_array().unwrap().iter().map(|b| (b["user"].as_str().unwrap(), b["until"].as_i64())).collect();
    assert_eq!(listed, vec![("minted", Some(until)), (alice.id.as_str(), None)], "soonest end first");

    // Lifted: everything works again, and nothing else changed.
    let (status, body) = api.call("DELETE", &format!("/v1/server/users/{}/ban", alice.id), None).await;
    assert_eq!((status, body["data"]["lifted"].as_bool()), (200, Some(true)));
    let (status, body) = api.call("DELETE", &format!("/v1/server/users/{}/ban", alice.id), None).await;
    assert_eq!((status, body["data"]["lifted"].as_bool()), (200, Some(false)), "lifting twice is harmless");
    let (status, body) = server
        .post("/v1/auth/login", None, json!({"email": "alice@example.com", "password": "correct horse battery"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.get("/v1/me", Some(&alice.token)).await;
    assert_eq!(status, 200, "tokens issued before the ban work again once it is lifted");
    let mut back = server.connect(&alice).await;
    back.settle().await;

    // The audit trail, newest first, filtered and paged.
    let (status, body) = api.call("GET", &format!("/v1/server/audit?user={}", alice.id), None).await;
    assert_eq!(status, 200, "{body}");
    let actions: Vec<&str> = body["data"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, vec!["user.unbanned", "user.banned"]);
    assert_eq!((body["data"][1]["reason"].as_str(), body["data"][1]["actor"].clone()), (Some("spam"), Value::Null));
    let (_, first) = api.call("GET", "/v1/server/audit?limit=1", None).await;
    let cursor = first["cursor"].as_str().expect("a cursor while more remain").to_string();
    let (_, rest) = api.call("GET", &format!("/v1/server/audit?limit=10&cursor={cursor}"), None).await;
    let all: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["data"].as_array().unwrap())
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(all, vec!["user.unbanned", "user.banned", "user.banned"]);
    assert_eq!(rest["cursor"], Value::Null);

    // The same trail from the command line.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_natter"))
        .args(["audit", "--app", "default", "--user", &alice.id])
        .env("NATTER_DATABASE__URL", server.database_url())
        .env("NATTER_NATS__URL", "")
        .env("NATTER_LOG__LEVEL", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("NATS_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let actions: Vec<&str> = lines.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, vec!["user.unbanned", "user.banned"]);
}

async fn a_timed_ban_ends_by_itself(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let alice = server.guest().await;
    // A ban that ends 1.5 s from now, written as the server API's would be.
    let id = UserId::parse(alice.id.clone()).unwrap();
    let app = natter::domain::AppId::parse("default").unwrap();
    let key = server.node().store.user_key_by_id(&app, &id).await.unwrap().unwrap();
    let ends = natter::domain::now_millis() + 1500;
    let entry = natter::store::audit::NewAudit { action: "user.banned", ..Default::default() };
    server.node().store.ban_user(&app, key, ends, Some("cool down"), &entry).await.unwrap();
    let (status, body) = server.get("/v1/me", Some(&alice.token)).await;
    assert_eq!(banned_reply(status, &body), (403, Some("banned")));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = server.get("/v1/me", Some(&alice.token)).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the ban never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(natter::domain::now_millis() >= ends, "not before its time");
    let mut ws = server.connect(&alice).await;
    ws.settle().await;
}

async fn bad_ban_requests_are_refused_and_change_nothing(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let api = server.server_client("default", Scheme::V2HmacSha256).await;
    let alice = server.guest().await;
    let path = format!("/v1/server/users/{}/ban", alice.id);
    let cases = [
        (json!({"minutes": 0}), 400),
        (json!({"minutes": 10_000_000}), 400),
        (json!({"minutes": -5}), 400),
        (json!({"reason": "a\u{0}b"}), 400),
        (json!({"reason": "x".repeat(600)}), 400),
        (json!({"until": 5}), 400),
    ];
    for (body, expected) in cases {
        let (status, reply) = api.call("POST", &path, Some(body.clone())).await;
        assert_eq!(status, expected, "{body}: {reply}");
    }
    let (status, body) = api.call("POST", "/v1/server/users/nobody/ban", Some(json!({}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("user_not_found")));
    let (status, body) = api.call("GET", "/v1/server/audit?cursor=forged", None).await;
    assert_eq!(status, 400, "{body}");
    let (_, bans) = api.call("GET", "/v1/server/bans", None).await;
    assert_eq!(bans["data"], json!([]));
    let (status, _) = server.get("/v1/me", Some(&alice.token)).await;
    assert_eq!(status, 200);
}

async fn a_blocked_users_direct_messages_are_refused_and_stored_nowhere(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let api = server.server_client("default", Scheme::V2HmacSha256).await;
    let (alice, bob, carol) = (server.guest().await, server.guest().await, server.guest().await);
    let mut alice_ws = server.connect(&alice).await;
    let mut bob_ws = server.connect(&bob).await;
    bob_ws.settle().await;
    let dm = alice_ws.send_dm(&bob.id, "hi", "a1").await["data"]["conversation"].as_str().unwrap().to_string();
    bob_ws.next_message().await;
    let group = server.group(&bob, &[&alice]).await;

    for _ in 0..2 {
        let (status, body) = server.post("/v1/me/blocks", Some(&bob.token), json!({"user": alice.id})).await;
        assert_eq!((status, body["data"]["blocked"].as_bool()), (200, Some(true)), "blocking is idempotent: {body}");
    }
    let (status, body) = server.post("/v1/me/blocks", Some(&bob.token), json!({"user": carol.id})).await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = server.get("/v1/me/blocks", Some(&bob.token)).await;
    let listed: Vec<&str> = list["data"].as_array().unwrap().iter().map(|b| b["user"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&alice.id.as_str()) && listed.contains(&carol.id.as_str()));

    let refused = alice_ws.send_dm(&bob.id, "again", "a2").await;
    assert_eq!((refused["code"].as_i64(), refused["error"].as_str()), (Some(403), Some("blocked")), "{refused}");
    let mut carol_ws = server.connect(&carol).await;
    let refused = carol_ws.send_dm(&bob.id, "hello stranger", "c1").await;
    assert_eq!(refused["error"], "blocked");
    let (status, body) = api
        .call(
            "POST",
            "/v1/server/messages",
            Some(json!({"from": alice.id, "recipient": bob.id, "content": "x", "client_msg_id": "s1"})),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("blocked")), "the server API sends as the user");
    // Stored nowhere: no seq taken, no conversation created.
    assert_eq!(server.history(&bob, &dm).await.len(), 1);
    let (_, carols) = server.get("/v1/conversations", Some(&carol.token)).await;
    assert_eq!(carols["data"], json!([]), "a refused first message creates no conversation");
    // One way only, and groups are not filtered.
    assert_eq!(bob_ws.send_dm(&alice.id, "I can still write", "b1").await["code"], 201);
    assert_eq!(alice_ws.send_group(&group, "in the group", "g1").await["code"], 201);

    // Typing and presence of a blocked user do not reach the blocker.
    assert_eq!(alice_ws.action("typing", json!({"conversation": dm})).await["code"], 200);
    assert_eq!(alice_ws.send_group(&group, "after typing", "g2").await["code"], 201);
    loop {
        let frame = bob_ws.next().await;
        assert!(
            !(frame["event"] == "typing" && frame["data"]["conversation"] == dm.as_str()),
            "typing leaked: {frame}"
        );
        if frame["type"] == "message" && frame["data"]["content"] == "after typing" {
            break;
        }
    }
    let watched = bob_ws.action("presence", json!({"subscribe": [alice.id]})).await;
    assert_eq!(watched["data"][0]["status"], "offline", "alice is online but blocked: {watched}");

    // Unblocked: messages flow again.
    let (status, body) = server.call("DELETE", &format!("/v1/me/blocks/{}", alice.id), Some(&bob.token), None).await;
    assert_eq!((status, body["data"]["blocked"].as_bool()), (200, Some(false)));
    assert_eq!(alice_ws.send_dm(&bob.id, "friends again", "a3").await["code"], 201);

    // Bad input.
    let (status, _) = server.post("/v1/me/blocks", Some(&bob.token), json!({"user": bob.id})).await;
    assert_eq!(status, 400, "no one blocks themselves");
    let (status, body) = server.post("/v1/me/blocks", Some(&bob.token), json!({"user": "nobody"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("user_not_found")));
    let (status, _) = server.post("/v1/me/blocks", Some(&bob.token), json!({"user": "bad id!"})).await;
    assert_eq!(status, 400);
    let (status, _) = server.post("/v1/me/blocks", Some(&bob.token), json!({})).await;
    assert_eq!(status, 400);
}

on_both_stores!(
    a_banned_user_is_closed_with_4503_and_refused_everywhere_until_the_ban_is_lifted,
    a_timed_ban_ends_by_itself,
    bad_ban_requests_are_refused_and_change_nothing,
    a_blocked_users_direct_messages_are_refused_and_stored_nowhere,
);
