//! Limits, abuse, bad input and hostile clients, each test printing its figure.

use crate::common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::TestServer;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{
    Message,
    client::IntoClientRequest,
    http::HeaderValue,
    protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    },
};

const KEY: &str = "0123456789abcdef0123456789abcdef-hardening";

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn sign(alg: Algorithm, kid: Option<&str>, secret: &[u8], claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(secret)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_bad_tokens_are_all_refused() {
    let server = TestServer::start_with(&format!("[auth]\nsigning_key = \"{KEY}\""));
    let alice = server.register("alice@example.com").await;
    let good_header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(alice.token.split('.').next().unwrap()).unwrap(),
    )
    .unwrap();
    let kid = good_header["kid"].as_str().unwrap().to_string();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(alice.token.split('.').nth(1).unwrap()).unwrap(),
    )
    .unwrap();
    let now = natter::domain::now_millis() / 1000;
    let with = |patch: Value| {
        let mut c = claims.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let ours = |c: &Value| sign(Algorithm::HS256, Some(&kid), KEY.as_bytes(), c);
    let parts: Vec<&str> = alice.token.split('.').collect();
    let cases: Vec<(&str, String)> = vec![
        ("alg none", format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})), parts[1])),
        ("HS512 with the real key", sign(Algorithm::HS512, Some(&kid), KEY.as_bytes(), &claims)),
        ("HS384 with the real key", sign(Algorithm::HS384, Some(&kid), KEY.as_bytes(), &claims)),
        ("wrong key", sign(Algorithm::HS256, Some(&kid), b"another-key-another-key-another-key", &claims)),
        ("unknown kid", sign(Algorithm::HS256, Some("k-nope"), KEY.as_bytes(), &claims)),
        ("no kid", sign(Algorithm::HS256, None, KEY.as_bytes(), &claims)),
        ("expired beyond the leeway", ours(&with(json!({"exp": now - 31, "iat": now - 100, "nbf": now - 100})))),
        ("not valid yet", ours(&with(json!({"nbf": now + 120})))),
        ("issued in the future", ours(&with(json!({"iat": now + 120, "nbf": now})))),
        ("wrong issuer", ours(&with(json!({"iss": "someone-else"})))),
        ("refresh type", ours(&with(json!({"typ": "refresh"})))),
        ("no exp", ours(&with(json!({"exp": null})))),
        ("no sub", ours(&with(json!({"sub": null})))),
        ("non-numeric sub", ours(&with(json!({"sub": "alice"})))),
        ("unknown user", ours(&with(json!({"sub": "999999"})))),
        ("unknown app", ours(&with(json!({"aud": "no-such-app"})))),
        ("stale token version", ours(&with(json!({"ver": 7})))),
        ("forged session id", ours(&with(json!({"sid": "s_forged"})))),
        ("tampered payload", format!("{}.{}.{}", parts[0], b64(&with(json!({"sub": "2"}))), parts[2])),
        ("tampered signature", format!("{}.{}.{}x", parts[0], parts[1], &parts[2][..parts[2].len() - 1])),
        ("truncated", alice.token[..alice.token.len() / 2].to_string()),
        ("empty", String::new()),
        ("garbage", "not.a.jwt".into()),
        ("a refresh token as access token", alice.refresh.clone()),
    ];
    let mut accepted = 0;
    for (what, token) in &cases {
        let (status, body) = server.get("/v1/me", Some(token)).await;
        if status != 401 {
            accepted += 1;
            eprintln!("{what}: accepted {status} {body}");
        }
    }
    println!("bad JWT table: {} cases, accepted {accepted}", cases.len());
    assert!(cases.len() >= 20);
    assert_eq!(accepted, 0);
    assert_eq!(server.get("/v1/me", Some(&alice.token)).await.0, 200, "the real token still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_signs_new_tokens_and_old_tokens_keep_working() {
    let server = TestServer::start();
    let alice = server.register("alice@example.com").await;
    let node = server.node();
    let before = node.tokens.signing_kid();
    let kid = node.store.rotate_signing_key().await.unwrap();
    // A second node started now signs with the new key; the first learns it on first sight.
    let second = server.second_node();
    let (_, login) = common::post_to(
        second.addr,
        "/v1/auth/login",
        None,
        json!({"email": "alice@example.com", "password": "correct horse battery"}),
    )
    .await;
    let fresh = login["data"]["access_token"].as_str().unwrap().to_string();
    assert_ne!(before, kid);
    assert_eq!(server.get("/v1/me", Some(&fresh)).await.0, 200, "node 1 verifies a token signed with the new key");
    assert_eq!(server.get("/v1/me", Some(&alice.token)).await.0, 200, "the old key still verifies");
    assert_eq!(node.tokens.signing_kid(), kid, "node 1 now signs with the new key");
    println!("key rotation: {before} -> {kid}; old and new tokens verify on both nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_guest_signups_from_one_ip_create_no_more_than_the_limit() {
    let server = TestServer::start_with("[default_app]\nguest_signups_per_hour = 10");
    let addr = server.addr;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..16 {
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut created = 0;
            for i in 0..625 {
                let spoof = format!("203.0.113.{}", (t * 625 + i) % 250);
                let res = client
                    .post(format!("http://{addr}/v1/auth/guest"))
                    .header("x-forwarded-for", spoof)
                    .send()
                    .await
                    .unwrap();
                if res.status().as_u16() == 201 {
                    created += 1;
                } else {
                    assert_eq!(res.status().as_u16(), 429);
                }
            }
            created
        }));
    }
    let mut created = 0;
    for t in tasks {
        created += t.await.unwrap();
    }
    println!(
        "10,000 guest sign-ups from one IP with spoofed X-Forwarded-For: created {created} (limit 10) in {:?}",
        started.elapsed()
    );
    assert!(created <= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_cors_and_security_headers() {
    let server = TestServer::start_with("[http]\ncors_origins = [\"https://app.example\"]");
    server.configure_app("default", |s| s.allowed_origins = vec!["https://app.example".into()]).await;
    let alice = server.register("alice@example.com").await;
    let handshake = |origin: &'static str| {
        let mut req = server.ws_url().into_client_request().unwrap();
        req.headers_mut().insert("origin", HeaderValue::from_static(origin));
        req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {}", alice.token)).unwrap());
        tokio_tungstenite::connect_async(req)
    };
    assert!(handshake("https://evil.example").await.is_err(), "a foreign origin is refused at the handshake");
    assert!(handshake("https://app.example").await.is_ok());

    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, server.url("/v1/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let ok = preflight("https://app.example").await.unwrap();
    assert_eq!(ok.status().as_u16(), 204);
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://app.example");
    assert_eq!(preflight("https://evil.example").await.unwrap().status().as_u16(), 403);
    let res = client.get(server.url("/healthz")).header("origin", "https://app.example").send().await.unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "https://app.example");
    for h in ["x-content-type-options", "x-frame-options", "content-security-policy", "referrer-policy", "x-request-id"]
    {
        assert!(res.headers().contains_key(h), "{h} missing");
    }
    let res = client.get(server.url("/healthz")).header("origin", "https://evil.example").send().await.unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    println!(
        "origin allowlist: foreign WebSocket handshake refused; CORS preflight 204/403; security headers on every response"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_gets_429_then_4003_and_a_huge_fragmented_message_gets_1009() {
    let server = TestServer::start_with("[ws]\nmessages_per_second = 20\nmessage_burst = 50");
    let alice = server.register("alice@example.com").await;
    let mut ws = server.connect(&alice).await;
    let started = Instant::now();
    let mut limited = 0;
    let mut sent = 0;
    let code = loop {
        ws.send_raw(Message::text(r#"{"type":"action","action":"ping"}"#)).await;
        sent += 1;
        if sent % 100 == 0 || sent > 1000 {
            // Read what came back so far.
            if !ws.pump(Duration::from_millis(5)).await {
                break ws.closed().await;
            }
            while let Some(v) = ws.try_pending() {
                if v["error"] == "rate_limited" {
                    limited += 1;
                }
            }
        }
        assert!(sent < 5000, "never closed");
    };
    println!("flood: {sent} frames in {:?}; {limited}+ answered 429; closed with {code:?}", started.elapsed());
    assert_eq!(code, Some(4003));

    let mut ws = server.connect(&alice).await;
    let chunk = "x".repeat(64 * 1024);
    let mut closed_at = None;
    for i in 0..160 {
        let opcode = if i == 0 { OpCode::Data(Data::Text) } else { OpCode::Data(Data::Continue) };
        let frame = Frame::message(chunk.clone().into_bytes(), opcode, i == 159);
        if ws.send_frame(Message::Frame(frame)).await.is_err() {
            closed_at = Some(i);
            break;
        }
    }
    let code = ws.closed().await;
    println!("10 MiB in 64 KiB continuation frames: refused after {:?} frames with {code:?}", closed_at);
    assert_eq!(code, Some(1009));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_pings_is_closed() {
    let server = TestServer::start_with("[ws]\nheartbeat_interval_secs = 1\nclient_timeout_secs = 2");
    let alice = server.register("alice@example.com").await;
    // A raw socket that reads the server's pings and never answers them (nor sends anything).
    let mut io = common::raw_socket(&server, &alice.token).await;
    let started = Instant::now();
    let code = common::close_code(&mut io).await;
    let took = started.elapsed();
    println!("silent client: closed with {code:?} after {took:?}");
    assert_eq!(code, Some(1000));
    assert!(took >= Duration::from_secs(2), "closed before the client timeout: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_attempts_are_limited_per_account_across_nodes() {
    let server = TestServer::start_on(common::Backend::Postgres, "");
    server.register("alice@example.com").await;
    let second = server.second_node();
    let wrong = json!({"email": "alice@example.com", "password": "not her password"});
    let mut statuses = Vec::new();
    for attempt in 0..12 {
        let addr = if attempt % 2 == 0 { server.addr } else { second.addr };
        statuses.push(common::post_to(addr, "/v1/auth/login", None, wrong.clone()).await.0);
    }
    // Registration does not count; ten attempts are allowed per 15 minutes, spread over two nodes.
    let limited = statuses.iter().filter(|s| **s == 429).count();
    println!("12 wrong passwords for one account over two nodes: {statuses:?}");
    assert_eq!(&statuses[..10], &[401; 10]);
    assert_eq!(limited, 2);
    let (status, body) = server
        .post("/v1/auth/login", None, json!({"email": "alice@example.com", "password": "correct horse battery"}))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")), "the right password waits too");
    assert!(body["error"]["message"].as_str().unwrap().contains("retry in"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_may_hold_only_so_many_sockets() {
    let server = TestServer::start_with("[ws]\nmax_connections_per_user = 2");
    let alice = server.register("alice@example.com").await;
    let mut one = server.connect(&alice).await;
    let mut two = server.connect(&alice).await;
    one.settle().await;
    two.settle().await;
    let mut three = server.connect(&alice).await;
    assert_eq!(three.closed().await, Some(4003));
    assert_eq!(one.action("ping", json!({})).await["code"], 200, "the first two stay");
    println!("connections per user: the third of a limit of 2 closed with 4003");
}

/// Four tasks doing `read` over and over, yielding between reads (a cached read never waits: the
/// changes under test must get to run), until the returned guard is stopped.
struct BusyReaders {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl BusyReaders {
    fn start<F, Fut>(read: F) -> BusyReaders
    where
        F: Fn() -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..4)
            .map(|_| {
                let (read, stop) = (read.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        read().await;
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        BusyReaders { stop, tasks }
    }

    async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_change_reads_back_at_once_while_other_requests_read_the_app() {
    let server = TestServer::start();
    let store = server.node().store.clone();
    let app = natter::domain::AppId::parse("default").unwrap();
    // Readers as busy as a node's dispatchers and senders: one of them is always mid-read when
    // the settings change, and what it read before the change must not stay cached.
    let readers = BusyReaders::start({
        let (store, app) = (store.clone(), app.clone());
        move || {
            let (store, app) = (store.clone(), app.clone());
            async move {
                store.app(&app).await.unwrap();
            }
        }
    });
    let mut stale = 0;
    for n in 0..1000 {
        let welcome = format!("welcome {n}");
        server.configure_app("default", |s| s.welcome_message = welcome.clone()).await;
        if store.app(&app).await.unwrap().unwrap().settings.welcome_message != welcome {
            stale += 1;
        }
    }
    readers.stop().await;
    println!("1,000 settings changes under 4 busy readers: {stale} read back stale");
    assert_eq!(stale, 0, "reads right after a change saw the old settings {stale} times in 1000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_users_old_id_stops_resolving_at_once_while_sends_look_it_up() {
    use natter::domain::{AppId, UserId};
    let server = TestServer::start();
    let store = server.node().store.clone();
    let app = AppId::parse("default").unwrap();
    let api = server.server_client("default", natter::auth::server_sig::Scheme::V2HmacSha256).await;
    let (status, body) = api.call("POST", "/v1/server/users", Some(json!({"id": "name-0"}))).await;
    assert!(status == 200 || status == 201, "{body}");
    let key = store.user_key_by_id(&app, &UserId::parse("name-0").unwrap()).await.unwrap().unwrap();
    // Readers as busy as a node's senders, always looking up the user's current id: one of them
    // is mid-read when it changes, and the old mapping it read must not stay cached.
    let current = std::sync::Arc::new(std::sync::Mutex::new("name-0".to_string()));
    let readers = BusyReaders::start({
        let (store, app, current) = (store.clone(), app.clone(), current.clone());
        move || {
            let (store, app) = (store.clone(), app.clone());
            let id = UserId::parse(current.lock().unwrap().clone()).unwrap();
            async move {
                store.user_key_by_id(&app, &id).await.unwrap();
            }
        }
    });
    let mut stale = 0;
    for n in 1..=1000 {
        let old = UserId::parse(format!("name-{}", n - 1)).unwrap();
        let new = UserId::parse(format!("name-{n}")).unwrap();
        store.change_user_id(&app, key, &new).await.unwrap();
        *current.lock().unwrap() = new.as_str().to_string();
        if store.user_key_by_id(&app, &old).await.unwrap().is_some() {
            stale += 1;
        }
    }
    readers.stop().await;
    println!("1,000 renames under 4 busy readers: the old id resolved {stale} times");
    assert_eq!(stale, 0, "a renamed user's old id still resolved {stale} times in 1000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_request_gets_408_not_a_backpressure_503() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = TestServer::start_with("[http]\nhead_timeout_ms = 300");
    // Silent, and stopping half-way through the head: both the client's doing.
    for sent in [&b""[..], b"GET /ws HTTP/1.1\r\nHost: natter\r\nUpgrade: websocket\r\n"] {
        let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        socket.write_all(sent).await.unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{text}");
        assert!(text.contains(r#""code":"request_timeout""#), "{text}");
        assert!(!text.to_ascii_lowercase().contains("retry-after"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(5), "answered after the 300 ms bound: {:?}", started.elapsed());
    }
}
