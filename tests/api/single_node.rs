//! One embedded node, real HTTP and WebSocket clients.

use crate::common;

use common::Backend;

use std::time::Duration;

use common::{TestServer, Ws};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

async fn two_users_exchange_direct_messages_and_the_senders_second_device_sees_its_own(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let alice = server.register("alice@example.com").await;
    let bob = server.register("bob@example.com").await;
    let mut alice_phone = server.connect(&alice).await;
    let mut alice_laptop = server.connect(&alice).await;
    let mut bob_phone = server.connect(&bob).await;
    // Registration with the Router is asynchronous to the upgrade; a ping round-trip settles it.
    for ws in [&mut alice_phone, &mut alice_laptop, &mut bob_phone] {
        assert_eq!(ws.action("ping", json!({})).await["code"], 200);
    }

    let reply = alice_phone.send_dm(&bob.id, "hi bob", "a-1").await;
    assert_eq!(reply["code"], 201, "{reply}");
    assert_eq!(reply["data"]["seq"], 1);
    let conversation = reply["data"]["conversation"].as_str().unwrap().to_string();

    let at_bob = bob_phone.next_message().await;
    assert_eq!(at_bob["content"], "hi bob");
    assert_eq!(at_bob["sender"], alice.id.as_str());
    assert_eq!(at_bob["recipient"], bob.id.as_str());
    assert_eq!(at_bob["seq"], 1);
    assert_eq!(at_bob["conversation"], conversation.as_str());
    let at_laptop = alice_laptop.next_message().await;
    assert_eq!(at_laptop["content"], "hi bob");

    let reply = bob_phone.send_dm(&alice.id, "hi alice", "b-1").await;
    assert_eq!(reply["data"]["seq"], 2);
    assert_eq!(alice_phone.next_message().await["content"], "hi alice");
    assert_eq!(alice_laptop.next_message().await["content"], "hi alice");
    // The sending session is answered by its reply, not echoed.
    bob_phone.assert_silent(Duration::from_millis(300)).await;
    alice_phone.assert_silent(Duration::from_millis(100)).await;
}

async fn history_survives_a_restart_with_the_same_seqs(backend: Backend) {
    let mut server = TestServer::start_on(backend, "");
    let alice = server.register("alice@example.com").await;
    let bob = server.register("bob@example.com").await;
    let mut ws = server.connect(&alice).await;
    for i in 1..=5 {
        let reply = ws.send_dm(&bob.id, &format!("m{i}"), &format!("c{i}")).await;
        assert_eq!(reply["data"]["seq"], i);
    }
    let conversation = ws.send_dm(&bob.id, "m6", "c6").await["data"]["conversation"].as_str().unwrap().to_string();
    drop(ws);
    server.restart();

    let (status, body) = server.get("/v1/conversations", Some(&bob.token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["id"], conversation.as_str());
    assert_eq!(body["data"][0]["last_seq"], 6);
    let (status, body) = server.get(&format!("/v1/conversations/{conversation}/messages"), Some(&bob.token)).await;
    assert_eq!(status, 200);
    let seqs: Vec<i64> =
        body["data"]["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(body["data"]["messages"][0]["content"], "m1");
    // Tokens survive the restart too: the signing key is kept in the store.
    let mut ws = server.connect(&alice).await;
    assert_eq!(ws.send_dm(&bob.id, "after restart", "c7").await["data"]["seq"], 7);
}

#[tokio::test]
async fn expired_and_tampered_tokens_are_closed_with_4501() {
    let server = TestServer::start_with("[auth]\naccess_ttl_secs = 1");
    let alice = server.register("alice@example.com").await;
    let mut tampered = alice.token.clone();
    tampered.pop();
    tampered.push(if alice.token.ends_with('A') { 'B' } else { 'A' });
    let mut ws = Ws::connect(&server.ws_url(), Some(&tampered)).await;
    assert_eq!(ws.closed().await, Some(4501));
    let mut ws = Ws::connect(&format!("{}?token=garbage", server.ws_url()), None).await;
    assert_eq!(ws.closed().await, Some(4501));

    // Past expiry plus the 30 s leeway is too long for a test; the REST check uses the same verifier.
    let (status, body) = server.get("/v1/me", Some(&tampered)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_token");
    let (status, body) = server.get("/v1/me", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
}

#[tokio::test]
async fn an_expired_token_is_refused_with_token_expired() {
    // A token whose exp lies beyond the leeway in the past, signed with the node's real key.
    let server = TestServer::start_with("[auth]\nsigning_key = \"0123456789abcdef0123456789abcdef-test\"");
    let alice = server.register("alice@example.com").await;
    let claims = {
        use base64::Engine as _;
        let payload = alice.token.split('.').nth(1).unwrap();
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap();
        let mut claims: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let now = natter::domain::now_millis() / 1000;
        claims["exp"] = json!(now - 120);
        claims["iat"] = json!(now - 300);
        claims["nbf"] = json!(now - 300);
        claims
    };
    let header = alice.token.split('.').next().unwrap();
    let header: serde_json::Value = {
        use base64::Engine as _;
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
    };
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = header["kid"].as_str().map(str::to_string);
    let expired = jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef-test"),
    )
    .unwrap();
    let (status, body) = server.get("/v1/me", Some(&expired)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("token_expired")), "{body}");
    let mut ws = Ws::connect(&server.ws_url(), Some(&expired)).await;
    assert_eq!(ws.closed().await, Some(4501));
}

async fn wrong_passwords_duplicate_emails_and_bad_bodies_get_their_codes(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    server.register("alice@example.com").await;
    let (status, body) = server
        .post(
            "/v1/auth/register",
            None,
            json!({"email": "ALICE@example.com", "password": "another password", "first_name": "A", "last_name": "B"}),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("email_taken")));
    let (status, body) =
        server.post("/v1/auth/login", None, json!({"email": "alice@example.com", "password": "wrong password"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_credentials")));
    let (status, unknown) =
        server.post("/v1/auth/login", None, json!({"email": "nobody@example.com", "password": "wrong password"})).await;
    assert_eq!(status, 401);
    assert_eq!(unknown, body, "unknown emails look exactly like wrong passwords");
    let (status, body) = server.post("/v1/auth/register", None, json!({"email": "x@y.io", "password": "short"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("validation_failed")));
    let (status, body) = server.get("/v1/nowhere", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    let res = reqwest::Client::new().post(server.url("/v1/auth/login")).body("{nope").send().await.unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");
    let (status, body) = server
        .post("/v1/auth/login", None, json!({"email": "alice@example.com", "password": "correct horse battery"}))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn content_kind_and_meta_round_trip_and_oversize_content_is_refused() {
    let server = TestServer::start_with("[chat]\nmax_content_bytes = 100");
    let alice = server.register("alice@example.com").await;
    let bob = server.register("bob@example.com").await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    b.settle().await;
    let reply = a
        .request(json!({"type": "message", "data": {"recipient": bob.id, "content": "look", "client_msg_id": "1",
            "kind": "image", "meta": {"url": "https://x.test/a.png", "w": 640}}}))
        .await;
    assert_eq!(reply["code"], 201, "{reply}");
    let m = b.next_message().await;
    assert_eq!((m["kind"].as_str(), m["meta"]["w"].as_i64()), (Some("image"), Some(640)));
    let reply = a.send_dm(&bob.id, &"x".repeat(101), "2").await;
    assert_eq!((reply["code"].as_i64(), reply["error"].as_str()), (Some(413), Some("payload_too_large")));
    let reply = a
        .request(json!({"type": "message", "data": {"recipient": bob.id, "content": "x", "client_msg_id": "3", "meta": [1]}}))
        .await;
    assert_eq!(reply["error"], "validation_failed");
    assert_eq!(a.send_dm(&bob.id, "still fine", "4").await["data"]["seq"], 2, "nothing stored for refused sends");
}

#[tokio::test]
async fn an_oversize_frame_closes_the_socket_with_1009() {
    let server = TestServer::start_with("");
    let alice = server.register("alice@example.com").await;
    let mut ws = server.connect(&alice).await;
    let big = format!(r#"{{"type":"action","action":"ping","data":{{"pad":"{}"}}}}"#, "x".repeat(70 * 1024));
    ws.send_text(&big).await;
    assert_eq!(ws.closed().await, Some(1009));
}

#[tokio::test]
async fn twenty_malformed_frames_each_get_their_code_and_the_socket_stays_open() {
    let server = TestServer::start();
    let alice = server.register("alice@example.com").await;
    server.register("bob@example.com").await;
    let mut ws = server.connect(&alice).await;
    let cases: [(&str, &str); 20] = [
        ("", "invalid_json"),
        ("{", "invalid_json"),
        ("hello", "invalid_json"),
        ("[]", "invalid_frame"),
        ("17", "invalid_frame"),
        ("{}", "invalid_frame"),
        (r#"{"type":null}"#, "invalid_frame"),
        (r#"{"type":"teleport"}"#, "unknown_type"),
        (r#"{"type":"action"}"#, "invalid_frame"),
        (r#"{"type":"action","action":"dance"}"#, "unknown_action"),
        (r#"{"type":"action","action":"read","data":{}}"#, "validation_failed"),
        (r#"{"type":"action","action":"read","data":{"conversation":"x","seq":-1}}"#, "validation_failed"),
        (r#"{"type":"message","data":{}}"#, "validation_failed"),
        (r#"{"type":"message","data":{"recipient":"no one","content":"x","client_msg_id":"1"}}"#, "validation_failed"),
        (r#"{"type":"message","data":{"recipient":"ghost","content":"x","client_msg_id":"1"}}"#, "user_not_found"),
        (r#"{"type":"message","data":{"content":"x","client_msg_id":"1"}}"#, "validation_failed"),
        (r#"{"type":"message","data":{"group":"nope","content":"x","client_msg_id":"1"}}"#, "group_not_found"),
        (r#"{"type":"message","data":{"recipient":"ghost","content":"","client_msg_id":"1"}}"#, "validation_failed"),
        (r#"{"type":"action","action":"login","data":{"token":"x"}}"#, "already_authenticated"),
        (r#"{"type":"action","action":"history","data":{"conversation":"dm_1_999"}}"#, "conversation_not_found"),
    ];
    for (frame, code) in cases {
        ws.send_text(frame).await;
        let reply = ws.next().await;
        assert_eq!(reply["type"], "reply", "{frame}: {reply}");
        assert_eq!(reply["error"], code, "{frame}: {reply}");
    }
    ws.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    assert_eq!(ws.next().await["error"], "unsupported_frame");
    let pong = ws.action("ping", json!({})).await;
    assert_eq!(pong["code"], 200, "socket still works after bad input");
    println!("malformed frames: 21 answered with their codes, socket open");
}

#[tokio::test]
async fn a_socket_can_log_in_with_its_first_frame_and_is_closed_if_it_never_does() {
    let server =
        TestServer::start_with("[ws]\nauth_timeout_secs = 1\nmessages_per_second = 1000\nmessage_burst = 1000");
    let alice = server.register("alice@example.com").await;
    let bob = server.register("bob@example.com").await;

    let mut anon = Ws::connect(&server.ws_url(), None).await;
    let reply = anon.send_dm(&bob.id, "too early", "x").await;
    assert_eq!(reply["error"], "unauthorized");
    let reply = anon.action("login", json!({"email": "alice@example.com", "password": "correct horse battery"})).await;
    assert_eq!(reply["code"], 200, "{reply}");
    assert!(reply["data"]["access_token"].is_string());
    assert_eq!(anon.send_dm(&bob.id, "now", "x").await["code"], 201);

    let mut by_token = Ws::connect(&server.ws_url(), None).await;
    let reply = by_token.action("login", json!({"token": alice.token})).await;
    assert_eq!(reply["data"]["user"]["id"], alice.id.as_str());

    let mut registered = Ws::connect(&server.ws_url(), None).await;
    let reply = registered
        .action(
            "register",
            json!({"email": "carol@example.com", "password": "carol's password", "first_name": "C", "last_name": "D"}),
        )
        .await;
    assert_eq!(reply["code"], 200, "{reply}");
    assert!(reply["data"]["user"]["id"].as_str().unwrap().starts_with("u_"));

    let mut idle = Ws::connect(&server.ws_url(), None).await;
    assert_eq!(idle.closed().await, Some(4501));
}

async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_session(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let alice = server.register("alice@example.com").await;
    let mut ws = server.connect(&alice).await;
    assert_eq!(ws.action("ping", json!({})).await["code"], 200);

    let (status, body) = server.post("/v1/auth/refresh", None, json!({"refresh_token": alice.refresh})).await;
    assert_eq!(status, 200, "{body}");
    let next = body["data"]["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(next, alice.refresh);
    let (status, body) = server.post("/v1/auth/refresh", None, json!({"refresh_token": alice.refresh})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("refresh_token_reused")));
    // The whole family is gone: the rotated token too, and the session's sockets.
    let (status, _) = server.post("/v1/auth/refresh", None, json!({"refresh_token": next})).await;
    assert_eq!(status, 401);
    assert_eq!(ws.closed().await, Some(4502));
    let (status, body) = server.get("/v1/me", Some(&alice.token)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("token_revoked")));
}

async fn logout_closes_that_devices_sockets_with_4502(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let alice = server.register("alice@example.com").await;
    let (_, other) = server
        .post("/v1/auth/login", None, json!({"email": "alice@example.com", "password": "correct horse battery"}))
        .await;
    let other_token = other["data"]["access_token"].as_str().unwrap().to_string();
    let mut ws = server.connect(&alice).await;
    let mut other_ws = Ws::connect(&server.ws_url(), Some(&other_token)).await;
    assert_eq!(ws.action("ping", json!({})).await["code"], 200);
    assert_eq!(other_ws.action("ping", json!({})).await["code"], 200);
    let (status, _) = server.post("/v1/auth/logout", Some(&alice.token), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(ws.closed().await, Some(4502));
    assert_eq!(other_ws.action("ping", json!({})).await["code"], 200, "the other device stays logged in");
}

async fn a_guest_upgrades_keeping_its_id_and_history(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let bob = server.register("bob@example.com").await;
    let (status, body) = server.post("/v1/auth/guest", None, json!({})).await;
    assert_eq!(status, 201, "{body}");
    let guest = common::User::from(&body["data"]);
    assert_eq!(body["data"]["user"]["kind"], "guest");
    let mut ws = server.connect(&guest).await;
    assert_eq!(ws.send_dm(&bob.id, "hello as guest", "g1").await["code"], 201);

    let (status, body) = server
        .post(
            "/v1/auth/upgrade",
            Some(&guest.token),
            json!({"email": "g@example.com", "password": "now a member", "first_name": "G", "last_name": "H"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["user"]["id"], guest.id.as_str());
    assert_eq!(body["data"]["user"]["kind"], "user");
    let token = body["data"]["access_token"].as_str().unwrap();
    let (_, convs) = server.get("/v1/conversations", Some(token)).await;
    assert_eq!(convs["data"][0]["last_seq"], 1);
    let (status, body) = server
        .post(
            "/v1/auth/upgrade",
            Some(token),
            json!({"email": "z@example.com", "password": "whatever!", "first_name": "G", "last_name": "H"}),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("not_guest")));
}

#[tokio::test]
async fn guest_signups_are_limited_per_client_ip() {
    let server = TestServer::start_with("[default_app]\nguest_signups_per_hour = 3");
    for _ in 0..3 {
        assert_eq!(server.post("/v1/auth/guest", None, json!({})).await.0, 201);
    }
    let (status, body) = server.post("/v1/auth/guest", None, json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")));
}

async fn profiles_can_be_read_updated_and_queried(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let alice = server.register("alice@example.com").await;
    let bob = server.register("bob@example.com").await;
    let res = reqwest::Client::new()
        .patch(server.url("/v1/me"))
        .bearer_auth(&alice.token)
        .json(&json!({"nickname": "Al", "first_name": "Alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let (_, me) = server.get("/v1/me", Some(&alice.token)).await;
    assert_eq!(me["data"]["nickname"], "Al");
    assert_eq!(me["data"]["email"], "alice@example.com");
    let (_, found) = server.get("/v1/users?email=alice@example.com", Some(&bob.token)).await;
    assert_eq!(found["data"][0]["id"], alice.id.as_str());
    assert!(found["data"][0].get("email").is_none(), "other users' emails stay private");
    let (status, _) = server.get("/v1/users", Some(&bob.token)).await;
    assert_eq!(status, 400);
    let mut ws = server.connect(&bob).await;
    let reply = ws.action("query", json!({"first_name": "Alice"})).await;
    assert_eq!(reply["data"][0]["id"], alice.id.as_str());
}

async fn a_connection_hears_the_groups_its_user_is_in_and_a_logged_out_sessions_token_is_refused(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let alice = server.register("alice@example.com").await;
    let bob = server.register("bob@example.com").await;
    let (_, other) = server
        .post("/v1/auth/login", None, json!({"email": "alice@example.com", "password": "correct horse battery"}))
        .await;
    let other_token = other["data"]["access_token"].as_str().unwrap().to_string();
    let (first, second, left) =
        (server.group(&bob, &[&alice]).await, server.group(&bob, &[&alice]).await, server.group(&bob, &[&alice]).await);
    let mut ws = server.connect(&alice).await;
    assert_eq!(ws.action("group.leave", json!({"group": left})).await["code"], 200);
    drop(ws);

    // The token's user, session and conversations are read together when a socket opens.
    let mut ws = server.connect(&alice).await;
    assert_eq!(ws.action("ping", json!({})).await["code"], 200);
    let mut b = server.connect(&bob).await;
    for (group, text) in [(&first, "one"), (&left, "gone"), (&second, "two")] {
        assert_eq!(b.send_group(group, text, text).await["code"], 201);
    }
    let heard = ws.messages(2).await;
    let contents: Vec<&str> = heard.iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, vec!["one", "two"]);
    ws.assert_silent(Duration::from_millis(300)).await;

    let (status, _) = server.post("/v1/auth/logout", Some(&other_token), json!({})).await;
    assert_eq!(status, 200);
    let mut refused = Ws::connect(&server.ws_url(), Some(&other_token)).await;
    assert_eq!(refused.closed().await, Some(4501), "a logged-out session's token is refused at connect");
    let mut again = server.connect(&alice).await;
    assert_eq!(again.action("ping", json!({})).await["code"], 200, "the other session still connects");
}

#[tokio::test]
async fn health_and_readiness_answer_on_both_ports_and_metrics_only_on_the_admin_port() {
    let server = TestServer::start();
    assert_eq!(server.get("/healthz", None).await.0, 200);
    let (status, body) = server.get("/readyz", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["ready"], true);
    for path in ["/healthz", "/readyz"] {
        let res = reqwest::get(server.admin_url(path)).await.unwrap();
        assert_eq!(res.status(), 200, "{path} on the admin port");
    }
    let text = reqwest::get(server.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(text.contains("natter_build_info"), "{text}");
    let (status, _) = server.get("/metrics", None).await;
    assert_eq!(status, 404, "the client port (what an Ingress publishes) does not serve metrics");
}

on_both_stores!(
    two_users_exchange_direct_messages_and_the_senders_second_device_sees_its_own,
    history_survives_a_restart_with_the_same_seqs,
    wrong_passwords_duplicate_emails_and_bad_bodies_get_their_codes,
    refresh_tokens_rotate_and_a_reused_one_revokes_the_session,
    logout_closes_that_devices_sockets_with_4502,
    a_guest_upgrades_keeping_its_id_and_history,
    profiles_can_be_read_updated_and_queried,
    a_connection_hears_the_groups_its_user_is_in_and_a_logged_out_sessions_token_is_refused,
);
