//! Whatever a write path accepts, every read path gives back identically; whatever it cannot keep
//! it refuses with a documented 4xx. Random and hostile strings and JSON (unicode, NUL, control
//! and format characters, deep nesting, huge numbers, lone surrogates in escapes) go through every
//! write path, on SQLite and PostgreSQL, and one bad message never fails another's send.

use crate::common;

use std::collections::HashSet;

use common::{Backend, TestServer, User, Ws};
use natter::{
    auth::server_sig::Scheme,
    domain::{ConversationKind, Email, Name, UserId, UserKey},
    store::{conversations::NewMessage, outbox::Hooks},
};
use proptest::{
    prelude::*,
    strategy::ValueTree,
    test_runner::{Config as RunnerConfig, TestRunner},
};
use serde_json::{Value, json};

/// Registrations are limited per address; these tests register many users from one.
const OPEN: &str = "[default_app]\nregistrations_per_hour = 100000\nguest_signups_per_hour = 100000";

/// Every error code the protocol documents, with its status.
fn documented_4xx() -> HashSet<(&'static str, u16)> {
    natter::error::ErrorCode::ALL
        .iter()
        .map(|c| (c.as_str(), c.status()))
        .filter(|(_, status)| (400..500).contains(status))
        .collect()
}

fn assert_documented_refusal(status: u16, code: &Value, what: &str) {
    let code = code.as_str().unwrap_or_default();
    let known = documented_4xx();
    assert!(
        known.iter().any(|(c, s)| *c == code && *s == status),
        "{what}: answered {status} {code:?}, not a documented refusal"
    );
}

// ---- generators -------------------------------------------------------------------------------

/// Characters that have broken chat servers: NUL and other controls, zero-width and bidi format
/// characters, combining marks, compatibility forms, astral emoji, JSON and SQL syntax.
const PALETTE: &[&str] = &[
    "\u{0}",
    "\u{1}",
    "\u{1f}",
    "\u{7f}",
    "\u{85}",
    "\u{200B}",
    "\u{200D}",
    "\u{202E}",
    "\u{2066}",
    "\u{FEFF}",
    "\u{00AD}",
    "\u{3164}",
    "ａ",
    "Ａ",
    "é",
    "e\u{301}",
    "😀",
    "👨\u{200D}👩",
    "\u{10FFFF}",
    "\u{FFFD}",
    "\n",
    "\r",
    "\t",
    "\"",
    "\\",
    "'",
    "{",
    "}",
    "[",
    "%",
    "_",
    " ",
    "@",
    ".",
    "a",
    "Z",
    "0",
    "--",
    ";",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(proptest::sample::select(PALETTE), 0..24).prop_map(|parts| parts.concat()),
        "[a-z]{1,12}",
    ]
}

/// Arbitrary JSON values with unusual strings and numbers.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(text(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON text for `meta`: serialised objects, and raw texts serde_json's own writer never makes.
fn meta_text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::btree_map(text(), json_value(), 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect()).to_string()),
        (1usize..400).prop_map(|depth| format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))),
        (1usize..400).prop_map(|depth| format!(r#"{{"a":{}{}}}"#, "[".repeat(depth), "]".repeat(depth))),
        proptest::sample::select(vec![
            r#"{"n":123456789012345678901234567890}"#,
            r#"{"n":1e400}"#,
            r#"{"n":-0.0,"m":1.0E-400}"#,
            r#"{"s":"\ud800"}"#,
            r#"{"s":"\udc00\ud800"}"#,
            r#"{"s":"\ud83d\ude00"}"#,
            r#"{"s":"\u0000"}"#,
            r#"{"\u0000":1}"#,
            r#"{"a":1,"a":2}"#,
            r#"  {"padded": true}  "#,
            r#"[1,2]"#,
            r#""text""#,
            r#"{}"#,
        ])
        .prop_map(str::to_string),
    ]
}

fn cases<T: std::fmt::Debug>(strategy: impl Strategy<Value = T>, n: usize) -> Vec<T> {
    let mut runner = TestRunner::new_with_rng(
        RunnerConfig::default(),
        proptest::test_runner::TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    (0..n).map(|_| strategy.new_tree(&mut runner).unwrap().current()).collect()
}

// ---- readers ----------------------------------------------------------------------------------

struct Chat {
    server: TestServer,
    alice: User,
    bob: User,
    alice_ws: Ws,
    bob_ws: Ws,
}

impl Chat {
    async fn start(backend: Backend) -> Chat {
        let server = TestServer::start_on(backend, OPEN);
        let alice = server.register("alice@example.com").await;
        let bob = server.register("bob@example.com").await;
        let alice_ws = server.connect(&alice).await;
        let bob_ws = server.connect(&bob).await;
        Chat { server, alice, bob, alice_ws, bob_ws }
    }

    /// The message with this client_msg_id as every read path gives it: live push to the
    /// recipient, REST history, WS history and sync.
    async fn read_everywhere(&mut self, conversation: &str, seq: i64, cmid: &str) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        let push = loop {
            let m = self.bob_ws.next_message().await;
            if m["client_msg_id"] == cmid {
                break m;
            }
        };
        out.push(("live push", push));
        let (status, body) = self
            .server
            .get(
                &format!("/v1/conversations/{conversation}/messages?after_seq={}&limit=1", seq - 1),
                Some(&self.bob.token),
            )
            .await;
        assert_eq!(status, 200, "REST history answered {status}: {body}");
        out.push(("REST history", body["data"]["messages"][0].clone()));
        let reply = self
            .bob_ws
            .action("history", json!({"conversation": conversation, "after_seq": seq - 1, "limit": 1}))
            .await;
        assert_eq!(reply["code"], 200, "WS history: {reply}");
        out.push(("WS history", reply["data"]["messages"][0].clone()));
        let reply = self.bob_ws.action("sync", json!({"conversations": {conversation: seq - 1}, "limit": 1})).await;
        assert_eq!(reply["code"], 200, "sync: {reply}");
        let synced = reply["data"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["conversation"] == conversation && m["seq"] == seq)
            .cloned()
            .unwrap_or(Value::Null);
        out.push(("sync", synced));
        out
    }
}

enum Via {
    Ws,
    ServerApi,
}

/// Sends one message; `Ok((conversation, seq))` when stored, `Err((status, code))` when refused.
async fn send(chat: &mut Chat, via: &Via, data: &str) -> Result<(String, i64), (u16, Value)> {
    match via {
        Via::Ws => {
            // Raw text, so escapes serde_json would never write (lone surrogates) reach the server.
            let frame = format!(r#"{{"type":"message","id":"x","data":{data}}}"#);
            chat.alice_ws.send_text(&frame).await;
            let reply = loop {
                let v = chat.alice_ws.next().await;
                if v["type"] == "reply" {
                    break v;
                }
            };
            match reply["code"].as_u64() {
                Some(201) => Ok((
                    reply["data"]["conversation"].as_str().unwrap().to_string(),
                    reply["data"]["seq"].as_i64().unwrap(),
                )),
                Some(code) => Err((code as u16, reply["error"].clone())),
                None => panic!("reply without a code: {reply}"),
            }
        }
        Via::ServerApi => {
            let client = chat.server.server_client("default", Scheme::V2HmacSha256).await;
            let mut body: Value = match serde_json::from_str::<Value>(data) {
                Ok(v) => v,
                // Not JSON serde_json can hold (a lone surrogate): send the bytes as they are.
                Err(_) => return send_raw_server_message(chat, &client, data).await,
            };
            body["from"] = json!(chat.alice.id);
            let raw = body.to_string();
            let spliced = splice_raw(data, &raw);
            send_raw_server_message(chat, &client, &spliced).await
        }
    }
}

/// `original` with a `from` member added, keeping its own bytes (numbers and escapes as sent).
fn splice_raw(original: &str, _reserialised: &str) -> String {
    let trimmed = original.trim_start();
    format!(r#"{{"from":{},{}"#, "\"__FROM__\"", &trimmed[1..])
}

async fn send_raw_server_message(
    chat: &Chat,
    client: &common::ServerClient,
    data: &str,
) -> Result<(String, i64), (u16, Value)> {
    let body = if data.contains("\"__FROM__\"") {
        data.replacen("\"__FROM__\"", &format!("\"{}\"", chat.alice.id), 1)
    } else {
        format!(r#"{{"from":"{}",{}"#, chat.alice.id, &data.trim_start()[1..])
    };
    let path = "/v1/server/messages";
    let nonce = natter::domain::random_id("", 8);
    let headers = client.headers("POST", path, body.as_bytes(), common::ServerClient::now(), &nonce);
    let (status, reply) = common::send_raw(
        client.addr,
        common::Raw { method: "POST", path, body: body.into_bytes(), headers: with_json(headers) },
    )
    .await;
    if status == 201 {
        Ok((reply["data"]["conversation"].as_str().unwrap().to_string(), reply["data"]["seq"].as_i64().unwrap()))
    } else {
        Err((status, reply["error"]["code"].clone()))
    }
}

fn with_json(mut headers: Vec<(&'static str, String)>) -> Vec<(&'static str, String)> {
    headers.push(("Content-Type", "application/json".into()));
    headers
}

// ---- the property -----------------------------------------------------------------------------

async fn message_fields_are_refused_or_read_back_identically_everywhere(backend: Backend) {
    let mut chat = Chat::start(backend).await;
    let contents = cases(text(), 40);
    let metas = cases(meta_text(), 40);
    let mut stored = 0;
    let mut refused = 0;
    for (i, (content, meta)) in contents.iter().zip(&metas).enumerate() {
        for via in [Via::Ws, Via::ServerApi] {
            // Content alone, then meta with a plain content: each field is judged on its own.
            let cmid = format!("c{i}-{}", matches!(via, Via::Ws));
            let data = json!({"recipient": chat.bob.id, "content": content, "client_msg_id": cmid}).to_string();
            let meta_cmid = format!("m{i}-{}", matches!(via, Via::Ws));
            let meta_data = format!(
                r#"{{"recipient":"{}","content":"meta","client_msg_id":"{meta_cmid}","meta":{meta}}}"#,
                chat.bob.id
            );
            match send(&mut chat, &via, &data).await {
                Ok((conv, seq)) => {
                    stored += 1;
                    for (path, m) in chat.read_everywhere(&conv, seq, &cmid).await {
                        assert_eq!(m["content"].as_str(), Some(content.as_str()), "content {content:?} via {path}");
                    }
                }
                Err((status, code)) => {
                    refused += 1;
                    assert_documented_refusal(status, &code, &format!("content {content:?}"));
                }
            }
            match send(&mut chat, &via, &meta_data).await {
                Ok((conv, seq)) => {
                    stored += 1;
                    let expected: Value = serde_json::from_str(meta).expect("accepted meta is JSON");
                    for (path, m) in chat.read_everywhere(&conv, seq, &meta_cmid).await {
                        assert_eq!(m["meta"], expected, "meta {meta} via {path}");
                    }
                }
                Err((status, code)) => {
                    refused += 1;
                    assert_documented_refusal(status, &code, &format!("meta {meta}"));
                }
            }
        }
    }
    println!("{backend:?}: {stored} stored and read back through 4 paths, {refused} refused with documented codes");
    assert!(stored > 40 && refused > 10, "the generators exercise both outcomes");

    // Every conversation still pages through whole after all of it.
    let conv = natter::domain::direct_conversation_id(UserKey(1), UserKey(2));
    let (status, _) =
        chat.server.get(&format!("/v1/conversations/{conv}/messages?limit=200"), Some(&chat.bob.token)).await;
    assert_eq!(status, 200);
}

async fn names_ids_emails_and_client_msg_ids_are_refused_or_read_back_as_parsed(backend: Backend) {
    let mut chat = Chat::start(backend).await;
    let client = chat.server.server_client("default", Scheme::V2HmacSha256).await;
    let inputs = cases(text(), 48);
    for (i, s) in inputs.iter().enumerate() {
        // Profile name: PATCH /v1/me, read back by /v1/me and the users query.
        let (status, body) = patch_me(&chat.server, &chat.alice.token, json!({"first_name": s})).await;
        match Name::parse(s.clone()) {
            Ok(name) => {
                assert_eq!(status, 200, "first_name {s:?}: {body}");
                let (_, me) = chat.server.get("/v1/me", Some(&chat.alice.token)).await;
                assert_eq!(me["data"]["first_name"], name.as_str(), "first_name {s:?} via /v1/me");
                let reply = chat.bob_ws.action("query", json!({"id": chat.alice.id})).await;
                assert_eq!(reply["data"][0]["first_name"], name.as_str(), "first_name {s:?} via query");
            }
            Err(_) => assert_documented_refusal(status, &body["error"]["code"], &format!("first_name {s:?}")),
        }

        // Group name: created over REST, read back over REST and WS.
        let (status, body) = chat.server.post("/v1/groups", Some(&chat.alice.token), json!({"name": s})).await;
        match Name::parse(s.clone()) {
            Ok(name) => {
                assert_eq!(status, 201, "group name {s:?}: {body}");
                let id = body["data"]["id"].as_str().unwrap();
                let (_, shown) = chat.server.get(&format!("/v1/groups/{id}"), Some(&chat.alice.token)).await;
                assert_eq!(shown["data"]["name"], name.as_str(), "group name {s:?} via REST");
                let reply = chat.alice_ws.action("group.show", json!({"group": id})).await;
                assert_eq!(reply["data"]["name"], name.as_str(), "group name {s:?} via WS");
            }
            Err(_) => assert_documented_refusal(status, &body["error"]["code"], &format!("group name {s:?}")),
        }

        // User id: imported through the server API, read back by id.
        let (status, body) = client.call("POST", "/v1/server/users", Some(json!({"id": s}))).await;
        match UserId::parse(s.clone()) {
            Ok(id) => {
                assert!(status == 200 || status == 201, "user id {s:?}: {status} {body}");
                let path = format!("/v1/server/users/{}", urlencode(id.as_str()));
                let (status, got) = client.call("GET", &path, None).await;
                assert_eq!(status, 200, "user id {s:?}: {got}");
                assert_eq!(got["data"]["id"], id.as_str(), "user id {s:?}");
            }
            Err(_) => assert_documented_refusal(status, &body["error"]["code"], &format!("user id {s:?}")),
        }

        // Email: registered, then logged in with the same text.
        let email = format!("{s}{i}@example.com");
        let body = json!({"email": email, "password": "correct horse battery", "first_name": "E", "last_name": "M"});
        let (status, reg) = chat.server.post("/v1/auth/register", None, body).await;
        match Email::parse(email.clone()) {
            Ok(parsed) => {
                assert_eq!(status, 201, "email {email:?}: {reg}");
                assert_eq!(reg["data"]["user"]["email"], parsed.as_str());
                let login = json!({"email": email, "password": "correct horse battery"});
                let (status, _) = chat.server.post("/v1/auth/login", None, login).await;
                assert_eq!(status, 200, "login with {email:?}");
            }
            Err(_) => assert_documented_refusal(status, &reg["error"]["code"], &format!("email {email:?}")),
        }

        // client_msg_id: sent, then read back everywhere.
        let data = json!({"recipient": chat.bob.id, "content": "x", "client_msg_id": s}).to_string();
        match send(&mut chat, &Via::Ws, &data).await {
            Ok((conv, seq)) => {
                for (path, m) in chat.read_everywhere(&conv, seq, s).await {
                    assert_eq!(m["client_msg_id"].as_str(), Some(s.as_str()), "client_msg_id {s:?} via {path}");
                }
            }
            Err((status, code)) => assert_documented_refusal(status, &code, &format!("client_msg_id {s:?}")),
        }
    }
}

async fn patch_me(server: &TestServer, token: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new().patch(server.url("/v1/me")).bearer_auth(token).json(&body).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

// ---- the poison message -----------------------------------------------------------------------

async fn meta_nested_hundreds_deep_is_refused_and_history_stays_readable_for_everyone(backend: Backend) {
    let mut chat = Chat::start(backend).await;
    let deep = format!("{}1{}", r#"{"a":"#.repeat(300), "}".repeat(300));
    let data = format!(r#"{{"recipient":"{}","content":"x","client_msg_id":"deep","meta":{deep}}}"#, chat.bob.id);
    for via in [Via::Ws, Via::ServerApi] {
        let (status, code) = send(&mut chat, &via, &data).await.expect_err("deep meta refused");
        assert_eq!((status, code.as_str()), (400, Some("validation_failed")));
    }
    let at_limit = format!("{}1{}", r#"{"a":"#.repeat(16), "}".repeat(16));
    let data = format!(r#"{{"recipient":"{}","content":"x","client_msg_id":"ok","meta":{at_limit}}}"#, chat.bob.id);
    let (conv, seq) = send(&mut chat, &Via::Ws, &data).await.expect("16 levels are fine");
    for (path, m) in chat.read_everywhere(&conv, seq, "ok").await {
        assert_eq!(m["meta"], serde_json::from_str::<Value>(&at_limit).unwrap(), "via {path}");
    }
}

async fn a_nul_is_refused_with_400_on_every_write_path_of_both_stores(backend: Backend) {
    let mut chat = Chat::start(backend).await;
    let nul = "a\u{0}b";
    let data = json!({"recipient": chat.bob.id, "content": nul, "client_msg_id": "n1"}).to_string();
    for via in [Via::Ws, Via::ServerApi] {
        let (status, code) = send(&mut chat, &via, &data).await.expect_err("NUL content refused");
        assert_eq!((status, code.as_str()), (400, Some("validation_failed")));
    }
    let data =
        format!(r#"{{"recipient":"{}","content":"x","client_msg_id":"n2","meta":{{"k":"\u0000"}}}}"#, chat.bob.id);
    let (status, _) = send(&mut chat, &Via::Ws, &data).await.expect_err("NUL in meta refused");
    assert_eq!(status, 400);
    let (status, _) = chat.server.post("/v1/groups", Some(&chat.alice.token), json!({"name": nul})).await;
    assert_eq!(status, 400);
    let (status, _) = patch_me(&chat.server, &chat.alice.token, json!({"nickname": nul})).await;
    assert_eq!(status, 400);
    // The conversation is untouched and goes on.
    let reply = chat.alice_ws.send_dm(&chat.bob.id, "after", "n3").await;
    assert_eq!(reply["code"], 201, "{reply}");
}

/// A message the edge would refuse (PostgreSQL cannot hold NUL), handed to the store directly
/// beside 120 good ones of two apps sent at the same moment, so they share commit batches: the
/// culprit alone fails and every other message commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_message_fails_no_other_message_of_its_commit_batch() {
    let server = TestServer::start_on(Backend::Postgres, OPEN);
    let store = server.node().store.clone();
    let other = natter::domain::AppId::parse("other").unwrap();
    store.create_app(&other, &natter::config::AppSettings::default()).await.unwrap();
    let default = natter::domain::AppId::parse("default").unwrap();
    let mut users = Vec::new();
    for (app, name) in [(&default, "a1"), (&default, "a2"), (&other, "b1"), (&other, "b2")] {
        let id = UserId::parse(name).unwrap();
        let fields = natter::store::users::ImportUser::default();
        let hooks = Hooks::of(&natter::config::AppSettings::default());
        let (user, _) = store.upsert_user(app, &id, &fields, &hooks, "test").await.unwrap();
        users.push((app.clone(), user.key));
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(121));
    let mut tasks = Vec::new();
    for i in 0..121 {
        let (store, start) = (store.clone(), start.clone());
        let (app, sender, recipient) = if i % 2 == 0 {
            (users[0].0.clone(), users[0].1, users[1].1)
        } else {
            (users[2].0.clone(), users[2].1, users[3].1)
        };
        tasks.push(tokio::spawn(async move {
            let conversation = natter::domain::direct_conversation_id(sender, recipient);
            let content = if i == 60 { "bad\u{0}".to_string() } else { format!("good {i}") };
            let cmid = format!("m{i}");
            let hooks = Hooks::of(&natter::config::AppSettings::default());
            start.wait().await;
            let res = store
                .append_message(NewMessage {
                    app: &app,
                    conversation: &conversation,
                    kind: ConversationKind::Direct,
                    sender,
                    recipient: Some(recipient),
                    client_msg_id: &cmid,
                    message_kind: None,
                    content: &content,
                    meta: None,
                    sender_id: None,
                    recipient_id: None,
                    reply_to: None,
                    mentions: &[],
                    hooks: &hooks,
                    bypass_mutes: false,
                })
                .await;
            (i, res.is_ok())
        }));
    }
    let mut failed = Vec::new();
    for t in tasks {
        let (i, ok) = t.await.unwrap();
        if !ok {
            failed.push(i);
        }
    }
    assert_eq!(failed, vec![60], "only the culprit fails");
    let splits = natter::telemetry::render_metrics();
    println!(
        "batch splits: {}",
        splits.lines().filter(|l| l.starts_with("natter_append_batch_splits_total")).collect::<Vec<_>>().join(" ")
    );
}

/// A message's later life takes hostile input too: edited content and meta, and reaction keys,
/// are refused with documented codes or read back identically through the edit event, REST
/// history, the conversation list's preview and sync's updates.
async fn edits_and_reaction_keys_are_refused_or_read_back_identically_everywhere(backend: Backend) {
    let mut chat = Chat::start(backend).await;
    let sent = chat.alice_ws.send_dm(&chat.bob.id, "original", "orig").await;
    let conv = sent["data"]["conversation"].as_str().unwrap().to_string();
    chat.bob_ws.next_message().await;
    let (mut edited, mut refused, mut reacted, mut keys_refused) = (0, 0, 0, 0);
    let mut seen_change = 0;
    let contents = cases(text(), 30);
    let metas = cases(meta_text(), 30);
    let keys = cases(text(), 30);
    for ((content, meta), key) in contents.iter().zip(&metas).zip(&keys) {
        let data = format!(r#"{{"conversation":"{conv}","seq":1,"content":{},"meta":{meta}}}"#, json!(content));
        // Raw text, so escapes serde_json would never write reach the server.
        chat.alice_ws.send_text(&format!(r#"{{"type":"action","action":"edit","id":"e","data":{data}}}"#)).await;
        let reply = loop {
            let v = chat.alice_ws.next().await;
            if v["type"] == "reply" {
                break v;
            }
        };
        if reply["code"] == 200 {
            edited += 1;
            let meta: Value = serde_json::from_str(meta).expect("accepted meta is JSON");
            let event = chat.bob_ws.next_event("message.edited").await;
            assert_eq!((event["content"].as_str(), &event["meta"]), (Some(content.as_str()), &meta), "edit event");
            let (_, body) = chat
                .server
                .get(&format!("/v1/conversations/{conv}/messages?after_seq=0&limit=1"), Some(&chat.bob.token))
                .await;
            let m = &body["data"]["messages"][0];
            assert_eq!((m["content"].as_str(), &m["meta"]), (Some(content.as_str()), &meta), "REST history");
            let (_, list) = chat.server.get("/v1/conversations", Some(&chat.bob.token)).await;
            let preview: String = content.chars().take(100).collect();
            assert_eq!(list["data"][0]["last_message"]["content"].as_str(), Some(preview.as_str()), "list preview");
            let sync = chat
                .bob_ws
                .action("sync", json!({"conversations": {conv.as_str(): 1}, "changes": {conv.as_str(): seen_change}}))
                .await;
            let update = &sync["data"]["updates"][0];
            assert_eq!((update["content"].as_str(), &update["meta"]), (Some(content.as_str()), &meta), "sync update");
            seen_change = sync["data"]["changes"][&conv].as_i64().unwrap();
        } else {
            refused += 1;
            assert_documented_refusal(
                reply["code"].as_u64().unwrap_or(0) as u16,
                &reply["error"],
                &format!("edit {data}"),
            );
        }
        let reply = chat.bob_ws.action("react", json!({"conversation": conv, "seq": 1, "key": key, "on": true})).await;
        if reply["code"] == 200 {
            reacted += 1;
            let (_, body) = chat
                .server
                .get(&format!("/v1/conversations/{conv}/messages?after_seq=0&limit=1"), Some(&chat.bob.token))
                .await;
            assert_eq!(
                body["data"]["messages"][0]["reactions"][key.as_str()],
                json!({"count": 1, "me": true}),
                "key {key:?}"
            );
            let off =
                chat.bob_ws.action("react", json!({"conversation": conv, "seq": 1, "key": key, "on": false})).await;
            assert_eq!(off["data"]["count"], 0);
        } else {
            keys_refused += 1;
            assert_documented_refusal(
                reply["code"].as_u64().unwrap_or(0) as u16,
                &reply["error"],
                &format!("key {key:?}"),
            );
        }
    }
    println!(
        "{backend:?}: {edited} edits read back through 4 paths, {refused} refused; {reacted} keys kept, {keys_refused} refused"
    );
    assert!(edited > 5 && refused > 3 && reacted > 3 && keys_refused > 3, "the generators exercise both outcomes");
}

on_both_stores!(
    message_fields_are_refused_or_read_back_identically_everywhere,
    names_ids_emails_and_client_msg_ids_are_refused_or_read_back_as_parsed,
    meta_nested_hundreds_deep_is_refused_and_history_stays_readable_for_everyone,
    a_nul_is_refused_with_400_on_every_write_path_of_both_stores,
    edits_and_reaction_keys_are_refused_or_read_back_identically_everywhere,
);

/// serde fills a struct from a JSON array by position; a body that is an array is refused as one,
/// on the client and the server API, and changes nothing (found by schemathesis).
#[tokio::test]
async fn a_json_array_where_an_object_belongs_is_refused_and_changes_nothing() {
    let server = TestServer::start_with(OPEN);
    let owner = server.register("array-owner@example.com").await;
    let group = server.group(&owner, &[]).await;
    let path = format!("/v1/groups/{group}");
    let (status, body) = server.call("PATCH", &path, Some(&owner.token), Some(json!([null, null]))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("validation_failed")), "{body}");
    let (status, body) = server.call("PATCH", &path, Some(&owner.token), Some(json!(["Renamed"]))).await;
    assert_eq!(status, 400, "{body}");
    let (_, shown) = server.get(&path, Some(&owner.token)).await;
    assert_ne!(shown["data"]["name"], "Renamed");
    let creds = server.server_client("default", Scheme::V2HmacSha256).await;
    let (status, body) = creds.call("POST", "/v1/server/users", Some(json!(["someone"]))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("validation_failed")), "{body}");
}

/// History paged at the ends of the integer range answers (found by schemathesis: `before_seq`
/// at i64::MIN overflowed and dropped the connection in debug builds).
#[tokio::test]
async fn history_at_the_ends_of_the_integer_range_is_refused_or_served_never_dropped() {
    let server = TestServer::start_with(OPEN);
    let owner = server.register("range-owner@example.com").await;
    let group = server.group(&owner, &[]).await;
    let base = format!("/v1/conversations/{group}/messages");
    for query in [
        format!("after_seq={0}&before_seq={0}", i64::MIN),
        format!("before_seq={}", i64::MIN),
        "after_seq=-1".to_string(),
    ] {
        let (status, body) = server.get(&format!("{base}?{query}"), Some(&owner.token)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("validation_failed")), "{query}: {body}");
    }
    for query in [format!("after_seq=0&before_seq={}", i64::MAX), format!("before_seq={}", i64::MAX)] {
        let (status, body) = server.get(&format!("{base}?{query}"), Some(&owner.token)).await;
        assert_eq!(status, 200, "{query}: {body}");
    }
}
