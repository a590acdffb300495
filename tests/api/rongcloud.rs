//! RongCloud's server API at /compat/rongcloud, driven by RongCloud's own Python server SDK
//! (`rc-server-sdk` from PyPI, unmodified, pointed at the node by its host setting): tokens that
//! open sockets, private and group publishes that reach them, groups, gags and bans, and its
//! signature refused when wrong.

use crate::common;

use std::{process::Command, time::Duration};

use common::{Backend, TestServer, User};
use serde_json::{Value, json};

struct Sdk {
    host: String,
    key: String,
    secret: String,
}

impl Sdk {
    async fn of(server: &TestServer) -> Sdk {
        let api = server.server_client("default", natter::auth::server_sig::Scheme::V1Sha1).await;
        Sdk { host: server.url("/compat/rongcloud"), key: api.key.clone(), secret: api.secret.clone() }
    }

    /// One SDK call (`user.register`, `message.private.send`, …) with its positional arguments.
    fn call(&self, call: &str, args: Value) -> Value {
        let out = Command::new("python3")
            .args(["tests/support/rongcloud_sdk.py", &self.host, &self.key, &self.secret, call, &args.to_string()])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "rongcloud SDK (pip install rc-server-sdk) {call}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{call}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    fn ok(&self, call: &str, args: Value) -> Value {
        let reply = self.call(call, args);
        assert_eq!(reply["code"], 200, "{call}: {reply}");
        reply
    }
}

async fn an_app_server_written_for_rongcloud_runs_unchanged_against_natter(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let sdk = Sdk::of(&server).await;

    // getToken: the user is created, and the token opens a socket.
    let mut users = Vec::new();
    for (id, name) in [("rc_alice", "Alice"), ("rc_bob", "Bob"), ("rc_carol", "Carol")] {
        let reply = sdk.ok("user.register", json!([id, name, "https://x.test/a.png"]));
        assert_eq!(reply["userId"], id);
        users.push(User { token: reply["token"].as_str().unwrap().to_string(), refresh: String::new(), id: id.into() });
    }
    let (bob, carol) = (&users[1], &users[2]);
    let mut bob_ws = server.connect(bob).await;
    let mut carol_ws = server.connect(carol).await;
    carol_ws.settle().await;
    let info = sdk.ok("user.query", json!(["rc_alice"]));
    assert_eq!(
        (info["userName"].as_str(), info["userPortrait"].as_str()),
        (Some("Alice"), Some("https://x.test/a.png"))
    );
    // Presence settles within its batch window.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sdk.ok("user.check_online", json!(["rc_bob"]))["status"] != "1" {
        assert!(std::time::Instant::now() < deadline, "bob is online");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sdk.ok("user.check_online", json!(["rc_alice"]))["status"], "0");
    sdk.ok("user.update", json!(["rc_alice", "Alice Smith", "https://x.test/b.png"]));
    assert_eq!(sdk.ok("user.query", json!(["rc_alice"]))["userName"], "Alice Smith");

    // A private message: the text of RC:TxtMsg, and the whole RongCloud message in meta.
    let sent = sdk.ok(
        "message.private.send",
        json!(["rc_alice", ["rc_bob", "rc_carol"], "RC:TxtMsg", {"content": "hello from RongCloud code"}]),
    );
    assert_eq!(sent["messageUIDs"].as_array().unwrap().len(), 2, "{sent}");
    for ws in [&mut bob_ws, &mut carol_ws] {
        let m = ws.next_message().await;
        assert_eq!(m["content"], "hello from RongCloud code");
        assert_eq!(m["meta"]["rongcloud"]["objectName"], "RC:TxtMsg");
        assert_eq!(m["sender"], "rc_alice");
    }

    // Recall: only the sender's own message, at any time.
    let uid = sent["messageUIDs"][0]["messageUID"].as_str().unwrap().to_string();
    let not_theirs = sdk.call("message.private.recall", json!(["rc_carol", "rc_bob", uid, 0]));
    assert_eq!(not_theirs["code"], 25101, "{not_theirs}");
    sdk.ok("message.private.recall", json!(["rc_alice", "rc_bob", uid, 0]));
    let recalled = bob_ws.next_event("message.recalled").await;
    assert_eq!((recalled["seq"].as_i64(), recalled["by"].clone()), (Some(1), Value::Null));

    // Groups: create (alice, bob), join (carol), publish, quit, query.
    sdk.ok("group.create", json!([["rc_alice", "rc_bob"], "rc_team", "Team"]));
    assert_eq!(bob_ws.next_event("group.created").await["id"], "rc_team");
    sdk.ok("group.join", json!([["rc_carol"], "rc_team", "Team"]));
    sdk.ok("group.create", json!([["rc_carol"], "rc_team", "Team"])); // creating again joins: no change
    sdk.ok("message.group.send", json!(["rc_alice", "rc_team", "RC:TxtMsg", {"content": "to the team"}]));
    assert_eq!(carol_ws.next_message().await["content"], "to the team");
    let members: Vec<String> = sdk.ok("group.query", json!(["rc_team"]))["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(members, ["rc_alice", "rc_bob", "rc_carol"]);

    // Gag a member, then the whole group; the app's own sends pass.
    sdk.ok("group.user.gag.add", json!([["rc_carol"], "rc_team", 10]));
    let mut carol_sends = server.connect(carol).await;
    let refused = carol_sends.send_group("rc_team", "can I?", "c1").await;
    assert_eq!(refused["error"], "muted", "{refused}");
    let gagged = sdk.ok("group.user.gag.query", json!(["rc_team"]));
    assert_eq!(gagged["users"][0]["userId"], "rc_carol", "{gagged}");
    sdk.ok("group.user.gag.remove", json!([["rc_carol"], "rc_team"]));
    assert_eq!(carol_sends.send_group("rc_team", "thanks", "c2").await["code"], 201);
    sdk.ok("group.update", json!(["rc_team", "Team 2"]));
    sdk.ok("group.quit", json!([["rc_bob"], "rc_team"]));
    let members = sdk.ok("group.query", json!(["rc_team"]))["users"].as_array().unwrap().len();
    assert_eq!(members, 2);

    // Block (ban) bob: his socket closes with 4503; unblocked, he connects again.
    sdk.ok("user.block.add", json!(["rc_bob", 10]));
    assert_eq!(bob_ws.closed().await, Some(4503));
    let listed = sdk.ok("user.block.query", json!([]));
    assert_eq!(listed["users"][0]["userId"], "rc_bob", "{listed}");
    sdk.ok("user.block.remove", json!(["rc_bob"]));
    let (status, _) = server.get("/v1/me", Some(&bob.token)).await;
    assert_eq!(status, 200);

    sdk.ok("group.dismiss", json!(["rc_alice", "rc_team"]));
    let refused = sdk.call("message.group.send", json!(["rc_alice", "rc_team", "RC:TxtMsg", {"content": "late"}]));
    assert_ne!(refused["code"], 200, "a dismissed group takes no message: {refused}");

    // As on RongCloud, a dismissed id can be created again: a fresh group, owned by the first
    // user, whose new members do not inherit the old history.
    sdk.ok("group.create", json!([["rc_bob", "rc_carol"], "rc_team", "Team again"]));
    let members: Vec<String> = sdk.ok("group.query", json!(["rc_team"]))["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(members, ["rc_bob", "rc_carol"], "alice, a member of the old group, is not in the new one");
    let (_, view) = server.get("/v1/groups/rc_team", Some(&bob.token)).await;
    assert_eq!(
        (view["data"]["name"].as_str(), view["data"]["members"][0]["role"].as_str()),
        (Some("Team again"), Some("owner"))
    );
    sdk.ok("message.group.send", json!(["rc_bob", "rc_team", "RC:TxtMsg", {"content": "fresh start"}]));
    let history = server.history(bob, "rc_team").await;
    let texts: Vec<&str> = history.iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(texts, ["fresh start"], "the new group's history starts at its re-creation");
}

async fn wrong_signatures_and_bad_parameters_get_rongclouds_codes(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let sdk = Sdk::of(&server).await;
    let forged = Sdk { secret: "not-the-secret".into(), ..Sdk::of(&server).await };
    assert_eq!(forged.call("user.register", json!(["x1", "X", ""]))["code"], 1004);
    let unknown = Sdk { key: "no-such-key".into(), ..Sdk::of(&server).await };
    assert_eq!(unknown.call("user.register", json!(["x1", "X", ""]))["code"], 1001);
    assert_eq!(sdk.call("user.query", json!(["nobody"]))["code"], 1002);
    // An oversized body (the SDK checks lengths itself, so it is sent by hand): RongCloud's code.
    let (nonce, ts) = ("31337", (natter::domain::now_millis() / 1000).to_string());
    let signature = {
        use sha1::Digest;
        hex::encode(sha1::Sha1::digest(format!("{}{nonce}{ts}", sdk.secret).as_bytes()))
    };
    let res = reqwest::Client::new()
        .post(format!("{}/user/getToken.json", sdk.host))
        .header("App-Key", &sdk.key)
        .header("Nonce", nonce)
        .header("Timestamp", &ts)
        .header("Signature", signature)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("userId=x2&name={}", "x".repeat(70_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], 1005, "{body}");
    assert_eq!(sdk.call("user.block.add", json!(["nobody", 10]))["code"], 1002);
    sdk.ok("user.register", json!(["x1", "X", ""]));
    sdk.ok("user.register", json!(["x2", "Y", ""]));
    sdk.ok("group.create", json!([["x1"], "g_x", "G"]));
    let outsider = sdk.call("message.group.send", json!(["x2", "g_x", "RC:TxtMsg", {"content": "hi"}]));
    assert_eq!(outsider["code"], 22406, "not in the group: {outsider}");
    // An exact replay is refused; a new request with the same nonce is not (see server_api).
    let client = reqwest::Client::new();
    let ts = (natter::domain::now_millis() / 1000).to_string();
    let sig = {
        use sha1::Digest;
        hex::encode(sha1::Sha1::digest(format!("{}{}{}", sdk.secret, "42", ts).as_bytes()))
    };
    let send = || {
        client
            .post(server.url("/compat/rongcloud/user/info.json"))
            .header("RC-App-Key", &sdk.key)
            .header("RC-Nonce", "42")
            .header("RC-Timestamp", &ts)
            .header("RC-Signature", &sig)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("userId=x1")
            .timeout(Duration::from_secs(10))
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(first["code"], 200, "the RC- headers work: {first}");
    let again = send().await.unwrap();
    assert_eq!(again.status().as_u16(), 401);
    assert_eq!(again.json::<Value>().await.unwrap()["code"], 1004);
    // Turned off for the app: refused.
    server.configure_app("default", |s| s.rongcloud_compat = false).await;
    assert_eq!(sdk.call("user.query", json!(["x1"]))["code"], 1009);
}

on_both_stores!(
    an_app_server_written_for_rongcloud_runs_unchanged_against_natter,
    wrong_signatures_and_bad_parameters_get_rongclouds_codes,
);
