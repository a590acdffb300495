//! Groups, sync and the delivery guarantees, against a real node.

use crate::common;

use common::Backend;

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use common::{TestServer, User, Ws};
use serde_json::{Value, json};

const MANY_GUESTS: &str = "[default_app]\nguest_signups_per_hour = 1000000";

fn seqs(messages: &[Value]) -> Vec<i64> {
    messages.iter().map(|m| m["seq"].as_i64().expect("seq")).collect()
}

fn assert_increasing(seqs: &[i64], who: &str) {
    for w in seqs.windows(2) {
        assert!(w[0] < w[1], "{who}: seq {} arrived after {}", w[1], w[0]);
    }
}

async fn guests(server: &TestServer, n: usize) -> Vec<User> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(server.guest().await);
    }
    out
}

async fn fifty_members_receive_a_thousand_concurrent_group_messages_in_order_without_gaps(backend: Backend) {
    let server = TestServer::start_on(backend, MANY_GUESTS);
    let users = guests(&server, 50).await;
    let others: Vec<&User> = users[1..].iter().collect();
    let group = server.group(&users[0], &others).await;
    let mut sockets = Vec::new();
    for u in &users {
        let mut ws = server.connect(u).await;
        ws.settle().await;
        sockets.push(ws);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut ws) in sockets.into_iter().enumerate() {
        let group = group.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let sender = i < 5;
            if sender {
                let frames = (0..200)
                    .map(|n| json!({"type": "message", "data": {"group": group, "content": format!("{i}:{n}"), "client_msg_id": format!("{i}-{n}")}}))
                    .collect();
                for reply in ws.pipeline(frames).await {
                    assert_eq!(reply["code"], 201, "{reply}");
                    acked.push(reply["data"]["seq"].as_i64().unwrap());
                }
            }
            let pushed = ws.messages(1000 - acked.len()).await;
            (i, seqs(&pushed), acked)
        }));
    }
    let mut total = 0;
    for task in tasks {
        let (i, pushed, acked) = task.await.unwrap();
        assert_increasing(&pushed, &format!("member {i}"));
        let mut all: Vec<i64> = pushed.iter().chain(acked.iter()).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (1..=1000).collect::<Vec<_>>(), "member {i} has every seq exactly once");
        total += pushed.len();
    }
    println!("group fan-out: 50 members, 1000 messages, {total} pushes in order in {:?}", started.elapsed());
    assert_eq!(server.history(&users[7], &group).await.len(), 1000);
}

async fn five_hundred_concurrent_sends_into_one_conversation_get_contiguous_seqs(backend: Backend) {
    let server = TestServer::start_on(backend, MANY_GUESTS);
    let users = guests(&server, 50).await;
    let others: Vec<&User> = users[1..].iter().collect();
    let group = server.group(&users[0], &others).await;
    let mut sockets = Vec::new();
    for u in &users {
        let mut ws = server.connect(u).await;
        ws.settle().await;
        sockets.push(ws);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut ws) in sockets.into_iter().enumerate() {
        let group = group.clone();
        tasks.push(tokio::spawn(async move {
            let frames = (0..10)
                .map(|n| json!({"type": "message", "data": {"group": group, "content": "x", "client_msg_id": format!("{i}-{n}")}}))
                .collect();
            ws.pipeline(frames).await.iter().map(|r| r["data"]["seq"].as_i64().expect("seq")).collect::<Vec<_>>()
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=500).collect::<Vec<_>>());
    assert_eq!(seqs(&server.history(&users[0], &group).await), (1..=500).collect::<Vec<_>>());
    println!(
        "{backend:?}: 500 concurrent sends into one conversation: seqs 1..500 contiguous, 0 lost, in {:?}",
        started.elapsed()
    );
}

async fn a_message_resent_three_times_concurrently_is_stored_once_with_one_seq(backend: Backend) {
    let server = TestServer::start_on(backend, MANY_GUESTS);
    let alice = server.guest().await;
    let bob = server.guest().await;
    let mut tasks = Vec::new();
    for device in 0..3 {
        let mut ws = server.connect(&alice).await;
        let to = bob.id.clone();
        tasks.push(tokio::spawn(async move {
            // In chunks: a connection may have at most ws.outbound_queue sends awaiting replies.
            let mut replies = Vec::new();
            for chunk in (0..1000).collect::<Vec<_>>().chunks(200) {
                let frames = chunk
                    .iter()
                    .map(|n| json!({"type": "message", "data": {"recipient": to, "content": format!("m{n}"), "client_msg_id": format!("c{n}")}}))
                    .collect();
                replies.extend(ws.pipeline(frames).await);
            }
            (device, replies)
        }));
    }
    let mut by_cmid: HashMap<usize, Vec<(i64, i64, String)>> = HashMap::new();
    for t in tasks {
        let (_, replies) = t.await.unwrap();
        for (n, r) in replies.iter().enumerate() {
            let code = r["code"].as_i64().unwrap();
            assert!(code == 201 || code == 200, "{r}");
            by_cmid.entry(n).or_default().push((
                code,
                r["data"]["seq"].as_i64().unwrap(),
                r["data"]["message_id"].as_str().unwrap().to_string(),
            ));
        }
    }
    for (n, answers) in &by_cmid {
        assert_eq!(answers.iter().filter(|a| a.0 == 201).count(), 1, "c{n}: exactly one send stored it");
        assert!(
            answers.iter().all(|a| a.1 == answers[0].1 && a.2 == answers[0].2),
            "c{n}: retries got the original seq: {answers:?}"
        );
    }
    let conversation = {
        let (_, convs) = server.get("/v1/conversations", Some(&bob.token)).await;
        convs["data"][0]["id"].as_str().unwrap().to_string()
    };
    let stored = server.history(&bob, &conversation).await;
    assert_eq!(stored.len(), 1000);
    assert_eq!(seqs(&stored), (1..=1000).collect::<Vec<_>>());
    println!("3000 concurrent sends of 1000 client_msg_ids: 1000 rows, every retry answered with its original seq");
}

async fn a_client_that_reconnects_syncs_exactly_what_it_missed(backend: Backend) {
    let server = TestServer::start_on(backend, MANY_GUESTS);
    let me = server.guest().await;
    let friends = guests(&server, 6).await;
    // Five conversations the client already knows, one message each.
    let mut known: HashMap<String, i64> = HashMap::new();
    for f in &friends[..5] {
        let mut ws = server.connect(f).await;
        let r = ws.send_dm(&me.id, "before", "before").await;
        known.insert(r["data"]["conversation"].as_str().unwrap().to_string(), 1);
    }
    // Offline now: 300 messages arrive in the 5 known and 2 new conversations.
    let group = server.group(&friends[5], &[&me, &friends[0]]).await;
    let mut expected: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut sent = 0;
    for (i, f) in friends.iter().enumerate() {
        let mut ws = server.connect(f).await;
        let frames: Vec<Value> = (0..40)
            .map(|n| json!({"type": "message", "data": {"recipient": me.id, "content": format!("{i}/{n}"), "client_msg_id": format!("after-{n}")}}))
            .collect();
        for r in ws.pipeline(frames).await {
            expected
                .entry(r["data"]["conversation"].as_str().unwrap().to_string())
                .or_default()
                .push(r["data"]["seq"].as_i64().unwrap());
            sent += 1;
        }
    }
    let mut ws = server.connect(&friends[5]).await;
    let frames: Vec<Value> = (0..60)
        .map(
            |n| json!({"type": "message", "data": {"group": group, "content": "g", "client_msg_id": format!("g-{n}")}}),
        )
        .collect();
    for r in ws.pipeline(frames).await {
        expected.entry(group.clone()).or_default().push(r["data"]["seq"].as_i64().unwrap());
        sent += 1;
    }
    assert_eq!(sent, 300);
    assert_eq!(expected.len(), 7);
    for (conv, seqs) in &expected {
        assert_increasing(seqs, conv);
    }

    let mut ws = server.connect(&me).await;
    let mut got: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut cursor = Value::Null;
    let mut pages = 0;
    loop {
        let mut data = json!({"conversations": known});
        if !cursor.is_null() {
            data["cursor"] = cursor.clone();
        }
        let reply = ws.action("sync", data).await;
        assert_eq!(reply["code"], 200, "{reply}");
        pages += 1;
        for m in reply["data"]["messages"].as_array().unwrap() {
            got.entry(m["conversation"].as_str().unwrap().to_string()).or_default().push(m["seq"].as_i64().unwrap());
        }
        if reply["data"]["complete"] == true {
            assert_eq!(reply["data"]["conversations"].as_array().unwrap().len(), 7);
            break;
        }
        cursor = reply["data"]["cursor"].clone();
        assert!(pages < 10, "sync never completed");
    }
    assert!(pages >= 2, "300 messages take more than one 200-message page");
    assert_eq!(got, expected, "exactly the 300 missed messages, in order per conversation");
    println!("sync after reconnect: 300 missed messages in 7 conversations, {pages} pages");
}

async fn a_removed_member_receives_nothing_further_and_cannot_read_new_history(backend: Backend) {
    let server = TestServer::start_on(backend, MANY_GUESTS);
    let (owner, stays, leaves) = (server.guest().await, server.guest().await, server.guest().await);
    let group = server.group(&owner, &[&stays, &leaves]).await;
    let mut owner_ws = server.connect(&owner).await;
    let mut leaves_ws = server.connect(&leaves).await;
    leaves_ws.settle().await;
    assert_eq!(owner_ws.send_group(&group, "before", "1").await["data"]["seq"], 1);
    assert_eq!(leaves_ws.next_message().await["content"], "before");

    let (status, body) = server.delete(&format!("/v1/groups/{group}/members/{}", leaves.id), &owner.token).await;
    assert_eq!(status, 200, "{body}");
    let event = leaves_ws.next_event("group.member_removed").await;
    assert_eq!(event["members"][0], leaves.id.as_str());
    assert_eq!(owner_ws.send_group(&group, "after", "2").await["data"]["seq"], 2);
    leaves_ws.assert_silent(Duration::from_millis(400)).await;

    let history = server.history(&leaves, &group).await;
    assert_eq!(seqs(&history), vec![1], "history up to the removal only");
    let reply = leaves_ws.send_group(&group, "let me back", "3").await;
    assert_eq!(reply["error"], "not_a_member");
    // The owner cannot be removed, and plain members cannot remove others.
    let (status, _) = server.delete(&format!("/v1/groups/{group}/members/{}", owner.id), &stays.token).await;
    assert_eq!(status, 403);
}

async fn a_new_member_cannot_read_history_from_before_joining(backend: Backend) {
    let server = TestServer::start_on(backend, MANY_GUESTS);
    let (owner, late) = (server.guest().await, server.guest().await);
    let group = server.group(&owner, &[]).await;
    let mut owner_ws = server.connect(&owner).await;
    for i in 0..3 {
        owner_ws.send_group(&group, "early", &format!("e{i}")).await;
    }
    let mut late_ws = server.connect(&late).await;
    late_ws.settle().await;
    let (status, body) =
        server.post(&format!("/v1/groups/{group}/members"), Some(&owner.token), json!({"members": [late.id]})).await;
    assert_eq!(status, 200, "{body}");
    let added = late_ws.next_event("group.member_added").await;
    assert_eq!(added["members"][0], late.id.as_str());
    owner_ws.send_group(&group, "welcome", "w").await;
    assert_eq!(late_ws.next_message().await["seq"], 4);
    assert_eq!(seqs(&server.history(&late, &group).await), vec![4]);
    let reply = late_ws.action("sync", json!({})).await;
    assert_eq!(seqs(reply["data"]["messages"].as_array().unwrap()), vec![4]);
}

async fn group_events_reach_members_and_roles_are_enforced(backend: Backend) {
    let server = TestServer::start_on(backend, MANY_GUESTS);
    let (owner, a, b) = (server.guest().await, server.guest().await, server.guest().await);
    let mut a_ws = server.connect(&a).await;
    a_ws.settle().await;
    let reply = {
        let mut ws = server.connect(&owner).await;
        ws.action("group.create", json!({"name": "Friends", "members": [a.id]})).await
    };
    assert_eq!(reply["code"], 200, "{reply}");
    let group = reply["data"]["id"].as_str().unwrap().to_string();
    let created = a_ws.next_event("group.created").await;
    assert_eq!(created["id"], group.as_str());
    assert_eq!(created["members"].as_array().unwrap().len(), 2);
    let reply = a_ws.action("group.add", json!({"group": group, "members": [b.id]})).await;
    assert_eq!(reply["error"], "admin_only", "members cannot add members");
    let reply = a_ws.action("group.leave", json!({"group": group})).await;
    assert_eq!(reply["code"], 200, "{reply}");
    let (status, body) = server.get(&format!("/v1/groups/{group}"), Some(&owner.token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["members"].as_array().unwrap().len(), 1);
    let (status, _) = server.get(&format!("/v1/groups/{group}"), Some(&a.token)).await;
    assert_eq!(status, 404, "a former member no longer sees the group");
    let ids: Vec<&str> = vec!["x"; 1];
    let (status, body) = server.post("/v1/groups", Some(&owner.token), json!({"name": "G", "members": ids})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("user_not_found")));
}

async fn group_size_is_capped_by_config(backend: Backend) {
    let server =
        TestServer::start_on(backend, "[chat]\nmax_group_size = 3\n[default_app]\nguest_signups_per_hour = 1000");
    let users = guests(&server, 4).await;
    let (status, body) = server
        .post(
            "/v1/groups",
            Some(&users[0].token),
            json!({"name": "G", "members": [users[1].id, users[2].id, users[3].id]}),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("group_full")));
    let group = server.group(&users[0], &[&users[1], &users[2]]).await;
    let (status, body) = server
        .post(&format!("/v1/groups/{group}/members"), Some(&users[0].token), json!({"members": [users[3].id]}))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("group_full")));
}

async fn read_markers_and_typing_reach_the_other_participant(backend: Backend) {
    let server = TestServer::start_on(backend, MANY_GUESTS);
    let (alice, bob) = (server.guest().await, server.guest().await);
    let mut a = server.connect(&alice).await;
    let mut b = server.connect(&bob).await;
    b.settle().await;
    let conv = a.send_dm(&bob.id, "hi", "1").await["data"]["conversation"].as_str().unwrap().to_string();
    assert_eq!(b.next_message().await["seq"], 1);
    let reply = b.action("read", json!({"conversation": conv, "seq": 99})).await;
    assert_eq!(reply["data"]["read_seq"], 1, "clamped to the last seq");
    let event = a.next_event("read").await;
    assert_eq!((event["user"].as_str(), event["seq"].as_i64()), (Some(bob.id.as_str()), Some(1)));
    let (_, convs) = server.get("/v1/conversations", Some(&bob.token)).await;
    assert_eq!(convs["data"][0]["read_seq"], 1);
    assert_eq!(b.action("typing", json!({"conversation": conv})).await["code"], 200);
    let typing = a.next_event("typing").await;
    assert_eq!(typing["user"], bob.id.as_str());
    // Typing is rate limited per connection.
    let mut limited = false;
    for _ in 0..5 {
        if b.action("typing", json!({"conversation": conv})).await["error"] == "rate_limited" {
            limited = true;
        }
    }
    assert!(limited);
}

async fn presence_follows_the_first_and_last_device_within_a_second(backend: Backend) {
    let server = TestServer::start_on(backend, MANY_GUESTS);
    let (watcher, alice) = (server.guest().await, server.guest().await);
    let mut w = server.connect(&watcher).await;
    let reply = w.action("presence", json!({"subscribe": [alice.id]})).await;
    assert_eq!(reply["data"][0]["status"], "offline", "{reply}");

    let t = Instant::now();
    let mut phone = server.connect(&alice).await;
    phone.settle().await;
    let event = w.next_event("presence").await;
    assert_eq!((event["user"].as_str(), event["status"].as_str()), (Some(alice.id.as_str()), Some("online")));
    assert!(t.elapsed() < Duration::from_secs(1));
    let mut laptop = server.connect(&alice).await;
    laptop.settle().await;
    drop(phone);
    w.assert_silent(Duration::from_millis(500)).await;
    let t = Instant::now();
    drop(laptop);
    let event = w.next_event("presence").await;
    assert_eq!(event["status"], "offline");
    assert!(event["last_seen"].as_i64().unwrap() > 0);
    assert!(t.elapsed() < Duration::from_secs(1), "offline after {:?}", t.elapsed());
    println!("presence: online and offline events within {:?}", t.elapsed());
}

mod interleavings {
    //! Random interleavings of send, resend, reconnect and sync for three clients: each ends with
    //! exactly the server's log, gap-free, and the log holds each client_msg_id once.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Send { client: usize, to_group: bool },
        Resend { client: usize },
        Reconnect { client: usize },
        Sync { client: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3usize, any::<bool>()).prop_map(|(client, to_group)| Op::Send { client, to_group }),
            2 => (0..3usize).prop_map(|client| Op::Resend { client }),
            1 => (0..3usize).prop_map(|client| Op::Reconnect { client }),
            1 => (0..3usize).prop_map(|client| Op::Sync { client }),
        ]
    }

    struct Client {
        user: User,
        ws: Ws,
        log: BTreeMap<String, BTreeMap<i64, String>>,
        sent: Vec<Value>,
    }

    impl Client {
        fn record(&mut self, conv: &str, seq: i64, id: &str) {
            if let Some(previous) = self.log.entry(conv.to_string()).or_default().insert(seq, id.to_string()) {
                assert_eq!(previous, id, "one seq, one message");
            }
        }

        fn absorb(&mut self) {
            while let Some(v) = self.ws.try_pending() {
                if v["type"] == "message" {
                    let m = &v["data"];
                    self.record(
                        m["conversation"].as_str().unwrap(),
                        m["seq"].as_i64().unwrap(),
                        m["id"].as_str().unwrap(),
                    );
                }
            }
        }

        /// What a real client sends: per conversation, the end of its gap-free prefix.
        fn known(&self) -> HashMap<String, i64> {
            self.log
                .iter()
                .map(|(c, seqs)| {
                    let mut end = 0;
                    while seqs.contains_key(&(end + 1)) {
                        end += 1;
                    }
                    (c.clone(), end)
                })
                .collect()
        }

        async fn sync(&mut self) {
            let known = self.known();
            let mut cursor = Value::Null;
            loop {
                let mut data = json!({"conversations": known});
                if !cursor.is_null() {
                    data["cursor"] = cursor;
                }
                let reply = self.ws.action("sync", data).await;
                for m in reply["data"]["messages"].as_array().unwrap() {
                    self.record(
                        m["conversation"].as_str().unwrap(),
                        m["seq"].as_i64().unwrap(),
                        m["id"].as_str().unwrap(),
                    );
                }
                if reply["data"]["complete"] == true {
                    break;
                }
                cursor = reply["data"]["cursor"].clone();
            }
            self.absorb();
        }
    }

    async fn run(ops: Vec<Op>) {
        let server = TestServer::start_with(MANY_GUESTS);
        let users = guests(&server, 3).await;
        let group = server.group(&users[0], &[&users[1], &users[2]]).await;
        let mut clients = Vec::new();
        for u in users {
            let mut ws = server.connect(&u).await;
            ws.settle().await;
            clients.push(Client { user: u, ws, log: BTreeMap::new(), sent: Vec::new() });
        }
        let mut distinct = 0usize;
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Send { client, to_group } => {
                    let data = if to_group {
                        json!({"group": group, "content": "g", "client_msg_id": format!("m{n}")})
                    } else {
                        let to = clients[(client + 1) % 3].user.id.clone();
                        json!({"recipient": to, "content": "d", "client_msg_id": format!("m{n}")})
                    };
                    let frame = json!({"type": "message", "data": data});
                    let reply = clients[client].ws.request(frame.clone()).await;
                    assert_eq!(reply["code"], 201, "{reply}");
                    let d = &reply["data"];
                    let (conv, seq, id) = (
                        d["conversation"].as_str().unwrap().to_string(),
                        d["seq"].as_i64().unwrap(),
                        d["message_id"].as_str().unwrap().to_string(),
                    );
                    clients[client].record(&conv, seq, &id);
                    clients[client].sent.push(frame);
                    distinct += 1;
                }
                Op::Resend { client } => {
                    if let Some(frame) = clients[client].sent.last().cloned() {
                        let reply = clients[client].ws.request(frame).await;
                        assert_eq!(reply["code"], 200, "{reply}");
                    }
                }
                Op::Reconnect { client } => {
                    // Frames still unread on the old socket are lost, as on a real network drop.
                    clients[client].ws = server.connect(&clients[client].user).await;
                    clients[client].sync().await;
                }
                Op::Sync { client } => clients[client].sync().await,
            }
            for c in &mut clients {
                c.absorb();
            }
        }
        let mut stored: BTreeMap<String, i64> = BTreeMap::new();
        for c in &mut clients {
            c.ws.settle().await;
            c.sync().await;
            let (_, convs) = server.get("/v1/conversations", Some(&c.user.token)).await;
            for conv in convs["data"].as_array().unwrap() {
                let id = conv["id"].as_str().unwrap();
                let truth: BTreeMap<i64, String> = server
                    .history(&c.user, id)
                    .await
                    .iter()
                    .map(|m| (m["seq"].as_i64().unwrap(), m["id"].as_str().unwrap().to_string()))
                    .collect();
                let last = conv["last_seq"].as_i64().unwrap();
                assert_eq!(truth.keys().copied().collect::<Vec<_>>(), (1..=last).collect::<Vec<_>>(), "gap-free log");
                assert_eq!(
                    c.log.get(id).cloned().unwrap_or_default(),
                    truth,
                    "client {} ends with the exact log of {id}",
                    c.user.id
                );
                stored.insert(id.to_string(), last);
            }
        }
        assert_eq!(stored.values().sum::<i64>() as usize, distinct, "each client_msg_id stored exactly once");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]
        #[test]
        fn every_client_ends_with_the_exact_gap_free_log(ops in proptest::collection::vec(op(), 1..40)) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(run(ops));
        }
    }
}

on_both_stores!(
    fifty_members_receive_a_thousand_concurrent_group_messages_in_order_without_gaps,
    five_hundred_concurrent_sends_into_one_conversation_get_contiguous_seqs,
    a_message_resent_three_times_concurrently_is_stored_once_with_one_seq,
    a_client_that_reconnects_syncs_exactly_what_it_missed,
    a_removed_member_receives_nothing_further_and_cannot_read_new_history,
    a_new_member_cannot_read_history_from_before_joining,
    group_events_reach_members_and_roles_are_enforced,
    group_size_is_capped_by_config,
    read_markers_and_typing_reach_the_other_participant,
    presence_follows_the_first_and_last_device_within_a_second,
);
