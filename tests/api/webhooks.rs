//! Webhooks that lose nothing, and a before-send hook the app controls.

use crate::common;

use std::{
    collections::{HashMap, HashSet},
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{Backend, Delivery, Receiver, TestServer, User};
use natter::config::{HookPolicy, Secret};
use serde_json::{Value, json};

use common::WEBHOOK_SECRET as SECRET;
const FAST: &str = "[webhooks]\npoll_ms = 50\nbatch = 200\nretry_schedule_ms = [200, 400, 800, 1600]\n\
                    [default_app]\nguest_signups_per_hour = 1000000";

/// Runs the reference Standard Webhooks verifier (Python `standardwebhooks`) over deliveries.
fn verify_independently(deliveries: &[Delivery]) -> (usize, usize) {
    let mut child = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/verify_webhooks.py"))
        .arg(SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    {
        let mut stdin = child.stdin.take().unwrap();
        for d in deliveries {
            let line = json!({"id": d.id, "timestamp": d.timestamp, "signature": d.signature, "body": d.body});
            writeln!(stdin, "{line}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.starts_with("verified"), "verifier: {text} (pip install standardwebhooks)");
    let nums: Vec<usize> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (nums[0], nums[1])
}

async fn two_thousand_messages_make_two_thousand_signed_deliveries(backend: Backend) {
    let server = TestServer::start_on(backend, FAST);
    let receiver = Receiver::start();
    server.hook_up(&receiver, &["message.sent"]).await;
    let users: Vec<User> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(server.guest().await);
        }
        v
    };
    let group = server.group(&users[0], &[&users[1], &users[2], &users[3]]).await;
    let mut tasks = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let mut ws = server.connect(u).await;
        let (group, peer) = (group.clone(), users[(i + 1) % 4].id.clone());
        tasks.push(tokio::spawn(async move {
            for chunk in 0..5 {
                let frames = (0..100)
                    .map(|n| {
                        let cmid = format!("{i}-{chunk}-{n}");
                        if n % 2 == 0 {
                            json!({"type":"message","data":{"group": group, "content": "g", "client_msg_id": cmid}})
                        } else {
                            json!({"type":"message","data":{"recipient": peer, "content": "d", "client_msg_id": cmid}})
                        }
                    })
                    .collect();
                assert!(ws.pipeline(frames).await.iter().all(|r| r["code"] == 201));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let started = Instant::now();
    let got = receiver.wait_for(2000, Duration::from_secs(60)).await;
    // Nothing beyond the 2,000 arrives later either: once no event is pending, none can be sent.
    let store = &server.node().store;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = store.webhook_counts().await.unwrap();
        if !counts.iter().any(|(status, n)| status == "pending" && *n > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "the outbox never drained: {counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got_all = receiver.deliveries();
    let ids: HashSet<&str> = got_all.iter().map(|d| d.id.as_str()).collect();
    let events: HashSet<String> = got_all
        .iter()
        .map(|d| serde_json::from_str::<Value>(&d.body).unwrap()["type"].as_str().unwrap().to_string())
        .collect();
    let (verified, failed) = verify_independently(&got_all);
    println!(
        "{backend:?}: 2000 messages -> {} deliveries ({} distinct webhook-ids), drained in {:?}; independent verifier: {verified} verified, {failed} failed",
        got_all.len(),
        ids.len(),
        started.elapsed()
    );
    assert_eq!(got.len(), 2000);
    assert_eq!(got_all.len(), 2000);
    assert_eq!(ids.len(), 2000);
    assert_eq!(events, HashSet::from(["message.sent".to_string()]));
    assert_eq!((verified, failed), (2000, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_with_growing_gaps_and_410_disables_the_endpoint() {
    let server = TestServer::start_with(FAST);
    let receiver = Receiver::start();
    server.hook_up(&receiver, &["user.registered"]).await;
    receiver.state.lock().unwrap().fail_first = 3;
    server.guest().await;
    let got = receiver.wait_for(4, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 4, "3 failures then a delivery");
    assert!(got.iter().all(|d| d.id == got[0].id), "webhook-id is stable across retries");
    let gaps: Vec<u128> = got.windows(2).map(|w| (w[1].at - w[0].at).as_millis()).collect();
    assert!(gaps[0] < gaps[1] && gaps[1] < gaps[2], "retries back off: gaps {gaps:?} ms");
    let payload: Value = serde_json::from_str(&got[3].body).unwrap();
    assert_eq!(payload["type"], "user.registered");
    println!("retries: 3 failures then delivered; gaps between attempts {gaps:?} ms");

    {
        let mut st = receiver.state.lock().unwrap();
        st.fail_first = 0;
        st.status = Some(410);
    }
    server.guest().await;
    let got = receiver.wait_for(5, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 5);
    receiver.state.lock().unwrap().status = None;
    server.guest().await;
    // The next event is dead-lettered without a request: wait (bounded) until it is.
    let deadline = Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let dead = server.node().store.webhooks(None, "dead", 10).await.unwrap();
        if dead.len() >= 2 || Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(receiver.deliveries().len(), 5, "a 410 disables the endpoint: nothing more is sent");
    assert_eq!(dead.len(), 2, "the 410 event and the one after it are dead-lettered");
    // Setting the URL again (here: retrying the dead letters) re-enables the endpoint.
    let app = natter::domain::AppId::parse("default").unwrap();
    assert_eq!(server.node().store.retry_dead_webhooks(&app, None).await.unwrap(), 2);
    assert_eq!(receiver.wait_for(7, Duration::from_secs(10)).await.len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_and_presence_events_and_the_welcome_message() {
    let server = TestServer::start_with(FAST);
    let receiver = Receiver::start();
    server.hook_up(&receiver, &[]).await;
    server.configure_app("default", |s| s.welcome_message = "Welcome!".into()).await;
    let (a, b) = (server.guest().await, server.guest().await);
    let mut ws = server.connect(&b).await;
    ws.settle().await;
    let group = server.group(&a, &[&b]).await;
    let welcome = ws.next_message().await;
    assert_eq!((welcome["content"].as_str(), welcome["sender"].is_null()), (Some("Welcome!"), true));
    server.delete(&format!("/v1/groups/{group}/members/{}", b.id), &a.token).await;
    drop(ws);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        seen.clear();
        for d in receiver.deliveries() {
            let v: Value = serde_json::from_str(&d.body).unwrap();
            *seen.entry(v["type"].as_str().unwrap().to_string()).or_default() += 1;
        }
        if seen.contains_key("user.offline") && seen.contains_key("group.member_removed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for event in
        ["user.registered", "group.created", "message.sent", "group.member_removed", "user.online", "user.offline"]
    {
        assert!(seen.contains_key(event), "{event} delivered: {seen:?}");
    }
    println!("events delivered: {seen:?}");
}

/// What the hook answers, after how long, under which policy; the reply code; what is stored.
type HookCase = (&'static str, Value, u64, HookPolicy, i64, Option<&'static str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_before_send_hook_allows_rejects_modifies_and_times_out_per_policy() {
    let server = TestServer::start_with(FAST);
    let receiver = Receiver::start();
    let (alice, bob) = (server.guest().await, server.guest().await);
    let mut a = server.connect(&alice).await;
    // Baseline ack latency without a hook.
    let mut base = Vec::new();
    for n in 0..200 {
        let t = Instant::now();
        assert_eq!(a.send_dm(&bob.id, "plain", &format!("base-{n}")).await["code"], 201);
        base.push(t.elapsed());
    }
    let url = receiver.url("/before-send");
    server
        .configure_app("default", move |s| {
            s.before_send_url = url;
            s.before_send_timeout_ms = 300;
            s.allow_private_targets = true;
        })
        .await;
    let mut hooked = Vec::new();
    for n in 0..200 {
        let t = Instant::now();
        assert_eq!(a.send_dm(&bob.id, "allowed", &format!("hook-{n}")).await["code"], 201);
        hooked.push(t.elapsed());
    }
    let p99 = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() * 99 / 100]
    };
    let (base_p99, hook_p99) = (p99(&mut base), p99(&mut hooked));
    println!(
        "before-send hook on loopback: ack p99 {hook_p99:?} vs {base_p99:?} without (+{:?})",
        hook_p99.saturating_sub(base_p99)
    );

    let conv = a.send_dm(&bob.id, "x", "probe").await["data"]["conversation"].as_str().unwrap().to_string();
    let cases: [HookCase; 6] = [
        ("reject", json!({"action": "reject", "reason": "no spam"}), 0, HookPolicy::Open, 403, None),
        ("modify", json!({"action": "modify", "content": "[redacted]"}), 0, HookPolicy::Open, 201, Some("[redacted]")),
        ("hang, open", json!({"action": "reject"}), 1000, HookPolicy::Open, 201, Some("hang, open")),
        ("hang, closed", json!({"action": "allow"}), 1000, HookPolicy::Closed, 503, None),
        ("allow, closed", json!({"action": "allow"}), 0, HookPolicy::Closed, 201, Some("allow, closed")),
        ("garbage, closed", json!({"verdict": "maybe"}), 0, HookPolicy::Closed, 503, None),
    ];
    for (i, (what, answer, delay, policy, code, stored)) in cases.into_iter().enumerate() {
        {
            let mut st = receiver.state.lock().unwrap();
            st.hook_answer = answer;
            st.hook_delay_ms = delay;
        }
        server.configure_app("default", move |s| s.before_send_policy = policy).await;
        let reply = a.send_dm(&bob.id, what, &format!("case-{i}")).await;
        assert_eq!(reply["code"], code, "{what}: {reply}");
        if code == 403 {
            assert_eq!((reply["error"].as_str(), reply["msg"].as_str()), (Some("rejected_by_hook"), Some("no spam")));
        }
        let last = server.history(&bob, &conv).await.pop().unwrap();
        match stored {
            Some(content) => assert_eq!(last["content"], content, "{what}"),
            None => assert_ne!(last["client_msg_id"], format!("case-{i}"), "{what}: nothing stored"),
        }
    }
    let calls = receiver.state.lock().unwrap().hook_calls.len();
    assert!(calls >= 206, "the hook saw every client send ({calls})");
    // Trusted server-API sends bypass the hook.
    receiver.state.lock().unwrap().hook_answer = json!({"action": "reject"});
    let api = server.server_client("default", natter::auth::server_sig::Scheme::V2HmacSha256).await;
    let (status, _) = api
        .call(
            "POST",
            "/v1/server/messages",
            Some(json!({"recipient": bob.id, "content": "ops", "client_msg_id": "srv"})),
        )
        .await;
    assert_eq!(status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_get_no_request_unless_the_app_allows_them() {
    let server = TestServer::start_with(FAST);
    let receiver = Receiver::start();
    let other = Receiver::start();
    let port = receiver.addr.port();
    let targets = [
        format!("http://127.0.0.1:{port}/hooks"),
        format!("http://localhost:{port}/hooks"),
        format!("http://[::1]:{port}/hooks"),
        format!("http://[::ffff:127.0.0.1]:{port}/hooks"),
        format!("http://2130706433:{port}/hooks"),
        format!("http://0x7f.1:{port}/hooks"),
    ];
    let store = &server.node().store;
    let dead_count = || async { store.webhooks(None, "dead", 100).await.unwrap().len() };
    // The dispatcher uses the URL configured when it delivers, so each target is given time to
    // be attempted (and refused) before the next one is configured.
    for (i, url) in targets.iter().enumerate() {
        let url = url.clone();
        server
            .configure_app("default", move |s| {
                s.webhook_url = url;
                s.webhook_secret = Secret::new(SECRET);
                s.webhook_events = vec!["user.registered".into()];
                s.allow_private_targets = false;
            })
            .await;
        server.guest().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while dead_count().await < i + 1 {
            assert!(Instant::now() < deadline, "{} was not refused", targets[i]);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // A redirect from an allowed target to a private one is not followed either.
    other.state.lock().unwrap().redirect_to = receiver.url("/hooks");
    let redirect = other.url("/redirect");
    server
        .configure_app("default", move |s| {
            s.webhook_url = redirect;
            s.allow_private_targets = true;
        })
        .await;
    server.guest().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while dead_count().await < targets.len() + 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = store.webhooks(None, "dead", 100).await.unwrap();
    let reached = receiver.deliveries().len();
    println!(
        "SSRF: {} private targets and 1 redirect to loopback; requests that reached them: {reached}",
        targets.len()
    );
    for d in &dead {
        println!("  dead-lettered: {}", d.last_error.clone().unwrap_or_default());
    }
    assert_eq!(dead.len(), targets.len() + 1, "every attempt was refused and dead-lettered");
    let refused = dead
        .iter()
        .filter(|d| d.last_error.as_deref().is_some_and(|e| e.contains("refused") || e.contains("private")))
        .count();
    let redirects = dead
        .iter()
        .filter(|d| d.last_error.as_deref().is_some_and(|e| e.contains("redirects are not followed")))
        .count();
    assert_eq!(
        (refused, redirects),
        (targets.len(), 1),
        "each private target refused for its address, the redirect not followed"
    );
    assert_eq!(reached, 0);
}

on_both_stores!(two_thousand_messages_make_two_thousand_signed_deliveries);
