//! Tenants, the signed server API, app-signed user tokens, change of user id.

use crate::common;

use std::{process::Command, time::Duration};

use common::{Backend, Raw, ServerClient, TestServer, User, Ws, send_raw};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use natter::auth::server_sig::Scheme;
use serde_json::{Value, json};

async fn token_for(api: &ServerClient, user: &str) -> User {
    let (status, body) = api.call("POST", "/v1/server/users/token", Some(json!({"user_id": user}))).await;
    assert_eq!(status, 200, "{body}");
    User { token: body["data"]["token"].as_str().unwrap().to_string(), refresh: String::new(), id: user.to_string() }
}

/// What is wrong with a request, its headers, its body, and the error code it must get.
type Forgery = (&'static str, Vec<(&'static str, String)>, Vec<u8>, &'static str);

async fn signed_requests_succeed_with_both_schemes_and_every_forgery_gets_its_code(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let v1 = server.server_client("default", Scheme::V1Sha1).await;
    let v2 = server.server_client("default", Scheme::V2HmacSha256).await;
    assert_eq!(v1.call("POST", "/v1/server/users", Some(json!({"id": "alice"}))).await.0, 201);
    assert_eq!(v2.call("POST", "/v1/server/users", Some(json!({"id": "alice", "nickname": "Al"}))).await.0, 200);

    let path = "/v1/server/users";
    let body = br#"{"id":"bob"}"#.to_vec();
    let now = ServerClient::now();
    let wrong = ServerClient { secret: "not the secret".into(), ..v2.clone() };
    let mut replayed = v2.headers("POST", path, &body, now, "replay-1");
    assert_eq!(
        send_raw(server.addr, Raw { method: "POST", path, body: body.clone(), headers: replayed.clone() }).await.0,
        201
    );
    let tampered = v2.headers("POST", path, &body, now, "tamper-1");
    let mut cases: Vec<Forgery> = vec![
        ("wrong secret", wrong.headers("POST", path, &body, now, "n1"), body.clone(), "bad_signature"),
        // 302, not 301: the server's clock may tick one second past `now` before it checks.
        ("timestamp 302 s ahead", v2.headers("POST", path, &body, now + 302, "n2"), body.clone(), "stale_timestamp"),
        ("timestamp 301 s behind", v2.headers("POST", path, &body, now - 301, "n3"), body.clone(), "stale_timestamp"),
        ("replayed nonce", std::mem::take(&mut replayed), body.clone(), "nonce_replayed"),
        ("tampered body", tampered, br#"{"id":"mallory"}"#.to_vec(), "bad_signature"),
        (
            "unknown app key",
            {
                let mut h = v2.headers("POST", path, &body, now, "n4");
                h[0].1 = "ak_nobody".into();
                h
            },
            body.clone(),
            "unknown_app_key",
        ),
    ];
    for missing in ["App-Key", "Nonce", "Timestamp", "Signature"] {
        let h: Vec<_> = v2.headers("POST", path, &body, now, "n5").into_iter().filter(|(k, _)| *k != missing).collect();
        cases.push(("missing header", h, body.clone(), "missing_signature"));
    }
    for (what, headers, body, code) in cases {
        let (status, reply) = send_raw(server.addr, Raw { method: "POST", path, body, headers }).await;
        assert_eq!((status, reply["error"]["code"].as_str()), (401, Some(code)), "{what}: {reply}");
    }
    let (_, bob) = v1.call("GET", "/v1/server/users/bob", None).await;
    assert_eq!(bob["data"]["id"], "bob", "the legitimate request stored bob; the tampered one stored nothing");
    assert_eq!(v1.call("GET", "/v1/server/users/mallory", None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_is_accepted_once_across_the_cluster() {
    let server = TestServer::start_on(Backend::Postgres, "");
    let second = server.second_node();
    let api = server.server_client("default", Scheme::V2HmacSha256).await;
    let path = "/v1/server/users";
    let body = br#"{"id":"replayed"}"#.to_vec();
    let headers = api.headers("POST", path, &body, ServerClient::now(), "once-only");
    assert_eq!(
        send_raw(server.addr, Raw { method: "POST", path, body: body.clone(), headers: headers.clone() }).await.0,
        201
    );
    let mut accepted = 0;
    for i in 0..1000 {
        let addr = if i % 2 == 0 { second.addr } else { server.addr };
        let (status, reply) =
            send_raw(addr, Raw { method: "POST", path, body: body.clone(), headers: headers.clone() }).await;
        if status != 401 {
            accepted += 1;
        } else {
            assert_eq!(reply["error"]["code"], "nonce_replayed");
        }
    }
    println!("1000 replays of one signed request, half to a second node: accepted {accepted}");
    assert_eq!(accepted, 0);
}

/// RongCloud's SDK draws nonces from 10^9 values: at volume two requests share one. Different
/// signed requests with one nonce are all accepted, in both signature versions; only the same
/// signed request again is a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_share_a_nonce_are_accepted_and_only_a_repeat_is_a_replay() {
    let server = TestServer::start();
    for scheme in [Scheme::V1Sha1, Scheme::V2HmacSha256] {
        let api = server.server_client("default", scheme).await;
        let now = ServerClient::now();
        let send = |path: &'static str, body: &'static [u8], ts: i64| {
            let headers = api.headers("POST", path, body, ts, "314159");
            send_raw(server.addr, Raw { method: "POST", path, body: body.to_vec(), headers })
        };
        let first = send("/v1/server/users", br#"{"id":"n1"}"#, now).await;
        assert!(first.0 == 201 || first.0 == 200, "{scheme:?}: {first:?}");
        let later = send("/v1/server/users", br#"{"id":"n2"}"#, now - 1).await;
        assert!(later.0 == 201 || later.0 == 200, "{scheme:?}: the same nonce a second earlier: {later:?}");
        let replay = send("/v1/server/users", br#"{"id":"n1"}"#, now).await;
        assert_eq!((replay.0, replay.1["error"]["code"].as_str()), (401, Some("nonce_replayed")), "{scheme:?}");
        if scheme == Scheme::V2HmacSha256 {
            let other = send("/v1/server/users", br#"{"id":"n3"}"#, now).await;
            assert!(other.0 == 201 || other.0 == 200, "v2 signs the body: another body is another request: {other:?}");
        }
    }
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().expect("openssl is installed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A fresh key pair: (private PKCS#8 PEM, public SPKI PEM).
fn key_pair(dir: &std::path::Path, name: &str, genpkey: &[&str]) -> (String, String) {
    let private = dir.join(format!("{name}.pem"));
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend_from_slice(&["-out", private.to_str().unwrap()]);
    openssl(&args);
    let public = openssl(&["pkey", "-in", private.to_str().unwrap(), "-pubout"]);
    (std::fs::read_to_string(&private).unwrap(), public)
}

fn app_token(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_the_app_signs_connect_with_every_algorithm_and_forgeries_are_refused() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (rsa_private, rsa_public) =
        key_pair(dir.path(), "rsa", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
    let (ec_private, ec_public) =
        key_pair(dir.path(), "ec", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let (ed_private, ed_public) = key_pair(dir.path(), "ed", &["-algorithm", "ed25519"]);
    let secret = "app-user-sig-secret-0123456789abcdef";
    let (rp, ep, dp) = (rsa_public.clone(), ec_public, ed_public);
    server
        .configure_app("default", move |s| {
            s.user_sig_secret = natter::config::Secret::new(secret);
            s.user_sig_keys.insert("rsa-1".into(), rp);
            s.user_sig_keys.insert("ec-1".into(), ep);
            s.user_sig_keys.insert("ed-1".into(), dp);
            s.max_user_token_ttl = 86400;
        })
        .await;
    let now = natter::domain::now_millis() / 1000;
    let claims = |sub: &str| json!({"iss": "default", "sub": sub, "iat": now, "exp": now + 3600});
    let hs = EncodingKey::from_secret(secret.as_bytes());
    let rsa = EncodingKey::from_rsa_pem(rsa_private.as_bytes()).unwrap();
    let ec = EncodingKey::from_ec_pem(ec_private.as_bytes()).unwrap();
    let ed = EncodingKey::from_ed_pem(ed_private.as_bytes()).unwrap();
    let good = [
        ("HS256", app_token(Algorithm::HS256, None, &hs, claims("hs-user"))),
        ("RS256", app_token(Algorithm::RS256, Some("rsa-1"), &rsa, claims("rs-user"))),
        ("ES256", app_token(Algorithm::ES256, Some("ec-1"), &ec, claims("es-user"))),
        ("EdDSA", app_token(Algorithm::EdDSA, Some("ed-1"), &ed, claims("ed-user"))),
    ];
    for (alg, token) in &good {
        let mut ws = Ws::connect(&server.ws_url(), Some(token)).await;
        let reply = ws.action("ping", json!({})).await;
        assert_eq!(reply["code"], 200, "{alg} token connects");
        let (status, me) = server.get("/v1/me", Some(token)).await;
        assert_eq!(status, 200, "{alg}: {me}");
    }
    let (_, me) = server.get("/v1/me", Some(&good[1].1)).await;
    assert_eq!(me["data"]["id"], "rs-user", "the user was created on first sight");

    let unsigned = {
        use base64::Engine as _;
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims("none-user")))
    };
    let confused =
        app_token(Algorithm::HS256, Some("rsa-1"), &EncodingKey::from_secret(rsa_public.as_bytes()), claims("x"));
    let bad: Vec<(&str, String)> = vec![
        ("alg none", unsigned),
        ("HS256 signed with the RSA public key", confused),
        (
            "expired",
            app_token(
                Algorithm::HS256,
                None,
                &hs,
                json!({"iss": "default", "sub": "x", "iat": now - 7200, "exp": now - 3600}),
            ),
        ),
        (
            "nbf in the future",
            app_token(
                Algorithm::HS256,
                None,
                &hs,
                json!({"iss": "default", "sub": "x", "iat": now, "nbf": now + 600, "exp": now + 3600}),
            ),
        ),
        (
            "wrong iss",
            app_token(
                Algorithm::HS256,
                None,
                &hs,
                json!({"iss": "other-app", "sub": "x", "iat": now, "exp": now + 3600}),
            ),
        ),
        ("unknown kid", app_token(Algorithm::RS256, Some("rsa-9"), &rsa, claims("x"))),
        ("no exp", app_token(Algorithm::HS256, None, &hs, json!({"iss": "default", "sub": "x", "iat": now}))),
        (
            "lifetime over the cap",
            app_token(
                Algorithm::HS256,
                None,
                &hs,
                json!({"iss": "default", "sub": "x", "iat": now, "exp": now + 86400 * 2}),
            ),
        ),
        ("RS256 under an EC kid", app_token(Algorithm::RS256, Some("ec-1"), &rsa, claims("x"))),
        ("wrong secret", app_token(Algorithm::HS256, None, &EncodingKey::from_secret(b"guess"), claims("x"))),
    ];
    let mut accepted = 0;
    for (what, token) in &bad {
        let (status, body) = server.get("/v1/me", Some(token)).await;
        if status != 401 {
            accepted += 1;
            eprintln!("{what} accepted: {body}");
        }
        let mut ws = Ws::connect(&server.ws_url(), Some(token)).await;
        assert_eq!(ws.closed().await, Some(4501), "{what}");
    }
    println!("app-signed tokens: 4 algorithms accepted, {} forgeries tried, accepted {accepted}", bad.len());
    assert_eq!(accepted, 0);
}

async fn change_id_keeps_history_and_live_sessions(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let api = server.server_client("default", Scheme::V2HmacSha256).await;
    let alice = token_for(&api, "alice").await;
    let bob = token_for(&api, "bob").await;
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    b.settle().await;
    let conv = a.send_dm("bob", "before", "1").await["data"]["conversation"].as_str().unwrap().to_string();
    assert_eq!(b.next_message().await["sender"], "alice");
    // Bob's node now knows "alice" by heart; the change below must make it forget at once.
    assert_eq!(b.send_dm("alice", "to the old id", "0").await["code"], 201);
    assert_eq!(a.next_message().await["recipient"], "alice");

    let (status, body) = api.call("PATCH", "/v1/server/users/alice/change-id/alice2", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.call("PATCH", "/v1/server/users/bob/change-id/alice2", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")));
    a.settle().await;
    // The socket opened before the change keeps working and peers see the new id.
    assert_eq!(a.send_dm("bob", "after", "2").await["code"], 201);
    assert_eq!(b.next_message().await["sender"], "alice2");
    assert_eq!(b.send_dm("alice2", "to the new id", "3").await["code"], 201);
    assert_eq!(a.next_message().await["recipient"], "alice2");
    let reply = b.send_dm("alice", "to nobody", "4").await;
    assert_eq!((reply["code"].as_i64(), reply["error"].as_str()), (Some(404), Some("user_not_found")), "{reply}");
    let history = server.history(&alice, &conv).await;
    assert_eq!(history.len(), 4);
    assert_eq!(history[0]["sender"], "alice2", "old messages show the new id");
    // The old id is free again, and names its new owner, not the renamed user.
    assert_eq!(api.call("POST", "/v1/server/users", Some(json!({"id": "alice"}))).await.0, 201);
    let newcomer = token_for(&api, "alice").await;
    let mut n = server.connect(&newcomer).await;
    n.settle().await;
    assert_eq!(b.send_dm("alice", "hello newcomer", "5").await["code"], 201);
    assert_eq!(n.next_message().await["content"], "hello newcomer");
    a.pump(Duration::from_millis(300)).await;
    while let Some(frame) = a.try_pending() {
        assert_ne!(frame["data"]["content"], "hello newcomer", "the renamed user got the newcomer's message");
    }
}

async fn revoking_tokens_closes_sockets_and_refuses_old_tokens(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let api = server.server_client("default", Scheme::V1Sha1).await;
    let carol = token_for(&api, "carol").await;
    let mut ws = server.connect(&carol).await;
    ws.settle().await;
    let (status, _) = api.call("POST", "/v1/server/users/carol/revoke-tokens", None).await;
    assert_eq!(status, 200);
    assert_eq!(ws.closed().await, Some(4502));
    let (status, body) = server.get("/v1/me", Some(&carol.token)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("token_revoked")));
    let fresh = token_for(&api, "carol").await;
    assert_eq!(server.get("/v1/me", Some(&fresh.token)).await.0, 200, "new tokens work");
}

async fn the_server_api_manages_users_groups_messages_and_presence(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let api = server.server_client("default", Scheme::V2HmacSha256).await;
    for id in ["owner", "m1", "m2", "support"] {
        assert_eq!(api.call("POST", "/v1/server/users", Some(json!({"id": id, "first_name": "N"}))).await.0, 201);
    }
    let (status, body) = api.call("GET", "/v1/server/users/m1", None).await;
    assert_eq!((status, body["data"]["first_name"].as_str()), (200, Some("N")));
    let m1 = token_for(&api, "m1").await;
    let mut m1_ws = server.connect(&m1).await;
    m1_ws.settle().await;

    let (status, body) = api
        .call(
            "POST",
            "/v1/server/groups",
            Some(json!({"id": "team", "name": "Team", "owner": "owner", "members": ["m1"]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(m1_ws.next_event("group.created").await["id"], "team");
    let (status, _) = api.call("POST", "/v1/server/groups/team/members", Some(json!({"members": ["m2"]}))).await;
    assert_eq!(status, 200);
    let send = json!({"group": "team", "content": "welcome", "client_msg_id": "sys-1"});
    let (status, body) = api.call("POST", "/v1/server/messages", Some(send.clone())).await;
    assert_eq!((status, body["data"]["seq"].as_i64()), (201, Some(1)), "{body}");
    let pushed = m1_ws.next_message().await;
    assert!(pushed["sender"].is_null(), "system messages have no sender: {pushed}");
    let (status, again) = api.call("POST", "/v1/server/messages", Some(send)).await;
    assert_eq!((status, again["data"]["seq"].as_i64()), (200, Some(1)), "a resend stores nothing");
    let dm = json!({"from": "owner", "recipient": "m1", "content": "hello", "client_msg_id": "o-1"});
    assert_eq!(api.call("POST", "/v1/server/messages", Some(dm)).await.0, 201);
    assert_eq!(m1_ws.next_message().await["sender"], "owner");
    let (status, _) = api.call("DELETE", "/v1/server/groups/team/members/m2", None).await;
    assert_eq!(status, 200);

    let (_, p) = api.call("GET", "/v1/server/users/m1/presence", None).await;
    assert_eq!(p["data"]["status"], "online");
    let (_, q) = api.call("POST", "/v1/server/presence/query", Some(json!({"user_ids": ["m1", "m2", "ghost"]}))).await;
    assert_eq!(q["data"]["presence"].as_array().unwrap().len(), 2);
    assert_eq!(q["data"]["unknown"], json!(["ghost"]));

    server.configure_app("default", |s| s.auto_join = vec!["support".into()]).await;
    let (_, body) =
        api.call("POST", "/v1/server/groups", Some(json!({"name": "Help", "owner": "m1", "members": []}))).await;
    let members: Vec<&str> =
        body["data"]["members"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(members.contains(&"support"), "auto_join adds the support account: {members:?}");
}

#[tokio::test]
async fn login_or_register_signs_up_unknown_emails_when_the_app_allows_it() {
    let server = TestServer::start();
    let creds = json!({"email": "new@example.com", "password": "a fine password"});
    let (status, body) = server.post("/v1/auth/login", None, creds.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_credentials")));
    server.configure_app("default", |s| s.login_or_register = true).await;
    let (status, body) = server.post("/v1/auth/login", None, creds.clone()).await;
    assert_eq!((status, body["data"]["user"]["email"].as_str()), (200, Some("new@example.com")), "{body}");
    let (status, _) = server.post("/v1/auth/login", None, creds).await;
    assert_eq!(status, 200, "the second call logs in");
}

async fn two_apps_with_the_same_ids_never_see_each_other(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let a = server.server_client("default", Scheme::V2HmacSha256).await;
    let b = server.server_client("other", Scheme::V2HmacSha256).await;
    for api in [&a, &b] {
        for id in ["alice", "bob"] {
            assert_eq!(api.call("POST", "/v1/server/users", Some(json!({"id": id}))).await.0, 201);
        }
        let (status, _) = api
            .call(
                "POST",
                "/v1/server/groups",
                Some(json!({"id": "g1", "name": "G", "owner": "alice", "members": ["bob"]})),
            )
            .await;
        assert_eq!(status, 201, "the same group id exists in both apps");
    }
    let (alice_a, bob_b) = (token_for(&a, "alice").await, token_for(&b, "bob").await);
    let mut bob_b_ws = server.connect(&bob_b).await;
    let watch = bob_b_ws.action("presence", json!({"subscribe": ["alice"]})).await;
    assert_eq!(watch["data"][0]["status"], "offline");
    let mut alice_a_ws = server.connect(&alice_a).await;
    assert_eq!(alice_a_ws.send_dm("bob", "secret of app A", "1").await["code"], 201);
    assert_eq!(alice_a_ws.send_group("g1", "group secret of app A", "2").await["code"], 201);
    let (status, _) = a
        .call("POST", "/v1/server/messages", Some(json!({"group": "g1", "content": "sys A", "client_msg_id": "s"})))
        .await;
    assert_eq!(status, 201);
    // App B's bob: no delivery, no presence event from app A's alice, no history.
    bob_b_ws.assert_silent(Duration::from_millis(500)).await;
    let (_, convs) = server.get("/v1/conversations", Some(&bob_b.token)).await;
    for c in convs["data"].as_array().unwrap() {
        assert_eq!(c["last_seq"], 0, "app B sees none of app A's messages: {c}");
    }
    // App A's tokens and ids, tried on every client endpoint against app B's data.
    let dm_a = alice_a_ws.send_dm("bob", "x", "3").await["data"]["conversation"].as_str().unwrap().to_string();
    let mut leaks = 0;
    let mut probes = 0;
    for path in [
        format!("/v1/conversations/{dm_a}/messages"),
        "/v1/conversations/g1/messages".to_string(),
        "/v1/groups/g1".to_string(),
        "/v1/users?id=bob".to_string(),
    ] {
        let (status, body) = server.get(&path, Some(&bob_b.token)).await;
        probes += 1;
        let text = body.to_string();
        if text.contains("secret of app A") || text.contains("sys A") {
            leaks += 1;
        }
        assert!(status == 200 || status == 404, "{path}: {status}");
    }
    // Server API of app B on app A's objects sees only app B's.
    for (method, path) in [("GET", "/v1/server/users/alice"), ("GET", "/v1/server/users/alice/presence")] {
        let (_, body) = b.call(method, path, None).await;
        probes += 1;
        if body.to_string().contains("secret") {
            leaks += 1;
        }
    }
    let (_, online) = b.call("GET", "/v1/server/users/alice/presence", None).await;
    assert_eq!(online["data"]["status"], "offline", "app A's alice being online says nothing about app B's alice");
    // App A's token cannot act as app B's user.
    let (status, me) = server.get("/v1/me", Some(&alice_a.token)).await;
    assert_eq!((status, me["data"]["id"].as_str()), (200, Some("alice")));
    println!("two apps with the same user and group ids: {probes} cross-app probes, {leaks} leaks");
    assert_eq!(leaks, 0);
}

/// One probe: an endpoint of app B called with one of app A's ids.
#[derive(Debug, Clone)]
enum Probe {
    History(usize),
    GroupShow(usize),
    GroupAdd(usize, usize),
    GroupRemove(usize, usize),
    UserQuery(usize),
    WsSendGroup(usize),
    WsRead(usize),
    WsTyping(usize),
    ServerUser(usize),
    ServerPresence(usize),
    ServerGroupAdd(usize, usize),
    ServerGroupRemove(usize, usize),
    ServerSendGroup(usize),
    ServerChangeId(usize),
}

fn probe() -> impl proptest::strategy::Strategy<Value = Probe> {
    use proptest::prelude::*;
    let i = 0..8usize;
    prop_oneof![
        i.clone().prop_map(Probe::History),
        i.clone().prop_map(Probe::GroupShow),
        (i.clone(), i.clone()).prop_map(|(a, b)| Probe::GroupAdd(a, b)),
        (i.clone(), i.clone()).prop_map(|(a, b)| Probe::GroupRemove(a, b)),
        i.clone().prop_map(Probe::UserQuery),
        i.clone().prop_map(Probe::WsSendGroup),
        i.clone().prop_map(Probe::WsRead),
        i.clone().prop_map(Probe::WsTyping),
        i.clone().prop_map(Probe::ServerUser),
        i.clone().prop_map(Probe::ServerPresence),
        (i.clone(), i.clone()).prop_map(|(a, b)| Probe::ServerGroupAdd(a, b)),
        (i.clone(), i.clone()).prop_map(|(a, b)| Probe::ServerGroupRemove(a, b)),
        i.clone().prop_map(Probe::ServerSendGroup),
        i.prop_map(Probe::ServerChangeId),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_probes_with_one_apps_ids_never_touch_the_other_app() {
    use proptest::strategy::{Strategy, ValueTree};
    let server = TestServer::start();
    let a = server.server_client("default", Scheme::V2HmacSha256).await;
    let b = server.server_client("tenant-b", Scheme::V1Sha1).await;
    for id in ["alice", "bob", "only-in-a"] {
        a.call("POST", "/v1/server/users", Some(json!({"id": id}))).await;
    }
    b.call("POST", "/v1/server/users", Some(json!({"id": "bob"}))).await;
    for (gid, members) in [("g1", json!(["bob"])), ("ga", json!(["bob", "only-in-a"]))] {
        let (status, _) = a
            .call(
                "POST",
                "/v1/server/groups",
                Some(json!({"id": gid, "name": "A", "owner": "alice", "members": members})),
            )
            .await;
        assert_eq!(status, 201);
    }
    let alice = token_for(&a, "alice").await;
    let mut alice_ws = server.connect(&alice).await;
    let dm = alice_ws.send_dm("bob", "A-SECRET dm", "1").await["data"]["conversation"].as_str().unwrap().to_string();
    alice_ws.send_group("ga", "A-SECRET group", "2").await;
    let bob_b = token_for(&b, "bob").await;
    let mut bob_ws = server.connect(&bob_b).await;
    // App A's ids: users, groups, conversations, and some that exist in both apps.
    let ids = ["alice", "bob", "only-in-a", "g1", "ga", dm.as_str(), "dm_1_2", "ghost"];
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut leaks = Vec::new();
    let probes = 120;
    for _ in 0..probes {
        let p = probe().new_tree(&mut runner).unwrap().current();
        let id = |i: usize| ids[i % ids.len()];
        let reply: Value = match &p {
            Probe::History(i) => server.get(&format!("/v1/conversations/{}/messages", id(*i)), Some(&bob_b.token)).await.1,
            Probe::GroupShow(i) => server.get(&format!("/v1/groups/{}", id(*i)), Some(&bob_b.token)).await.1,
            Probe::GroupAdd(g, u) => {
                server.post(&format!("/v1/groups/{}/members", id(*g)), Some(&bob_b.token), json!({"members": [id(*u)]})).await.1
            }
            Probe::GroupRemove(g, u) => server.delete(&format!("/v1/groups/{}/members/{}", id(*g), id(*u)), &bob_b.token).await.1,
            Probe::UserQuery(i) => server.get(&format!("/v1/users?id={}", id(*i)), Some(&bob_b.token)).await.1,
            Probe::WsSendGroup(i) => bob_ws.send_group(id(*i), "from B", &format!("b{}", natter::domain::random_id("", 4))).await,
            Probe::WsRead(i) => bob_ws.action("read", json!({"conversation": id(*i), "seq": 1})).await,
            Probe::WsTyping(i) => bob_ws.action("typing", json!({"conversation": id(*i)})).await,
            Probe::ServerUser(i) => b.call("GET", &format!("/v1/server/users/{}", id(*i)), None).await.1,
            Probe::ServerPresence(i) => b.call("GET", &format!("/v1/server/users/{}/presence", id(*i)), None).await.1,
            Probe::ServerGroupAdd(g, u) => {
                b.call("POST", &format!("/v1/server/groups/{}/members", id(*g)), Some(json!({"members": [id(*u)]}))).await.1
            }
            Probe::ServerGroupRemove(g, u) => {
                b.call("DELETE", &format!("/v1/server/groups/{}/members/{}", id(*g), id(*u)), None).await.1
            }
            Probe::ServerSendGroup(i) => {
                b.call("POST", "/v1/server/messages", Some(json!({"group": id(*i), "content": "from B", "client_msg_id": natter::domain::random_id("", 4)}))).await.1
            }
            Probe::ServerChangeId(i) => b.call("PATCH", &format!("/v1/server/users/{}/change-id/renamed-by-b", id(*i)), None).await.1,
        };
        let text = reply.to_string();
        // A leak is app A's content, or a successful answer about a user only app A has; an
        // error that repeats the id the caller asked about reveals nothing.
        let succeeded = reply.get("error").is_none() && reply.get("code").is_none_or(|c| c.as_i64().unwrap_or(0) < 400);
        if text.contains("A-SECRET") || (succeeded && text.contains("only-in-a")) {
            leaks.push(format!("{p:?}: {text}"));
        }
    }
    // App A is exactly as it was: its users, groups and messages.
    let (_, ga) = a.call("GET", "/v1/server/users/only-in-a", None).await;
    assert_eq!(ga["data"]["id"], "only-in-a");
    let (status, _) = a.call("GET", "/v1/server/users/alice", None).await;
    assert_eq!(status, 200, "app B could not rename app A's alice");
    let history = server.history(&alice, "ga").await;
    assert_eq!(history.len(), 1, "nothing from app B landed in app A's group");
    let (_, group) = server.get("/v1/groups/ga", Some(&alice.token)).await;
    assert_eq!(group["data"]["members"].as_array().unwrap().len(), 3, "membership untouched");
    assert_eq!(server.history(&alice, &dm).await.len(), 1);
    println!("tenancy: {probes} random cross-app probes, {} leaks", leaks.len());
    assert!(leaks.is_empty(), "{leaks:#?}");
}

on_both_stores!(
    signed_requests_succeed_with_both_schemes_and_every_forgery_gets_its_code,
    change_id_keeps_history_and_live_sessions,
    revoking_tokens_closes_sockets_and_refuses_old_tokens,
    the_server_api_manages_users_groups_messages_and_presence,
    two_apps_with_the_same_ids_never_see_each_other,
);
