//! Cluster mode: separate processes of the real binary on one PostgreSQL database and NATS, each
//! test with its own database and subject prefix. Faults are real: SIGKILL, SIGTERM, and a private
//! nats-server that the test stops and restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::{User, Ws, drop_postgres, fresh_postgres, get_from, post_to};
use serde_json::{Value, json};

const SHARED_NATS: &str = "nats://127.0.0.1:4222";

/// One `natter` process.
struct NodeProcess {
    child: Child,
    addr: SocketAddr,
}

impl NodeProcess {
    fn start(db: &str, nats: &str, prefix: &str, lease_secs: u64, extra: &[(String, String)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_natter"));
        cmd.envs(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("NATTER_HTTP__BIND", "127.0.0.1:0")
            .env("NATTER_HTTP__ADMIN_BIND", "127.0.0.1:0")
            .env("NATTER_HTTP__WORKERS", "1")
            .env("NATTER_DATABASE__URL", db)
            .env("NATTER_DATABASE__MAX_CONNECTIONS", "8")
            .env("NATTER_NATS__URL", nats)
            .env("NATTER_NATS__PREFIX", prefix)
            .env("NATTER_NODE__LEASE_SECS", lease_secs.to_string())
            .env("NATTER_LOG__LEVEL", "info")
            .env("NATTER_WS__MESSAGES_PER_SECOND", "100000")
            .env("NATTER_WS__MESSAGE_BURST", "100000")
            .env("NATTER_DEFAULT_APP__GUEST_SIGNUPS_PER_HOUR", "1000000")
            .env_remove("DATABASE_URL")
            .env_remove("NATS_URL");
        let (child, addr) = natter::launch::serve(&mut cmd, "node", Duration::from_secs(30)).expect("node starts");
        NodeProcess { child, addr }
    }

    fn ws(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "node did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private nats-server on a free port, for tests that stop it.
struct PrivateNats {
    child: Option<Child>,
    port: u16,
}

impl PrivateNats {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut nats = PrivateNats { child: None, port };
        nats.restart();
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "private nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A cluster of `n` nodes on a fresh database, dropped with the cluster.
struct Cluster {
    nodes: Vec<NodeProcess>,
    db: String,
    db_name: String,
    nats: String,
    prefix: String,
    extra: Vec<(String, String)>,
}

impl Cluster {
    fn start(n: usize, nats: &str, lease_secs: u64) -> Self {
        Self::start_with(n, nats, lease_secs, Vec::new())
    }

    /// With extra environment (settings) for every node.
    fn start_with(n: usize, nats: &str, lease_secs: u64, extra: Vec<(String, String)>) -> Self {
        let (db, db_name) = fresh_postgres();
        let prefix = format!("t{}", natter::domain::random_id("", 6));
        // All nodes start at once on the empty database, as pods of a new deployment would:
        // migrations, the default app and the signing key must each come out exactly once.
        let starting: Vec<_> = (0..n)
            .map(|_| {
                let (db, nats, prefix, extra) = (db.clone(), nats.to_string(), prefix.clone(), extra.clone());
                std::thread::spawn(move || NodeProcess::start(&db, &nats, &prefix, lease_secs, &extra))
            })
            .collect();
        let nodes = starting.into_iter().map(|t| t.join().expect("node start")).collect();
        Cluster { nodes, db, db_name, nats: nats.to_string(), prefix, extra }
    }

    fn add_node(&mut self) {
        self.nodes.push(NodeProcess::start(&self.db, &self.nats, &self.prefix, 15, &self.extra));
    }

    /// Outbox rows by status, read straight from the database.
    async fn outbox(&self) -> BTreeMap<String, i64> {
        use sqlx::{Connection, Row};
        let mut conn = sqlx::PgConnection::connect(&self.db).await.unwrap();
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM webhook_outbox GROUP BY status")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        rows.iter().map(|r| (r.get::<String, _>("status"), r.get::<i64, _>("n"))).collect()
    }

    /// Nodes that hold a presence row for the user.
    async fn presence_rows(&self, user: &User) -> i64 {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.db).await.unwrap();
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM presence p JOIN users u ON u.user_key = p.user_key WHERE u.public_id = $1",
        )
        .bind(&user.id)
        .fetch_one(&mut conn)
        .await
        .unwrap()
    }

    async fn guest(&self, node: usize) -> User {
        let (status, body) = post_to(self.nodes[node].addr, "/v1/auth/guest", None, json!({})).await;
        assert_eq!(status, 201, "{body}");
        User::from(&body["data"])
    }

    async fn connect(&self, node: usize, user: &User) -> Ws {
        let mut ws = Ws::connect(&self.nodes[node].ws(), Some(&user.token)).await;
        ws.settle().await;
        ws
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        drop_postgres(&self.db_name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_nodes_in_order_and_reach_every_device() {
    let cluster = Cluster::start(3, SHARED_NATS, 15);
    let (alice, bob, carol) = (cluster.guest(0).await, cluster.guest(1).await, cluster.guest(2).await);
    let mut alice_a = cluster.connect(0, &alice).await;
    let mut alice_c = cluster.connect(2, &alice).await;
    let mut bob_b = cluster.connect(1, &bob).await;
    let mut bob_c = cluster.connect(2, &bob).await;
    let mut carol_c = cluster.connect(2, &carol).await;

    let frames: Vec<Value> = (0..20)
        .map(|n| json!({"type":"message","data":{"recipient": bob.id, "content": format!("a{n}"), "client_msg_id": format!("a{n}")}}))
        .collect();
    assert!(alice_a.pipeline(frames).await.iter().all(|r| r["code"] == 201));
    for (who, ws) in
        [("bob on node 2", &mut bob_b), ("bob on node 3", &mut bob_c), ("alice's other device", &mut alice_c)]
    {
        let got: Vec<i64> = ws.messages(20).await.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
        assert_eq!(got, (1..=20).collect::<Vec<_>>(), "{who}");
    }
    assert_eq!(bob_b.send_dm(&alice.id, "back", "b1").await["data"]["seq"], 21);
    assert_eq!(alice_a.next_message().await["content"], "back");
    assert_eq!(alice_c.next_message().await["content"], "back");
    assert_eq!(bob_c.next_message().await["content"], "back", "the sender's other device gets it too");

    let (status, body) = post_to(
        cluster.nodes[1].addr,
        "/v1/groups",
        Some(&bob.token),
        json!({"name": "Everyone", "members": [alice.id, carol.id]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let group = body["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(carol_c.next_event("group.created").await["id"], group.as_str());
    assert_eq!(alice_a.next_event("group.created").await["id"], group.as_str());
    let frames: Vec<Value> = (0..10)
        .map(|n| json!({"type":"message","data":{"group": group, "content": format!("c{n}"), "client_msg_id": format!("c{n}")}}))
        .collect();
    assert!(carol_c.pipeline(frames).await.iter().all(|r| r["code"] == 201));
    for ws in [&mut alice_a, &mut alice_c, &mut bob_b, &mut bob_c] {
        let got: Vec<i64> = ws.messages(10).await.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
        assert_eq!(got, (1..=10).collect::<Vec<_>>());
    }
    println!("3 nodes: 20 DMs, 1 reply and 10 group messages reached every device in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_out_session_closes_on_every_node_within_two_seconds() {
    let cluster = Cluster::start(3, SHARED_NATS, 15);
    let alice = cluster.guest(0).await;
    let mut sockets = Vec::new();
    for n in 0..3 {
        sockets.push(cluster.connect(n, &alice).await);
    }
    let started = Instant::now();
    let (status, _) = post_to(cluster.nodes[1].addr, "/v1/auth/logout", Some(&alice.token), json!({})).await;
    assert_eq!(status, 200);
    for ws in &mut sockets {
        assert_eq!(ws.closed().await, Some(4502));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    println!("revocation: sockets on 3 nodes closed with 4502 within {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_nodes_and_a_killed_nodes_users_go_offline_after_its_lease() {
    let lease = 3;
    let mut cluster = Cluster::start(3, SHARED_NATS, lease);
    let (watcher, alice, bob) = (cluster.guest(0).await, cluster.guest(1).await, cluster.guest(2).await);
    let mut w = cluster.connect(0, &watcher).await;
    let reply = w.action("presence", json!({"subscribe": [alice.id, bob.id]})).await;
    assert_eq!(reply["data"][0]["status"], "offline");

    let phone = cluster.connect(1, &alice).await;
    assert_eq!(w.next_event("presence").await["status"], "online");
    let laptop = cluster.connect(2, &alice).await;
    // Presence is recorded a batch after a socket is accepted: a device that leaves inside that
    // window can make watchers see offline-then-online. Wait until both devices are recorded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.presence_rows(&alice).await < 2 {
        assert!(Instant::now() < deadline, "the second device's presence was never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(phone);
    w.assert_silent(Duration::from_millis(700)).await;
    drop(laptop);
    let event = w.next_event("presence").await;
    assert_eq!((event["user"].as_str(), event["status"].as_str()), (Some(alice.id.as_str()), Some("offline")));

    let _bob_ws = cluster.connect(2, &bob).await;
    assert_eq!(w.next_event("presence").await["status"], "online");
    let killed = Instant::now();
    cluster.nodes[2].kill();
    let event = w.next_event("presence").await;
    assert_eq!((event["user"].as_str(), event["status"].as_str()), (Some(bob.id.as_str()), Some("offline")));
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(lease + 5), "offline after {took:?}");
    println!(
        "presence: devices on two nodes, one transition each; killed node's user offline after {took:?} (lease {lease} s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watchers_on_one_node_share_a_users_presence_until_the_last_stops_watching() {
    let cluster = Cluster::start(2, SHARED_NATS, 15);
    let (carol, w1_user, w2_user) = (cluster.guest(0).await, cluster.guest(0).await, cluster.guest(0).await);
    let mut w1 = cluster.connect(0, &w1_user).await;
    let mut w2 = cluster.connect(0, &w2_user).await;
    for w in [&mut w1, &mut w2] {
        let reply = w.action("presence", json!({"subscribe": [carol.id]})).await;
        assert_eq!(reply["data"][0]["status"], "offline");
    }
    let phone = cluster.connect(1, &carol).await;
    for w in [&mut w1, &mut w2] {
        assert_eq!(w.next_event("presence").await["status"], "online");
    }
    // One watcher stops: the node keeps the user's presence subject for the other.
    assert_eq!(w1.action("presence", json!({"unsubscribe": [carol.id]})).await["code"], 200);
    drop(phone);
    let event = w2.next_event("presence").await;
    assert_eq!((event["user"].as_str(), event["status"].as_str()), (Some(carol.id.as_str()), Some("offline")));
    w1.assert_silent(Duration::from_millis(500)).await;
    // Watching again after the subject was dropped and taken anew.
    assert_eq!(w2.action("presence", json!({"unsubscribe": [carol.id]})).await["code"], 200);
    let reply = w1.action("presence", json!({"subscribe": [carol.id]})).await;
    assert_eq!(reply["data"][0]["status"], "offline");
    let _laptop = cluster.connect(1, &carol).await;
    assert_eq!(w1.next_event("presence").await["status"], "online");
    w2.assert_silent(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_with_4001_and_clients_resume_elsewhere_missing_nothing() {
    let mut cluster = Cluster::start(2, SHARED_NATS, 15);
    let sender = cluster.guest(0).await;
    let mut receivers = Vec::new();
    for _ in 0..10 {
        let u = cluster.guest(0).await;
        let ws = cluster.connect(1, &u).await;
        receivers.push((u, ws));
    }
    let mut s = cluster.connect(0, &sender).await;
    for (u, _) in &receivers {
        assert_eq!(s.send_dm(&u.id, "before", "before").await["code"], 201);
    }
    let status = cluster.nodes[1].terminate();
    assert!(status.success(), "drained node exits 0, got {status}");
    for (_, ws) in &mut receivers {
        assert_eq!(ws.closed().await, Some(4001));
    }
    for (u, _) in &receivers {
        assert_eq!(s.send_dm(&u.id, "while away", "during").await["code"], 201);
    }
    for (u, _) in &receivers {
        let mut ws = cluster.connect(0, u).await;
        let reply = ws.action("sync", json!({})).await;
        let contents: Vec<&str> =
            reply["data"]["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
        assert_eq!(contents, vec!["before", "while away"], "nothing missing after the drain");
    }
    println!("SIGTERM: 10 clients closed with 4001, node exited 0, every client synced 2 of 2 messages");
}

#[derive(Default)]
struct Tally {
    sent: AtomicUsize,
    acked: AtomicUsize,
    delivered: AtomicUsize,
    retried: AtomicUsize,
}

/// One client: sends its messages in windows, reconnecting to a surviving node and resending
/// unacknowledged ones with the same client_msg_id; returns what was acknowledged.
async fn chatty_client(
    urls: Vec<String>,
    alive: Arc<Vec<std::sync::atomic::AtomicBool>>,
    me: User,
    partner: String,
    index: usize,
    count: usize,
    tally: Arc<Tally>,
) -> (User, Vec<(String, i64, String)>) {
    let mut node = index % urls.len();
    let mut acked = Vec::new();
    let mut ws: Option<Ws> = None;
    let mut next = 0;
    while next < count {
        if ws.is_none() {
            while !alive[node].load(Ordering::SeqCst) {
                node = (node + 1) % urls.len();
            }
            ws = Ws::try_connect(&urls[node], &me.token).await;
            if ws.is_none() {
                node = (node + 1) % urls.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let end = (next + 10).min(count);
        let frames: Vec<Value> = (next..end)
            .map(|n| json!({"type":"message","data":{"recipient": partner, "content": format!("{index}:{n}"), "client_msg_id": format!("{index}-{n}")}}))
            .collect();
        tally.sent.fetch_add(frames.len(), Ordering::Relaxed);
        let Some(socket) = ws.as_mut() else { continue };
        match socket.try_pipeline(frames, Duration::from_secs(5)).await {
            Ok(replies) => {
                for r in replies {
                    let code = r["code"].as_i64().unwrap_or(0);
                    assert!(code == 201 || code == 200, "{r}");
                    let d = &r["data"];
                    acked.push((
                        d["conversation"].as_str().unwrap().to_string(),
                        d["seq"].as_i64().unwrap(),
                        d["message_id"].as_str().unwrap().to_string(),
                    ));
                }
                tally.acked.fetch_add(end - next, Ordering::Relaxed);
                next = end;
                while let Some(v) = socket.try_pending() {
                    if v["type"] == "message" {
                        tally.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(_) => {
                // The node went away mid-window: resend the whole window elsewhere.
                tally.retried.fetch_add(end - next, Ordering::Relaxed);
                ws = None;
                node = (node + 1) % urls.len();
            }
        }
    }
    (me, acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_under_load_loses_no_acknowledged_message() {
    let mut cluster = Cluster::start(3, SHARED_NATS, 15);
    let clients = 200;
    let per_client = 100;
    let mut users = Vec::with_capacity(clients);
    for i in 0..clients {
        users.push(cluster.guest(i % 3).await);
    }
    let urls: Vec<String> = cluster.nodes.iter().map(NodeProcess::ws).collect();
    let alive: Arc<Vec<std::sync::atomic::AtomicBool>> =
        Arc::new((0..3).map(|_| std::sync::atomic::AtomicBool::new(true)).collect());
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, me) in users.iter().enumerate() {
        let partner = users[(i + clients / 2) % clients].id.clone();
        tasks.push(tokio::spawn(chatty_client(
            urls.clone(),
            alive.clone(),
            me.clone(),
            partner,
            i,
            per_client,
            tally.clone(),
        )));
    }
    // Kill node 2 once a fifth of the traffic is acknowledged.
    let total = clients * per_client;
    while tally.acked.load(Ordering::Relaxed) < total / 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(started.elapsed() < Duration::from_secs(120), "traffic stalled before the kill");
    }
    alive[1].store(false, Ordering::SeqCst);
    cluster.nodes[1].kill();
    let acked_at_kill = tally.acked.load(Ordering::Relaxed);
    let mut acked: Vec<(String, i64, String)> = Vec::new();
    let mut finished_users = Vec::new();
    for t in tasks {
        let (user, a) = tokio::time::timeout(Duration::from_secs(300), t).await.expect("clients finish").unwrap();
        acked.extend(a);
        finished_users.push(user);
    }
    let elapsed = started.elapsed();

    // The log: every conversation, read back through a surviving node.
    let mut stored: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for u in finished_users.iter().take(clients / 2) {
        let (_, convs) = get_from(cluster.nodes[0].addr, "/v1/conversations", Some(&u.token)).await;
        for c in convs["data"].as_array().unwrap() {
            let id = c["id"].as_str().unwrap().to_string();
            if !seen.insert(id.clone()) {
                continue;
            }
            let mut after = 0;
            loop {
                let (_, page) = get_from(
                    cluster.nodes[0].addr,
                    &format!("/v1/conversations/{id}/messages?after_seq={after}&limit=200"),
                    Some(&u.token),
                )
                .await;
                let page = page["data"]["messages"].as_array().cloned().unwrap_or_default();
                let Some(last) = page.last() else { break };
                after = last["seq"].as_i64().unwrap();
                stored.entry(id.clone()).or_default().extend(
                    page.iter().map(|m| (m["seq"].as_i64().unwrap(), m["client_msg_id"].as_str().unwrap().to_string())),
                );
            }
        }
    }
    let stored_rows: usize = stored.values().map(Vec::len).sum();
    let distinct_cmids: HashSet<(String, String)> =
        stored.iter().flat_map(|(c, rows)| rows.iter().map(move |(_, m)| (c.clone(), m.clone()))).collect();
    let duplicated = stored_rows - distinct_cmids.len();
    let acked_ids: HashSet<&str> = acked.iter().map(|(_, _, id)| id.as_str()).collect();
    let stored_seqs: HashSet<(String, i64)> =
        stored.iter().flat_map(|(c, rows)| rows.iter().map(move |(s, _)| (c.clone(), *s))).collect();
    let lost = acked.iter().filter(|(c, s, _)| !stored_seqs.contains(&(c.clone(), *s))).count();
    for (conv, rows) in &stored {
        let seqs: Vec<i64> = rows.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{conv} is gap-free");
    }
    // Every client's final view after sync is the whole log of its conversation.
    let mut views_checked = 0;
    for u in &finished_users {
        let mut ws = Ws::connect(&urls[2], Some(&u.token)).await;
        let mut got: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let mut cursor = Value::Null;
        loop {
            let mut data = json!({});
            if !cursor.is_null() {
                data["cursor"] = cursor;
            }
            let reply = ws.action("sync", data).await;
            for m in reply["data"]["messages"].as_array().unwrap() {
                got.entry(m["conversation"].as_str().unwrap().to_string())
                    .or_default()
                    .push(m["seq"].as_i64().unwrap());
            }
            if reply["data"]["complete"] == true {
                break;
            }
            cursor = reply["data"]["cursor"].clone();
        }
        for (conv, seqs) in &got {
            assert_eq!(seqs.len(), stored[conv].len(), "client view of {conv} is complete");
            assert_eq!(*seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
        }
        views_checked += 1;
    }
    println!(
        "kill -9 under load: sent {}, acked {} (distinct {}), stored {stored_rows}, delivered live {}, lost {lost}, duplicated {duplicated}; \
         resent {} after the kill at {acked_at_kill} acks; {views_checked} client views gap-free; {:.1} s, {:.0} msg/s",
        tally.sent.load(Ordering::Relaxed),
        tally.acked.load(Ordering::Relaxed),
        acked_ids.len(),
        tally.delivered.load(Ordering::Relaxed),
        tally.retried.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
    );
    assert_eq!(acked_ids.len(), total, "every message was eventually acknowledged");
    assert_eq!(stored_rows, acked_ids.len(), "stored == distinct acknowledged");
    assert_eq!(lost, 0);
    assert_eq!(duplicated, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_under_traffic_loses_nothing_and_delivery_resumes() {
    let mut nats = PrivateNats::start();
    let cluster = Cluster::start(2, &nats.url(), 15);
    let (alice, bob) = (cluster.guest(0).await, cluster.guest(1).await);
    let mut a = cluster.connect(0, &alice).await;
    let mut b = cluster.connect(1, &bob).await;
    let send = |from: usize, to: usize| -> Vec<Value> {
        (from..to)
            .map(|n| json!({"type":"message","data":{"recipient": bob.id, "content": format!("{n}"), "client_msg_id": format!("m{n}")}}))
            .collect()
    };
    assert!(a.pipeline(send(0, 50)).await.iter().all(|r| r["code"] == 201));
    assert_eq!(b.messages(50).await.len(), 50);

    nats.stop();
    let down = Instant::now();
    let replies =
        a.try_pipeline(send(50, 100), Duration::from_secs(10)).await.expect("sends commit while NATS is down");
    assert!(replies.iter().all(|r| r["code"] == 201), "acknowledged without the bus");
    let acked_while_down = down.elapsed();
    // Sends commit without the bus, so the pods stay in their Service: readiness does not
    // depend on NATS (it reports it).
    for node in &cluster.nodes {
        let (status, body) = get_from(node.addr, "/readyz", None).await;
        assert_eq!((status, body["data"]["ready"].as_bool()), (200, Some(true)), "{body}");
    }
    nats.restart();
    // Both nodes reconnect by themselves (readiness reports the bus again).
    for node in &cluster.nodes {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, body) = get_from(node.addr, "/readyz", None).await;
            if body["data"]["bus"] == true {
                break;
            }
            assert!(Instant::now() < deadline, "node did not reconnect to NATS");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // New traffic flows live again; the first push fills the gap from the store.
    let resumed = Instant::now();
    let mut reply = Value::Null;
    let mut live = false;
    for attempt in 0..50 {
        reply = a.send_dm(&bob.id, "after", &format!("after-{attempt}")).await;
        if b.pump(Duration::from_millis(200)).await && b.try_pending().is_some() {
            live = true;
            break;
        }
    }
    assert_eq!(reply["code"], 201);
    assert!(live, "no live push reached the other node within 50 sends after the restart");
    let mut got: Vec<i64> = Vec::new();
    let sync = b.action("sync", json!({"conversations": {reply["data"]["conversation"].as_str().unwrap(): 50}})).await;
    got.extend(sync["data"]["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()));
    let last = reply["data"]["seq"].as_i64().unwrap();
    assert_eq!(got, (51..=last).collect::<Vec<_>>(), "sync returns everything acknowledged while NATS was away");
    println!(
        "NATS restart: 50 sends acknowledged in {acked_while_down:?} without the bus, live delivery back {:?} after restart, 0 lost",
        resumed.elapsed()
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Three private nats-servers routed into one NATS cluster, each with its monitoring port.
struct NatsCluster {
    servers: Vec<Child>,
    ports: Vec<u16>,
    monitors: Vec<u16>,
}

impl NatsCluster {
    /// Its ports are picked free, then released for nats-server to bind: another process can take
    /// one meanwhile (an outgoing connection's ephemeral port), and that server then exits. A
    /// start whose servers do not route within the wait is retried on fresh ports.
    fn start() -> Self {
        for _attempt in 0..3 {
            let mut cluster = Self::spawn();
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if (0..3).all(|i| cluster.monitor(i, "routez")["num_routes"].as_u64().unwrap_or(0) >= 2) {
                    return cluster;
                }
                let exited = cluster.servers.iter_mut().any(|c| matches!(c.try_wait(), Ok(Some(_))));
                if exited || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            drop(cluster);
        }
        panic!("the three nats-servers did not route to each other in three starts");
    }

    fn spawn() -> Self {
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let monitors: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let servers = (0..3)
            .map(|i| {
                let others: Vec<String> =
                    (0..3).filter(|j| *j != i).map(|j| format!("nats://127.0.0.1:{}", routes[j])).collect();
                Command::new("nats-server")
                    .args(["-a", "127.0.0.1", "-p", &ports[i].to_string(), "-m", &monitors[i].to_string()])
                    .args(["-n", &format!("n{i}"), "--cluster_name", "natter-test"])
                    .args(["--cluster", &format!("nats://127.0.0.1:{}", routes[i]), "--routes", &others.join(",")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("nats-server is installed")
            })
            .collect();
        NatsCluster { servers, ports, monitors }
    }

    /// What a server's monitoring endpoint says (`connz`, `routez`); null while it is down.
    fn monitor(&self, i: usize, what: &str) -> Value {
        let url = format!("http://127.0.0.1:{}/{what}", self.monitors[i]);
        std::process::Command::new("curl")
            .args(["-fsS", "--max-time", "2", &url])
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or(Value::Null)
    }

    /// Natter's subscription connections on a server.
    fn subscribers(&self, i: usize) -> usize {
        let connz = self.monitor(i, "connz");
        connz["connections"]
            .as_array()
            .map(|c| c.iter().filter(|c| c["name"].as_str().is_some_and(|n| n.ends_with("-sub"))).count())
            .unwrap_or(0)
    }

    /// `nats.url` naming all three.
    fn url(&self) -> String {
        self.ports.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    fn kill(&mut self, i: usize) {
        let _ = self.servers[i].kill();
        let _ = self.servers[i].wait();
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_nats_server_a_node_uses_moves_it_to_another_and_loses_no_acked_message() {
    let mut nats = NatsCluster::start();
    let cluster = Cluster::start(2, &nats.url(), 15);
    let (alice, bob) = (cluster.guest(0).await, cluster.guest(1).await);
    let mut a = cluster.connect(0, &alice).await;
    let mut b = cluster.connect(1, &bob).await;
    // Both nodes' subscription connections are on the first server of the list.
    assert_eq!(nats.subscribers(0), 2, "{}", nats.monitor(0, "connz"));
    let send = |from: usize, to: usize| -> Vec<Value> {
        (from..to)
            .map(|n| json!({"type":"message","data":{"recipient": bob.id, "content": format!("{n}"), "client_msg_id": format!("m{n}")}}))
            .collect()
    };
    assert!(a.pipeline(send(0, 50)).await.iter().all(|r| r["code"] == 201));
    assert_eq!(b.messages(50).await.len(), 50);

    // Under traffic: the first half of a batch goes out, the server dies, the rest follows.
    let mut acked = 50;
    for chunk in 0..4 {
        if chunk == 2 {
            nats.kill(0);
        }
        let from = 50 + chunk * 25;
        let replies = a.try_pipeline(send(from, from + 25), Duration::from_secs(10)).await.expect("sends commit");
        assert!(replies.iter().all(|r| r["code"] == 201), "every send is acknowledged");
        acked += 25;
    }
    let killed = Instant::now();
    // Both subscription connections move to the other servers, by themselves.
    let deadline = Instant::now() + Duration::from_secs(20);
    while nats.subscribers(1) + nats.subscribers(2) < 2 {
        assert!(Instant::now() < deadline, "the nodes did not fail over to the other NATS servers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let moved = killed.elapsed();
    // Live delivery through the cluster's other servers.
    let mut reply = Value::Null;
    let mut live = false;
    for attempt in 0..50 {
        reply = a.send_dm(&bob.id, "after", &format!("after-{attempt}")).await;
        acked += 1;
        if b.pump(Duration::from_millis(200)).await && b.try_pending().is_some() {
            live = true;
            break;
        }
    }
    assert!(live, "no live push reached the other node after the failover");
    // Nothing acknowledged is missing: what bob saw live plus what sync repairs is every seq.
    let conversation = reply["data"]["conversation"].as_str().unwrap().to_string();
    let sync = b.action("sync", json!({"conversations": {conversation.as_str(): 50}})).await;
    let seqs: Vec<i64> =
        sync["data"]["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (51..=acked as i64).collect::<Vec<_>>(), "every acknowledged message is there, once, in order");
    println!(
        "NATS failover: subscriptions on the other servers {moved:?} after the kill; {acked} acknowledged, 0 lost"
    );
}

/// A throwaway CA, server and client certificates in `dir` (tests/support/test-certs.sh).
fn certificates(dir: &std::path::Path) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/test-certs.sh");
    let out = Command::new("sh").arg(script).arg(dir).output().expect("sh runs");
    assert!(out.status.success(), "test-certs.sh (needs openssl): {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_a_nats_that_demands_mutual_tls_and_nkeys_on_both_connections() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let user = nkeys::KeyPair::new_user();
    std::fs::write(d.join("user.nk"), user.seed().unwrap()).unwrap();
    let (port, monitor) = (free_port(), free_port());
    let config = format!(
        "host: 127.0.0.1\nport: {port}\nhttp_port: {monitor}\n\
         tls {{ cert_file: \"{p}/server.pem\", key_file: \"{p}/server.key\", ca_file: \"{p}/ca.pem\", verify: true }}\n\
         authorization {{ users: [ {{ nkey: \"{nkey}\" }} ] }}\n",
        p = d.display(),
        nkey = user.public_key()
    );
    std::fs::write(d.join("nats.conf"), config).unwrap();
    let mut server = Command::new("nats-server")
        .args(["-c", &d.join("nats.conf").display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server is installed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", monitor)).is_err() {
        assert!(Instant::now() < deadline, "the TLS nats-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let file = |name: &str| d.join(name).display().to_string();
    let env = vec![
        ("NATTER_NATS__TLS_CA_FILE".to_string(), file("ca.pem")),
        ("NATTER_NATS__TLS_CERT_FILE".to_string(), file("client.pem")),
        ("NATTER_NATS__TLS_KEY_FILE".to_string(), file("client.key")),
        ("NATTER_NATS__NKEY_SEED_FILE".to_string(), file("user.nk")),
    ];
    let cluster = Cluster::start_with(2, &format!("tls://127.0.0.1:{port}"), 15, env);
    let (alice, bob) = (cluster.guest(0).await, cluster.guest(1).await);
    let mut a = cluster.connect(0, &alice).await;
    let mut b = cluster.connect(1, &bob).await;
    assert_eq!(a.send_dm(&bob.id, "over mutual TLS", "t1").await["code"], 201);
    assert_eq!(b.next_message().await["content"], "over mutual TLS");
    // Both nodes' lean subscription connections are TLS (the server admits nothing else).
    let connz: Value = reqwest::get(format!("http://127.0.0.1:{monitor}/connz")).await.unwrap().json().await.unwrap();
    let subscribers: Vec<&Value> = connz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"].as_str().is_some_and(|n| n.ends_with("-sub")))
        .collect();
    assert_eq!(subscribers.len(), 2, "{connz}");
    assert!(subscribers.iter().all(|c| c["tls_version"].is_string()), "{connz}");
    let _ = server.kill();
    let _ = server.wait();
}

fn webhook_env(receiver: &common::Receiver, more: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("NATTER_DEFAULT_APP__WEBHOOK_URL".to_string(), receiver.url("/hooks")),
        ("NATTER_DEFAULT_APP__WEBHOOK_SECRET".to_string(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()),
        ("NATTER_DEFAULT_APP__WEBHOOK_EVENTS".to_string(), "[\"message.sent\"]".to_string()),
        ("NATTER_DEFAULT_APP__ALLOW_PRIVATE_TARGETS".to_string(), "true".to_string()),
        ("NATTER_WEBHOOKS__POLL_MS".to_string(), "50".to_string()),
    ];
    env.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_each_webhook_event_exactly_once() {
    let receiver = common::Receiver::start();
    let cluster = Cluster::start_with(3, SHARED_NATS, 15, webhook_env(&receiver, &[]));
    let mut users = Vec::new();
    for n in 0..6 {
        users.push(cluster.guest(n % 3).await);
    }
    let mut tasks = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let mut ws = cluster.connect(i % 3, u).await;
        let peer = users[(i + 1) % users.len()].id.clone();
        tasks.push(tokio::spawn(async move {
            let frames: Vec<Value> = (0..100)
                .map(|n| json!({"type":"message","data":{"recipient": peer, "content": "x", "client_msg_id": format!("{i}-{n}")}}))
                .collect();
            assert!(ws.pipeline(frames).await.iter().all(|r| r["code"] == 201));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = receiver.wait_for(600, Duration::from_secs(60)).await;
    // Once no event is pending, no node can send one again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.outbox().await.get("pending").is_some_and(|n| *n > 0) {
        assert!(Instant::now() < deadline, "the outbox never drained: {:?}", cluster.outbox().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = receiver.deliveries();
    let distinct: HashSet<&str> = all.iter().map(|d| d.id.as_str()).collect();
    let outbox = cluster.outbox().await;
    println!(
        "3 nodes, 600 messages: {} webhook deliveries, {} distinct ids, outbox {outbox:?}",
        all.len(),
        distinct.len()
    );
    assert_eq!(got.len(), 600);
    assert_eq!((all.len(), distinct.len()), (600, 600), "each event delivered once");
    assert_eq!(outbox.get("delivered"), Some(&600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_claimed_webhooks_are_delivered_by_another_node() {
    let receiver = common::Receiver::start();
    receiver.state.lock().unwrap().delay_ms = 20_000;
    let env =
        webhook_env(&receiver, &[("NATTER_WEBHOOKS__CLAIM_MS", "2000"), ("NATTER_WEBHOOKS__TIMEOUT_MS", "30000")]);
    let mut cluster = Cluster::start_with(1, SHARED_NATS, 15, env);
    let (alice, bob) = (cluster.guest(0).await, cluster.guest(0).await);
    let mut ws = cluster.connect(0, &alice).await;
    for n in 0..5 {
        assert_eq!(ws.send_dm(&bob.id, "x", &format!("m{n}")).await["code"], 201);
    }
    // Node 1 claims the events and hangs in delivery; then it dies.
    let claimed = receiver.wait_for(5, Duration::from_secs(10)).await;
    assert_eq!(claimed.len(), 5);
    cluster.nodes[0].kill();
    receiver.state.lock().unwrap().delay_ms = 0;
    let killed = Instant::now();
    cluster.add_node();
    let got = receiver.wait_for(10, Duration::from_secs(20)).await;
    let ids: HashSet<&str> = claimed.iter().map(|d| d.id.as_str()).collect();
    let redelivered: HashSet<&str> = got[5..].iter().map(|d| d.id.as_str()).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster.outbox().await.get("delivered") != Some(&5) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("killed node's 5 claimed webhooks delivered by another node {:?} after the kill", killed.elapsed());
    assert_eq!(redelivered, ids, "the same events, same webhook-ids");
    assert_eq!(cluster.outbox().await.get("delivered"), Some(&5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_once_a_fresh_connection_answers_arrives_live() {
    let cluster = Cluster::start(2, SHARED_NATS, 15);
    let alice = cluster.guest(0).await;
    let mut alice_a = cluster.connect(0, &alice).await;
    for round in 0..25 {
        let bob = cluster.guest(1).await;
        let mut bob_b = cluster.connect(1, &bob).await;
        // Bob's node has answered him: from here on, pushes to him are live on every node.
        bob_b.settle().await;
        assert_eq!(alice_a.send_dm(&bob.id, "hi", &format!("r{round}")).await["code"], 201);
        let got = tokio::time::timeout(Duration::from_secs(5), bob_b.next_message()).await;
        assert!(got.is_ok(), "round {round}: the push passed bob's fresh connection by");
    }
    println!("25 fresh connections, each sent a DM from another node the moment it answered: all live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_first_message_sent_as_it_is_created_reaches_a_member_on_another_node_live() {
    // The welcome message is sent the moment the group is committed: the member's node learns
    // of the group (and subscribes to it) from the same bus, so the message can get there first.
    let extra = vec![("NATTER_DEFAULT_APP__WELCOME_MESSAGE".to_string(), "Welcome!".to_string())];
    let cluster = Cluster::start_with(2, SHARED_NATS, 15, extra);
    let alice = cluster.guest(0).await;
    for round in 0..25 {
        let bob = cluster.guest(1).await;
        let mut bob_b = cluster.connect(1, &bob).await;
        let (status, body) = post_to(
            cluster.nodes[0].addr,
            "/v1/groups",
            Some(&alice.token),
            json!({"name": format!("round {round}"), "members": [bob.id]}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let got = tokio::time::timeout(Duration::from_secs(5), bob_b.next_message()).await;
        let welcome = got.unwrap_or_else(|_| panic!("round {round}: the welcome message did not reach bob live"));
        assert_eq!((welcome["content"].as_str(), welcome["seq"].as_i64()), (Some("Welcome!"), Some(1)));
    }
    println!("25 groups created on one node: each one's welcome message reached the member on the other live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_a_recall_and_a_reaction_on_one_node_reach_the_others_and_a_device_that_was_away() {
    let cluster = Cluster::start(3, SHARED_NATS, 15);
    let (alice, bob) = (cluster.guest(0).await, cluster.guest(1).await);
    let mut alice_a = cluster.connect(0, &alice).await;
    let mut bob_b = cluster.connect(1, &bob).await;
    let mut bob_c = cluster.connect(2, &bob).await;
    for ws in [&mut alice_a, &mut bob_b, &mut bob_c] {
        ws.settle().await;
    }
    let conv = alice_a.send_dm(&bob.id, "one", "a1").await["data"]["conversation"].as_str().unwrap().to_string();
    alice_a.send_dm(&bob.id, "two", "a2").await;
    for ws in [&mut bob_b, &mut bob_c] {
        ws.messages(2).await;
    }
    // Bob's tablet on node 3 holds both messages, then goes away.
    let mut tablet = cluster.connect(2, &bob).await;
    let first = tablet.action("sync", json!({})).await;
    let since = first["data"]["changes"][&conv].as_i64().unwrap();
    drop(tablet);

    let ok = |r: Value| assert_eq!(r["code"], 200, "{r}");
    ok(alice_a.action("edit", json!({"conversation": conv, "seq": 1, "content": "one, edited on node 1"})).await);
    ok(alice_a.action("recall", json!({"conversation": conv, "seq": 2})).await);
    ok(alice_a.action("react", json!({"conversation": conv, "seq": 1, "key": "👀", "on": true})).await);
    for (node, ws) in [("node 2", &mut bob_b), ("node 3", &mut bob_c)] {
        assert_eq!(ws.next_event("message.edited").await["content"], "one, edited on node 1", "{node}");
        assert_eq!(ws.next_event("message.recalled").await["seq"], 2, "{node}");
        let r = ws.next_event("message.reaction").await;
        assert_eq!(
            (r["key"].as_str(), r["count"].as_i64(), r["user"].as_str()),
            (Some("👀"), Some(1), Some(alice.id.as_str())),
            "{node}"
        );
    }

    let mut tablet = cluster.connect(2, &bob).await;
    let sync =
        tablet.action("sync", json!({"conversations": {conv.as_str(): 2}, "changes": {conv.as_str(): since}})).await;
    assert_eq!(sync["code"], 200, "{sync}");
    let updates = sync["data"]["updates"].as_array().unwrap();
    let one = updates.iter().find(|m| m["seq"] == 1).expect("seq 1 updated");
    let two = updates.iter().find(|m| m["seq"] == 2).expect("seq 2 updated");
    assert_eq!(one["content"], "one, edited on node 1");
    assert!(one["edited_at"].as_i64().is_some());
    assert_eq!(one["reactions"], json!({"👀": {"count": 1, "me": false}}));
    assert_eq!((two["recalled"].as_bool(), two["content"].as_str()), (Some(true), Some("")));
    assert!(sync["data"]["messages"].as_array().unwrap().is_empty(), "nothing new to send whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_issued_on_one_node_closes_the_users_sockets_on_every_node_with_4503_and_refuses_reconnects() {
    use sqlx::{Connection, Row};
    let cluster = Cluster::start(3, SHARED_NATS, 15);
    let alice = cluster.guest(0).await;
    let mut sockets = Vec::new();
    for node in 0..3 {
        let mut ws = cluster.connect(node, &alice).await;
        ws.settle().await;
        sockets.push(ws);
    }
    let mut conn = sqlx::PgConnection::connect(&cluster.db).await.unwrap();
    let row =
        sqlx::query("SELECT api_key, api_secret FROM apps WHERE id = 'default'").fetch_one(&mut conn).await.unwrap();
    let api = common::ServerClient {
        addr: cluster.nodes[0].addr,
        key: row.get("api_key"),
        secret: row.get("api_secret"),
        scheme: natter::auth::server_sig::Scheme::V2HmacSha256,
    };
    let started = Instant::now();
    let (status, body) =
        api.call("POST", &format!("/v1/server/users/{}/ban", alice.id), Some(json!({"reason": "abuse"}))).await;
    assert_eq!(status, 200, "{body}");
    for (node, ws) in sockets.iter_mut().enumerate() {
        assert_eq!(ws.closed().await, Some(4503), "node {}", node + 1);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    for node in 0..3 {
        let mut again = Ws::connect(&cluster.nodes[node].ws(), Some(&alice.token)).await;
        assert_eq!(again.closed().await, Some(4503), "a reconnect to node {} is refused", node + 1);
    }
    println!("ban: sockets on 3 nodes closed with 4503 within {took:?}; reconnects refused on each");
}
