//! Push notifications end to end: the real binary (on SQLite and on PostgreSQL) sends to loopback
//! stand-ins for a Web Push service, FCM and APNs (`tests/support/push_receiver.py`), which check
//! every request with independent implementations (http_ece, PyJWT, hyper-h2) and answer in the
//! providers' documented shapes. Faults are real: the node is SIGKILLed with pushes pending.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{Backend, User, Ws, drop_postgres, fresh_postgres, get_from, post_to};
use serde_json::{Value, json};

/// The stand-in providers, one per test.
struct Providers {
    child: Child,
    _stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
    ready: Value,
}

impl Providers {
    fn start() -> Self {
        let mut child = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/push_receiver.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the push receiver (pip: pywebpush pyjwt h2; see .ci/run)");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value: Value = serde_json::from_str(&line).expect("receiver lines are JSON");
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        let ready = lines.recv_timeout(Duration::from_secs(30)).expect("the receiver starts");
        assert_eq!(ready["kind"], "ready", "{ready}");
        let stdin = child.stdin.take().unwrap();
        Providers { child, _stdin: stdin, lines, ready }
    }

    fn str(&self, key: &str) -> String {
        self.ready[key].as_str().unwrap().to_string()
    }

    /// A Web Push subscription whose endpoint's last segment is `name` (its kind: ok, gone, …).
    fn subscription(&self, name: &str) -> Value {
        json!({"endpoint": format!("{}{name}", self.str("webpush_endpoint")), "expirationTime": null,
               "keys": self.ready["keys"]})
    }

    /// The next request of one of `kinds` within `within`; requests of other kinds are kept out
    /// of the way (FCM's token requests), a failed check fails the test.
    fn next(&self, kinds: &[&str], within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            assert_ne!(line["kind"], "error", "the receiver refused a request: {line}");
            if kinds.iter().any(|k| line["kind"] == *k) {
                return Some(line);
            }
        }
    }

    fn expect(&self, kinds: &[&str]) -> Value {
        self.next(kinds, Duration::from_secs(20)).unwrap_or_else(|| panic!("no {kinds:?} request arrived"))
    }

    /// Nothing of `kinds` arrives for `quiet`.
    fn silent(&self, kinds: &[&str], quiet: Duration) {
        if let Some(line) = self.next(kinds, quiet) {
            panic!("expected no push, got {line}");
        }
    }
}

impl Drop for Providers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `natter serve` process on its own database, configured for the providers.
struct Node {
    child: Option<Child>,
    addr: SocketAddr,
    db: String,
    pg: Option<String>,
    _dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Node {
    fn start(backend: Backend, providers: &Providers, extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (db, pg) = match backend {
            Backend::Sqlite => (format!("sqlite://{}", dir.path().join("natter.db").display()), None),
            Backend::Postgres => {
                let (url, name) = fresh_postgres();
                (url, Some(name))
            }
        };
        let (vapid_private, _) = natter::push::webpush::Vapid::generate();
        let mut env: Vec<(String, String)> = [
            ("NATTER_PUSH__COALESCE_MS", "500"),
            ("NATTER_PUSH__POLL_MS", "50"),
            ("NATTER_PUSH__CLAIM_MS", "3000"),
            ("NATTER_PUSH__RETRY_SCHEDULE_MS", "[300, 300, 300]"),
            ("NATTER_DEFAULT_APP__ALLOW_PRIVATE_TARGETS", "true"),
            ("NATTER_DEFAULT_APP__GUEST_SIGNUPS_PER_HOUR", "1000000"),
            ("NATTER_DEFAULT_APP__VAPID_SUBJECT", "mailto:ops@example.com"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.push(("NATTER_DEFAULT_APP__VAPID_PRIVATE_KEY".into(), vapid_private));
        env.push(("NATTER_DEFAULT_APP__FCM_SERVICE_ACCOUNT".into(), providers.str("fcm_service_account")));
        env.push(("NATTER_DEFAULT_APP__FCM_ENDPOINT".into(), providers.str("http")));
        env.push(("NATTER_DEFAULT_APP__APNS_KEY".into(), providers.str("apns_key")));
        env.push(("NATTER_DEFAULT_APP__APNS_KEY_ID".into(), providers.str("apns_key_id")));
        env.push(("NATTER_DEFAULT_APP__APNS_TEAM_ID".into(), providers.str("apns_team_id")));
        env.push(("NATTER_DEFAULT_APP__APNS_TOPIC".into(), providers.str("apns_topic")));
        env.push(("NATTER_DEFAULT_APP__APNS_ENDPOINT".into(), providers.str("apns")));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut node = Node { child: None, addr: "127.0.0.1:0".parse().unwrap(), db, pg, _dir: dir, env };
        node.spawn();
        node
    }

    /// Starts the process on a fresh port.
    fn spawn(&mut self) {
        let bind = "127.0.0.1:0";
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_natter"));
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("NATTER_HTTP__BIND", bind)
            .env("NATTER_HTTP__ADMIN_BIND", "127.0.0.1:0")
            .env("NATTER_HTTP__WORKERS", "1")
            .env("NATTER_DATABASE__URL", &self.db)
            .env("NATTER_NATS__URL", "")
            .env("NATTER_LOG__LEVEL", "info")
            .env_remove("DATABASE_URL")
            .env_remove("NATS_URL");
        let (child, addr) = natter::launch::serve(&mut cmd, "node", Duration::from_secs(30)).expect("node starts");
        self.child = Some(child);
        self.addr = addr;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn ws(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    async fn guest(&self) -> User {
        let (status, body) = post_to(self.addr, "/v1/auth/guest", None, json!({})).await;
        assert_eq!(status, 201, "{body}");
        User::from(&body["data"])
    }

    /// The default app's server API (a fresh secret, made with the command line).
    fn server_api(&self) -> common::ServerClient {
        let cli = |args: &[&str]| {
            // With the node's settings: every start of the binary applies [default_app].
            let out = Command::new(env!("CARGO_BIN_EXE_natter"))
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("NATTER_DATABASE__URL", &self.db)
                .env("NATTER_NATS__URL", "")
                .env_remove("DATABASE_URL")
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "natter {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        };
        let shown: Value = serde_json::from_str(&cli(&["app", "show", "default", "--json"])).unwrap();
        let rotated = cli(&["app", "rotate-secret", "default"]);
        let secret = rotated.trim().strip_prefix("api_secret: ").unwrap().split_whitespace().next().unwrap();
        common::ServerClient {
            addr: self.addr,
            key: shown["api_key"].as_str().unwrap().to_string(),
            secret: secret.to_string(),
            scheme: natter::auth::server_sig::Scheme::V2HmacSha256,
        }
    }

    async fn register_device(&self, user: &User, device: Value) -> (u16, Value) {
        post_to(self.addr, "/v1/me/devices", Some(&user.token), device).await
    }

    async fn devices(&self, user: &User) -> Vec<Value> {
        let (status, body) = get_from(self.addr, "/v1/me/devices", Some(&user.token)).await;
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().unwrap().clone()
    }

    async fn connect(&self, user: &User) -> Ws {
        let mut ws = Ws::connect(&self.ws(), Some(&user.token)).await;
        ws.settle().await;
        ws
    }

    /// Waits (bounded) until no node holds a presence row for the user: they are offline.
    async fn offline(&self, user: &User) {
        sqlx::any::install_default_drivers();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&self.db).await.unwrap();
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM presence p JOIN users u ON u.user_key = p.user_key WHERE u.public_id = $1",
            )
            .bind(&user.id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
            if n == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{} still online", user.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if let Some(name) = self.pg.take() {
            drop_postgres(&name);
        }
    }
}

const WINDOW: Duration = Duration::from_millis(500);

async fn web_push_wakes_an_offline_user_once_per_window_encrypted_for_their_browser_only(backend: Backend) {
    let providers = Providers::start();
    let node = Node::start(backend, &providers, &[]);
    let (alice, bob) = (node.guest().await, node.guest().await);
    let (status, body) = node
        .register_device(&bob, json!({"platform": "webpush", "subscription": providers.subscription("ok-bob")}))
        .await;
    assert_eq!(status, 201, "{body}");
    // Alice has a device too: her own messages must not wake it.
    let (status, _) = node
        .register_device(&alice, json!({"platform": "webpush", "subscription": providers.subscription("ok-alice")}))
        .await;
    assert_eq!(status, 201);
    let (_, vapid) = get_from(node.addr, "/v1/push/vapid", Some(&bob.token)).await;
    let vapid_key = vapid["data"]["public_key"].as_str().expect("the app's VAPID key").to_string();

    // A burst of three to an offline Bob: one push, for the newest, counting all three.
    let mut ws = node.connect(&alice).await;
    for n in 1..=3 {
        let ack = ws.send_dm(&bob.id, &format!("hello {n}"), &format!("m{n}")).await;
        assert_eq!(ack["code"], 201, "{ack}");
    }
    let push = providers.expect(&["webpush"]);
    assert_eq!(push["endpoint"], "ok-bob", "{push}");
    let payload = &push["payload"];
    let conversation = payload["conversation"]["id"].as_str().unwrap().to_string();
    assert!(conversation.starts_with("dm_"), "{payload}");
    assert_eq!(payload["seq"], 3, "{payload}");
    assert_eq!(payload["messages"], 3, "{payload}");
    assert_eq!(payload["badge"], 3, "{payload}");
    assert_eq!(payload["sender"]["id"], alice.id.as_str(), "{payload}");
    assert_eq!(payload["body"], "hello 3 (+2)", "{payload}");
    assert_eq!(push["vapid_public_key"], vapid_key.as_str(), "signed with the key clients subscribe with");
    assert_eq!(push["vapid_claims"]["sub"], "mailto:ops@example.com");
    assert_eq!(push["ttl"], "86400");
    assert_eq!(push["urgency"], "high");
    assert_eq!(push["topic"].as_str().unwrap().len(), 32, "collapse key as the Topic: {push}");
    providers.silent(&["webpush"], WINDOW * 3);

    // Online, Bob gets his messages live and no push.
    let mut bob_ws = node.connect(&bob).await;
    ws.send_dm(&bob.id, "you're here", "m4").await;
    assert_eq!(bob_ws.next_message().await["content"], "you're here");
    providers.silent(&["webpush"], WINDOW * 3);

    // Gone again: the next message wakes him, with the badge of all four unread.
    drop(bob_ws);
    node.offline(&bob).await;
    ws.send_dm(&bob.id, "where did you go", "m5").await;
    let push = providers.expect(&["webpush"]);
    assert_eq!((push["payload"]["seq"].as_i64(), push["payload"]["badge"].as_i64()), (Some(5), Some(5)), "{push}");
    assert_eq!(push["payload"]["messages"], 1);
    providers.silent(&["webpush"], WINDOW * 3);
}

async fn fcm_and_apns_get_signed_requests_and_their_gone_answers_remove_the_device(backend: Backend) {
    let providers = Providers::start();
    let node = Node::start(backend, &providers, &[]);
    let (alice, carol, dave) = (node.guest().await, node.guest().await, node.guest().await);
    for (user, device) in [
        (&carol, json!({"platform": "fcm", "token": "ok-carol-phone", "app_version": "2.3.1"})),
        (&carol, json!({"platform": "fcm", "token": "gone-carol-old-phone"})),
        (&dave, json!({"platform": "apns", "token": format!("0c{}", "a".repeat(62))})),
        (&dave, json!({"platform": "apns", "token": format!("90{}", "b".repeat(62))})),
    ] {
        let (status, body) = node.register_device(user, device).await;
        assert_eq!(status, 201, "{body}");
    }
    let mut ws = node.connect(&alice).await;
    ws.send_dm(&carol.id, "hi carol", "c1").await;
    ws.send_dm(&dave.id, "hi dave", "d1").await;

    let mut fcm: Vec<Value> = Vec::new();
    let mut apns: Vec<Value> = Vec::new();
    while fcm.len() < 2 || apns.len() < 2 {
        let push = providers.expect(&["fcm", "apns"]);
        if push["kind"] == "fcm" { fcm.push(push) } else { apns.push(push) }
    }
    fcm.sort_by_key(|p| p["token"].as_str().unwrap().to_string());
    assert_eq!((fcm[0]["token"].as_str(), fcm[0]["status"].as_i64()), (Some("gone-carol-old-phone"), Some(404)));
    assert_eq!((fcm[1]["token"].as_str(), fcm[1]["status"].as_i64()), (Some("ok-carol-phone"), Some(200)));
    let message = &fcm[1]["message"];
    assert_eq!(message["notification"]["body"], "hi carol", "{message}");
    assert_eq!(fcm[1]["natter"]["seq"], 1);
    assert_eq!(message["android"]["notification"]["notification_count"], 1);
    apns.sort_by_key(|p| p["token"].as_str().unwrap().to_string());
    assert_eq!(apns[0]["status"], 200, "{}", apns[0]);
    assert_eq!(apns[1]["status"], 410, "{}", apns[1]);
    let body = &apns[0]["body"];
    assert_eq!(body["aps"]["alert"]["body"], "hi dave", "{body}");
    assert_eq!(body["aps"]["badge"], 1);
    assert_eq!(body["natter"]["conversation"]["kind"], "direct");
    let headers = &apns[0]["headers"];
    assert_eq!((headers["apns-push-type"].as_str(), headers["apns-priority"].as_str()), (Some("alert"), Some("10")));
    assert_eq!(headers["apns-collapse-id"].as_str().map(str::len), Some(32));

    // The gone ones are removed; the working ones stay.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (c, d) = (node.devices(&carol).await, node.devices(&dave).await);
        if c.len() == 1 && d.len() == 1 {
            assert_eq!(c[0]["token"], "ok-carol-phone");
            assert_eq!(c[0]["app_version"], "2.3.1");
            assert!(d[0]["token"].as_str().unwrap().starts_with("0c"));
            break;
        }
        assert!(Instant::now() < deadline, "gone devices still registered: {c:?} {d:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And are not pushed to again.
    ws.send_dm(&carol.id, "again", "c2").await;
    let push = providers.expect(&["fcm"]);
    assert_eq!(push["token"], "ok-carol-phone");
    providers.silent(&["fcm"], WINDOW * 3);
}

async fn a_provider_busy_for_a_moment_gets_the_push_again_after_backoff(backend: Backend) {
    let providers = Providers::start();
    let node = Node::start(backend, &providers, &[]);
    let (alice, erin) = (node.guest().await, node.guest().await);
    node.register_device(&erin, json!({"platform": "webpush", "subscription": providers.subscription("flaky-erin")}))
        .await;
    node.register_device(&erin, json!({"platform": "fcm", "token": "flaky-erin-phone"})).await;
    node.register_device(&erin, json!({"platform": "apns", "token": format!("fa{}", "c".repeat(62))})).await;
    let mut ws = node.connect(&alice).await;
    ws.send_dm(&erin.id, "knock knock", "e1").await;
    let mut statuses: Vec<(String, i64)> = (0..6)
        .map(|_| {
            let p = providers.expect(&["webpush", "fcm", "apns"]);
            (p["kind"].as_str().unwrap().to_string(), p["status"].as_i64().unwrap())
        })
        .collect();
    statuses.sort();
    let expected = [("apns", 200), ("apns", 503), ("fcm", 200), ("fcm", 503), ("webpush", 201), ("webpush", 503)];
    assert_eq!(statuses, expected.map(|(k, s)| (k.to_string(), s)).to_vec());
    providers.silent(&["webpush", "fcm", "apns"], WINDOW * 3);
    assert_eq!(node.devices(&erin).await.len(), 3, "a busy provider removes nothing");
}

async fn pushes_pending_when_the_node_is_killed_are_sent_after_it_restarts(backend: Backend) {
    let providers = Providers::start();
    // A long window: the jobs are surely still waiting when the node dies.
    let mut node = Node::start(backend, &providers, &[("NATTER_PUSH__COALESCE_MS", "3000")]);
    let (alice, frank, gina) = (node.guest().await, node.guest().await, node.guest().await);
    node.register_device(&frank, json!({"platform": "webpush", "subscription": providers.subscription("ok-frank")}))
        .await;
    // Gina's push service answers slowly: her push is in flight when the node dies.
    node.register_device(&gina, json!({"platform": "webpush", "subscription": providers.subscription("slow-gina")}))
        .await;
    let mut ws = node.connect(&alice).await;
    ws.send_dm(&gina.id, "for gina", "g1").await;
    let in_flight = providers.expect(&["webpush_in_flight"]);
    assert_eq!(in_flight["endpoint"], "slow-gina");
    let started = Instant::now();
    ws.send_dm(&frank.id, "for frank", "f1").await;
    node.kill();
    assert!(started.elapsed() < Duration::from_secs(3), "killed while gina's push is unanswered");
    drop(ws);
    node.spawn();

    // Frank's job was waiting for its window; Gina's was claimed by the dead node and is taken
    // again once the claim expires (at least once: her service sees it twice, the first time
    // answering a node that is gone).
    let mut got: Vec<(String, i64)> = Vec::new();
    while got.len() < 3 {
        let p = providers.expect(&["webpush"]);
        got.push((p["endpoint"].as_str().unwrap().to_string(), p["payload"]["seq"].as_i64().unwrap()));
    }
    got.sort();
    let expected = [("ok-frank", 1), ("slow-gina", 1), ("slow-gina", 1)];
    assert_eq!(got, expected.map(|(e, s)| (e.to_string(), s)).to_vec());
    providers.silent(&["webpush"], Duration::from_secs(5));
}

async fn muted_conversations_blocked_senders_banned_users_and_signed_out_devices_get_no_push(backend: Backend) {
    let providers = Providers::start();
    let node = Node::start(backend, &providers, &[]);
    let (alice, hal, ivy, jon) = (node.guest().await, node.guest().await, node.guest().await, node.guest().await);
    let kay = node.guest().await;
    for (user, name) in [(&hal, "ok-hal"), (&ivy, "ok-ivy"), (&jon, "ok-jon"), (&kay, "ok-kay")] {
        let (status, body) = node
            .register_device(user, json!({"platform": "webpush", "subscription": providers.subscription(name)}))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = post_to(
        node.addr,
        "/v1/groups",
        Some(&alice.token),
        json!({"name": "Crew", "members": [hal.id, ivy.id, jon.id, kay.id]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let group = body["data"]["id"].as_str().unwrap().to_string();
    // Hal mutes the group, Ivy blocks Alice, Jon signs out.
    let (status, body) = common::call_at(
        node.addr,
        "PATCH",
        &format!("/v1/conversations/{group}"),
        Some(&hal.token),
        Some(json!({"muted_until": 4_102_444_800_000i64})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_to(node.addr, "/v1/me/blocks", Some(&ivy.token), json!({"user": alice.id})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_to(node.addr, "/v1/auth/logout", Some(&jon.token), json!({})).await;
    assert!(status < 300, "{body}");
    let jon_again = post_to(node.addr, "/v1/auth/refresh", None, json!({"refresh_token": jon.refresh})).await;
    assert_eq!(jon_again.0, 401, "signed out for good");
    // Kay is banned by the app: a banned user's devices are not woken with what they may not read.
    let (status, body) = node
        .server_api()
        .call("POST", &format!("/v1/server/users/{}/ban", kay.id), Some(json!({"reason": "spam"})))
        .await;
    assert_eq!(status, 200, "{body}");

    let mut ws = node.connect(&alice).await;
    let ack = ws.send_group(&group, "anyone?", "x1").await;
    assert_eq!(ack["code"], 201, "{ack}");
    providers.silent(&["webpush"], WINDOW * 4);

    // The group speaks as a whole: Hal unmutes and the next message wakes him, with the group
    // named and the sender in the body.
    let (status, _) = common::call_at(
        node.addr,
        "PATCH",
        &format!("/v1/conversations/{group}"),
        Some(&hal.token),
        Some(json!({"muted_until": null})),
    )
    .await;
    assert_eq!(status, 200);
    let ack = ws.send_group(&group, "hal?", "x2").await;
    assert_eq!(ack["code"], 201, "{ack}");
    let push = providers.expect(&["webpush"]);
    assert_eq!(push["endpoint"], "ok-hal");
    assert_eq!(push["payload"]["title"], "Crew", "{push}");
    assert_eq!(push["payload"]["conversation"]["kind"], "group");
    assert_eq!(push["payload"]["seq"], 2, "{push}");
    providers.silent(&["webpush"], WINDOW * 3);
}

async fn apps_without_credentials_get_push_needed_webhooks_with_the_device_and_preview(backend: Backend) {
    let providers = Providers::start();
    let hooks = format!("{}/hooks", providers.str("http"));
    let node = Node::start(
        backend,
        &providers,
        &[
            ("NATTER_DEFAULT_APP__VAPID_PRIVATE_KEY", ""),
            ("NATTER_DEFAULT_APP__FCM_SERVICE_ACCOUNT", ""),
            ("NATTER_DEFAULT_APP__APNS_KEY", ""),
            ("NATTER_DEFAULT_APP__WEBHOOK_URL", &hooks),
            ("NATTER_DEFAULT_APP__WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ("NATTER_DEFAULT_APP__WEBHOOK_EVENTS", "[\"push.needed\"]"),
            ("NATTER_DEFAULT_APP__PUSH_PREVIEW", "sender"),
        ],
    );
    let (alice, kim) = (node.guest().await, node.guest().await);
    node.register_device(&kim, json!({"platform": "fcm", "token": "kims-phone"})).await;
    let (_, vapid) = get_from(node.addr, "/v1/push/vapid", Some(&kim.token)).await;
    assert_eq!(vapid["error"]["code"], "not_found", "no VAPID key: {vapid}");
    let mut ws = node.connect(&alice).await;
    ws.send_dm(&kim.id, "the secret plan", "k1").await;
    let hook = providers.expect(&["webhook"]);
    let body = &hook["body"];
    assert_eq!(body["type"], "push.needed", "{body}");
    let data = &body["data"];
    assert_eq!(data["recipient"], kim.id.as_str());
    assert_eq!(
        (data["device"]["platform"].as_str(), data["device"]["token"].as_str()),
        (Some("fcm"), Some("kims-phone"))
    );
    assert_eq!(data["seq"], 1);
    assert_eq!(data["badge"], 1);
    assert_eq!(data["sender"]["id"], alice.id.as_str());
    assert_eq!(data["body"], "New message", "push_preview = sender keeps the text out: {data}");
    assert!(!data.to_string().contains("secret plan"));
    providers.silent(&["webhook", "fcm"], WINDOW * 3);
}

async fn bad_registrations_are_refused_with_a_code_and_nothing_refused_is_kept(backend: Backend) {
    let providers = Providers::start();
    let node = Node::start(backend, &providers, &[("NATTER_DEFAULT_APP__ALLOW_PRIVATE_TARGETS", "false")]);
    let lee = node.guest().await;
    let https = |endpoint: &str| json!({"platform": "webpush", "subscription": {"endpoint": endpoint, "keys": providers.ready["keys"]}});
    for (device, code) in [
        (json!({"platform": "pager", "token": "x"}), "invalid_device"),
        (json!({"platform": "fcm"}), "invalid_device"),
        (json!({"platform": "fcm", "token": "has spaces"}), "invalid_device"),
        (json!({"platform": "apns", "token": "xyz"}), "invalid_device"),
        (json!({"platform": "webpush", "token": "abc"}), "invalid_device"),
        (
            json!({"platform": "webpush", "subscription": {"endpoint": "https://push.example.com/x",
                "keys": {"p256dh": "AAAA", "auth": "AAAA"}}}),
            "invalid_device",
        ),
        (https("http://push.example.com/plain"), "invalid_device"),
        (https("https://169.254.169.254/latest/meta-data"), "target_refused"),
        (https("https://127.0.0.1:9/x"), "target_refused"),
        (https("https://[::ffff:10.0.0.1]/x"), "target_refused"),
        (https("https://localhost:8443/x"), "target_refused"),
        (https("https://push.localhost/x"), "target_refused"),
        (json!({"platform": "fcm", "token": "t", "surprise": 1}), "validation_failed"),
        (json!([1, 2]), "validation_failed"),
    ] {
        let (status, body) = node.register_device(&lee, device.clone()).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some(code)), "{device} → {body}");
    }
    assert!(node.devices(&lee).await.is_empty(), "nothing refused was kept");
    let (status, body) = node.register_device(&lee, https("https://push.example.com/lee")).await;
    assert_eq!(status, 201, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_string();
    assert!(body["data"].get("keys").is_none(), "keys are not echoed");
    // Registering the same endpoint again renews it (same id), never duplicates.
    let (_, again) = node.register_device(&lee, https("https://push.example.com/lee")).await;
    assert_eq!(again["data"]["id"], id.as_str());
    assert_eq!(node.devices(&lee).await.len(), 1);

    let (status, body) = common::delete_at(node.addr, "/v1/me/devices/dev_nope", &lee.token).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("device_not_found")));
    let other = node.guest().await;
    let (status, _) = common::delete_at(node.addr, &format!("/v1/me/devices/{id}"), &other.token).await;
    assert_eq!(status, 404, "one user cannot remove another's device");
    let (status, _) = common::delete_at(node.addr, &format!("/v1/me/devices/{id}"), &lee.token).await;
    assert_eq!(status, 200);
    assert!(node.devices(&lee).await.is_empty());
}

/// Two nodes on one PostgreSQL database both run a dispatcher: every push is sent once, by one of
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_the_push_jobs_and_send_each_once() {
    let providers = Providers::start();
    // Five in flight per node at most: neither node can take every job of one window alone.
    let node = Node::start(Backend::Postgres, &providers, &[("NATTER_PUSH__BATCH", "5")]);
    let mut second = Node {
        child: None,
        addr: node.addr,
        db: node.db.clone(),
        pg: None,
        _dir: tempfile::tempdir().unwrap(),
        env: node.env.clone(),
    };
    second.spawn();
    let alice = node.guest().await;
    let mut recipients = Vec::new();
    for n in 0..30 {
        let user = node.guest().await;
        let (status, body) = node
            .register_device(
                &user,
                json!({"platform": "webpush", "subscription": providers.subscription(&format!("ok-{n}"))}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        recipients.push(user);
    }
    let mut ws = node.connect(&alice).await;
    for (n, user) in recipients.iter().enumerate() {
        let ack = ws.send_dm(&user.id, "to each their own", &format!("m{n}")).await;
        assert_eq!(ack["code"], 201, "{ack}");
    }
    let mut endpoints: Vec<String> =
        (0..30).map(|_| providers.expect(&["webpush"])["endpoint"].as_str().unwrap().to_string()).collect();
    endpoints.sort();
    let mut expected: Vec<String> = (0..30).map(|n| format!("ok-{n}")).collect();
    expected.sort();
    assert_eq!(endpoints, expected, "each once");
    providers.silent(&["webpush"], WINDOW * 4);
}

on_both_stores!(
    web_push_wakes_an_offline_user_once_per_window_encrypted_for_their_browser_only,
    fcm_and_apns_get_signed_requests_and_their_gone_answers_remove_the_device,
    a_provider_busy_for_a_moment_gets_the_push_again_after_backoff,
    pushes_pending_when_the_node_is_killed_are_sent_after_it_restarts,
    muted_conversations_blocked_senders_banned_users_and_signed_out_devices_get_no_push,
    apps_without_credentials_get_push_needed_webhooks_with_the_device_and_preview,
    bad_registrations_are_refused_with_a_code_and_nothing_refused_is_kept,
);
