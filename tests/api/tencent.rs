//! Tencent IM's REST API at /compat/tencent/v4 and its callbacks: an app server written for
//! Tencent's independent-account mode, calling as its administrator with a UserSig minted by
//! Tencent's own `tls-sig-api-v2` (PyPI), imports accounts, sends C2C and group messages, builds
//! groups, and receives Tencent-format callbacks and before-send calls, checked field by field.

use crate::common;
use crate::usersig::mint;

use std::time::Duration;

use common::{Backend, Receiver, TestServer, User};
use natter::config::{Secret, WebhookFormat};
use serde_json::{Value, json};

const SDKAPPID: u64 = 1400000002;
const KEY: &str = "7f1d8a3c5b2e4f6a9d0c1b3e5f7a9c2d4e6f8a0b1c3d5e7f9a2b4c6d8e0f1a3b";
const ADMIN: &str = "administrator";

/// An app server's view of the REST API: the node's base URL and the administrator's UserSig.
struct Rest {
    base: String,
    sig: String,
}

impl Rest {
    fn new(server: &TestServer) -> Rest {
        Rest { base: server.url("/compat/tencent/v4"), sig: mint(SDKAPPID, KEY, ADMIN, 86400, None) }
    }

    /// A call with the query string Tencent's integration guides build.
    async fn call_as(&self, command: &str, identifier: &str, sig: &str, sdkappid: u64, body: &str) -> Value {
        let random: u32 = rand::random();
        let url = format!(
            "{}/{command}?sdkappid={sdkappid}&identifier={identifier}&usersig={sig}&random={random}&contenttype=json",
            self.base
        );
        let res = reqwest::Client::new().post(url).body(body.to_string()).send().await.expect("http");
        assert_eq!(res.status().as_u16(), 200, "Tencent's API answers 200 whatever happens");
        res.json().await.expect("a JSON reply")
    }

    async fn call(&self, command: &str, body: Value) -> Value {
        self.call_as(command, ADMIN, &self.sig, SDKAPPID, &body.to_string()).await
    }

    async fn ok(&self, command: &str, body: Value) -> Value {
        let reply = self.call(command, body).await;
        assert_eq!(
            (reply["ActionStatus"].as_str(), reply["ErrorCode"].as_i64()),
            (Some("OK"), Some(0)),
            "{command}: {reply}"
        );
        reply
    }

    async fn fails(&self, command: &str, body: Value, code: i64) {
        let reply = self.call(command, body).await;
        assert_eq!(
            (reply["ActionStatus"].as_str(), reply["ErrorCode"].as_i64()),
            (Some("FAIL"), Some(code)),
            "{command}: {reply}"
        );
        assert!(reply["ErrorInfo"].as_str().is_some_and(|i| !i.is_empty()), "{reply}");
    }
}

fn text(t: &str) -> Value {
    json!([{ "MsgType": "TIMTextElem", "MsgContent": { "Text": t } }])
}

fn user(id: &str) -> User {
    User { token: mint(SDKAPPID, KEY, id, 86400, None), refresh: String::new(), id: id.into() }
}

async fn tencent_app(server: &TestServer, receiver: &Receiver) {
    server.hook_up(receiver, &[]).await;
    let hook = receiver.url("/before-send");
    server
        .configure_app("default", move |s| {
            s.tencent_sdkappid = SDKAPPID;
            s.tencent_key = Secret::new(KEY);
            s.webhook_format = WebhookFormat::Tencent;
            s.before_send_url = hook;
        })
        .await;
    receiver.state.lock().unwrap().hook_answer = json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""});
}

/// Callbacks of one command received so far, as (query, body).
fn callbacks(receiver: &Receiver, command: &str) -> Vec<(String, Value)> {
    receiver
        .deliveries()
        .into_iter()
        .filter(|d| d.query.contains(&format!("CallbackCommand={command}")))
        .map(|d| (d.query, serde_json::from_str(&d.body).expect("a JSON body")))
        .collect()
}

async fn wait_callback(receiver: &Receiver, command: &str, matching: impl Fn(&Value) -> bool) -> (String, Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = callbacks(receiver, command).into_iter().find(|(_, b)| matching(b)) {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "no {command} callback arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn an_app_server_written_for_tencent_im_runs_against_natter(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let receiver = Receiver::start();
    tencent_app(&server, &receiver).await;
    let rest = Rest::new(&server);

    // Accounts: one imported with a profile, several at once; an id Natter cannot hold fails alone.
    rest.ok(
        "im_open_login_svc/account_import",
        json!({"UserID": "tx_alice", "Nick": "Alice", "FaceUrl": "https://x.test/a.png"}),
    )
    .await;
    let many =
        rest.ok("im_open_login_svc/multiaccount_import", json!({"Accounts": ["tx_bob", "tx_carol", "bad id!"]})).await;
    assert_eq!(many["FailAccounts"], json!(["bad id!"]));
    let (_, me) = server.get("/v1/me", Some(&user("tx_alice").token)).await;
    assert_eq!(me["data"]["nickname"], "Alice", "{me}");
    let checked = rest
        .ok("im_open_login_svc/account_check", json!({"CheckItem": [{"UserID": "tx_bob"}, {"UserID": "tx_nobody"}]}))
        .await;
    assert_eq!(checked["ResultItem"][0]["AccountStatus"], "Imported");
    assert_eq!(checked["ResultItem"][1]["AccountStatus"], "NotImported");

    // Clients log in with the UserSigs the app server already mints.
    let (alice, bob, carol) = (user("tx_alice"), user("tx_bob"), user("tx_carol"));
    let mut bob_ws = server.connect(&bob).await;
    let mut carol_ws = server.connect(&carol).await;
    carol_ws.settle().await;
    let (_, login) = wait_callback(&receiver, "State.StateChange", |b| b["Info"]["To_Account"] == "tx_bob").await;
    assert_eq!(login["Info"]["Action"], "Login");
    assert!(login["EventTime"].as_i64().is_some(), "{login}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let state = rest.ok("openim/querystate", json!({"To_Account": ["tx_alice", "tx_bob", "tx_ghost"]})).await;
        assert_eq!(state["ErrorList"], json!([{"To_Account": "tx_ghost", "ErrorCode": 70107}]));
        let status = |id: &str| {
            state["QueryResult"].as_array().unwrap().iter().find(|r| r["To_Account"] == id).unwrap()["Status"].clone()
        };
        assert_eq!(status("tx_alice"), "Offline");
        if status("tx_bob") == "Online" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "bob is online");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // sendmsg: the text reaches the socket, the body rides along whole; a resend is one message.
    let send = json!({"SyncOtherMachine": 2, "From_Account": "tx_alice", "To_Account": "tx_bob", "MsgRandom": 1287657,
        "MsgBody": text("hi, beauty"), "CloudCustomData": "order-17"});
    let sent = rest.ok("openim/sendmsg", send.clone()).await;
    assert!(sent["MsgTime"].as_i64().is_some() && sent["MsgKey"].as_str().is_some_and(|k| !k.is_empty()), "{sent}");
    let m = bob_ws.next_message().await;
    assert_eq!((m["content"].as_str(), m["sender"].as_str()), (Some("hi, beauty"), Some("tx_alice")));
    assert_eq!(m["meta"]["tencent"]["MsgBody"], text("hi, beauty"));
    assert_eq!(m["meta"]["tencent"]["CloudCustomData"], "order-17");
    assert_eq!(
        rest.ok("openim/sendmsg", send).await["MsgKey"],
        sent["MsgKey"],
        "the same MsgRandom is the same message"
    );
    let (_, after) = wait_callback(&receiver, "C2C.CallbackAfterSendMsg", |b| b["MsgRandom"] == 1287657).await;
    assert_eq!((after["From_Account"].as_str(), after["To_Account"].as_str()), (Some("tx_alice"), Some("tx_bob")));
    assert_eq!((after["MsgBody"].clone(), after["CloudCustomData"].clone()), (text("hi, beauty"), json!("order-17")));
    assert_eq!((after["MsgKey"].clone(), after["MsgTime"].clone()), (sent["MsgKey"].clone(), sent["MsgTime"].clone()));
    assert_eq!((after["MsgSeq"].as_i64(), after["SendMsgResult"].as_i64()), (Some(1), Some(0)));

    // Without From_Account the administrator sends; a custom element shows its description.
    let custom = json!([{"MsgType": "TIMCustomElem", "MsgContent": {"Data": "{\"order\":17}", "Desc": "Order shipped", "Ext": "x"}}]);
    rest.ok("openim/sendmsg", json!({"To_Account": "tx_bob", "MsgRandom": 55, "MsgBody": custom})).await;
    let m = bob_ws.next_message().await;
    assert_eq!((m["content"].as_str(), m["sender"].as_str()), (Some("Order shipped"), Some(ADMIN)));
    assert_eq!(m["meta"]["tencent"]["MsgBody"], custom);

    // batchsendmsg: one message each; an unknown account is listed, the others still get it.
    let batch = rest
        .ok("openim/batchsendmsg", json!({"From_Account": "tx_alice", "To_Account": ["tx_bob", "tx_carol", "tx_ghost"], "MsgRandom": 77, "MsgBody": text("to all")}))
        .await;
    assert_eq!(batch["ErrorList"], json!([{"To_Account": "tx_ghost", "ErrorCode": 90012}]));
    assert_eq!(bob_ws.next_message().await["content"], "to all");
    assert_eq!(carol_ws.next_message().await["content"], "to all");

    // Groups: created with an admin among its members and a notice; the seed's flow, a welcome
    // message sent by the app server from the creation callback.
    let created = rest
        .ok("group_open_http_svc/create_group", json!({"Owner_Account": "tx_alice", "Type": "Public", "GroupId": "tx_team", "Name": "Team",
            "Notification": "Be kind", "MemberList": [{"Member_Account": "tx_bob", "Role": "Admin"}, {"Member_Account": "tx_carol"}]}))
        .await;
    assert_eq!(created["GroupId"], "tx_team");
    let (query, cb) = wait_callback(&receiver, "Group.CallbackAfterCreateGroup", |b| b["GroupId"] == "tx_team").await;
    assert!(query.contains(&format!("SdkAppid={SDKAPPID}")) && query.contains("contenttype=json"), "{query}");
    assert!(query.contains("Sign=") && query.contains("RequestTime="), "signed with the app's token: {query}");
    assert_eq!(
        (cb["Owner_Account"].as_str(), cb["Operator_Account"].as_str(), cb["Name"].as_str()),
        (Some("tx_alice"), Some("tx_alice"), Some("Team"))
    );
    assert_eq!(cb["MemberList"], json!([{"Member_Account": "tx_bob"}, {"Member_Account": "tx_carol"}]));
    let welcome = rest
        .ok(
            "group_open_http_svc/send_group_msg",
            json!({"GroupId": cb["GroupId"], "Random": 9001, "MsgBody": text("Welcome to Team!")}),
        )
        .await;
    assert!(welcome["MsgSeq"].as_i64().is_some(), "{welcome}");
    let m = carol_ws.next_message().await;
    assert_eq!(
        (m["content"].as_str(), m["group"].as_str(), m["sender"].clone()),
        (Some("Welcome to Team!"), Some("tx_team"), Value::Null)
    );
    let members = rest.ok("group_open_http_svc/get_group_member_info", json!({"GroupId": "tx_team"})).await;
    let roles: Vec<(String, String)> = members["MemberList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["Member_Account"].as_str().unwrap().into(), m["Role"].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        roles,
        [("tx_alice".into(), "Owner".into()), ("tx_bob".into(), "Admin".into()), ("tx_carol".into(), "Member".into())]
    );
    let (_, view) = server.get("/v1/groups/tx_team", Some(&alice.token)).await;
    assert_eq!(view["data"]["announcement"], "Be kind", "{view}");
    rest.fails(
        "group_open_http_svc/create_group",
        json!({"Type": "Public", "GroupId": "tx_team", "Name": "Again"}),
        10021,
    )
    .await;

    // A group without an owner named is the administrator's; ids are generated when absent.
    let auto = rest.ok("group_open_http_svc/create_group", json!({"Type": "Work", "Name": "Ops"})).await;
    let auto_id = auto["GroupId"].as_str().unwrap().to_string();
    let (_, auto_cb) =
        wait_callback(&receiver, "Group.CallbackAfterCreateGroup", |b| b["GroupId"] == auto_id.as_str()).await;
    assert_eq!(auto_cb["Owner_Account"], ADMIN);

    // Members: added (1), already there (2), no such account (0); removed; group messages.
    rest.ok("im_open_login_svc/account_import", json!({"UserID": "tx_dave"})).await;
    let added = rest
        .ok("group_open_http_svc/add_group_member", json!({"GroupId": "tx_team", "MemberList": [{"Member_Account": "tx_dave"}, {"Member_Account": "tx_bob"}, {"Member_Account": "tx_ghost"}]}))
        .await;
    let results: Vec<i64> =
        added["MemberList"].as_array().unwrap().iter().map(|r| r["Result"].as_i64().unwrap()).collect();
    assert_eq!(results, [1, 2, 0]);
    let (_, joined) = wait_callback(&receiver, "Group.CallbackAfterNewMemberJoin", |b| b["GroupId"] == "tx_team").await;
    assert_eq!(joined["NewMemberList"], json!([{"Member_Account": "tx_dave"}]));
    rest.ok(
        "group_open_http_svc/send_group_msg",
        json!({"GroupId": "tx_team", "From_Account": "tx_bob", "Random": 31, "MsgBody": text("from bob")}),
    )
    .await;
    assert_eq!(carol_ws.next_message().await["content"], "from bob");
    let (_, group_cb) = wait_callback(&receiver, "Group.CallbackAfterSendMsg", |b| b["Random"] == 31).await;
    assert_eq!((group_cb["GroupId"].as_str(), group_cb["From_Account"].as_str()), (Some("tx_team"), Some("tx_bob")));
    assert_eq!(group_cb["MsgBody"], text("from bob"));
    rest.ok(
        "group_open_http_svc/delete_group_member",
        json!({"GroupId": "tx_team", "MemberToDel_Account": ["tx_dave", "tx_ghost"]}),
    )
    .await;
    let (_, exit) = wait_callback(&receiver, "Group.CallbackAfterMemberExit", |b| b["GroupId"] == "tx_team").await;
    assert_eq!(
        (exit["ExitType"].as_str(), exit["ExitMemberList"].clone()),
        (Some("Kicked"), json!([{"Member_Account": "tx_dave"}]))
    );
    rest.fails(
        "group_open_http_svc/send_group_msg",
        json!({"GroupId": "tx_team", "From_Account": "tx_dave", "Random": 32, "MsgBody": text("out")}),
        10007,
    )
    .await;

    // Destroyed: its history stays, sends are refused.
    rest.ok("group_open_http_svc/destroy_group", json!({"GroupId": "tx_team"})).await;
    rest.fails(
        "group_open_http_svc/send_group_msg",
        json!({"GroupId": "tx_team", "Random": 33, "MsgBody": text("gone")}),
        10010,
    )
    .await;
    wait_callback(&receiver, "Group.CallbackAfterGroupDestroyed", |b| b["GroupId"] == "tx_team").await;
    drop(bob_ws);
    let (_, gone) = wait_callback(&receiver, "State.StateChange", |b| {
        b["Info"]["To_Account"] == "tx_bob" && b["Info"]["Action"] == "Disconnect"
    })
    .await;
    assert_eq!(gone["Info"]["Reason"], "LinkClose");
}

async fn the_before_send_callback_speaks_tencents_codes(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let receiver = Receiver::start();
    tencent_app(&server, &receiver).await;
    let (alice, bob) = (user("tx_alice"), user("tx_bob"));
    let mut alice_ws = server.connect(&alice).await;
    let mut bob_ws = server.connect(&bob).await;
    bob_ws.settle().await;
    let answer = |v: Value| receiver.state.lock().unwrap().hook_answer = v;

    // 0: allowed as sent; the call carries Tencent's fields.
    answer(json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""}));
    assert_eq!(alice_ws.send_dm("tx_bob", "hello", "c1").await["code"], 201);
    assert_eq!(bob_ws.next_message().await["content"], "hello");
    let call = receiver.state.lock().unwrap().hook_calls.last().cloned().unwrap();
    assert_eq!(call["CallbackCommand"], "C2C.CallbackBeforeSendMsg");
    assert_eq!((call["From_Account"].as_str(), call["To_Account"].as_str()), (Some("tx_alice"), Some("tx_bob")));
    assert_eq!(call["MsgBody"], text("hello"));

    // 1: refused, with the app's words.
    answer(json!({"ActionStatus": "FAIL", "ErrorCode": 1, "ErrorInfo": "not here"}));
    let refused = alice_ws.send_dm("tx_bob", "spam", "c2").await;
    assert_eq!(
        (refused["code"].as_i64(), refused["error"].as_str()),
        (Some(403), Some("rejected_by_hook")),
        "{refused}"
    );

    // 2: dropped silently: the sender hears 202, nobody receives it, history does not hold it.
    answer(json!({"ActionStatus": "OK", "ErrorCode": 2, "ErrorInfo": ""}));
    let dropped = alice_ws.send_dm("tx_bob", "shadow", "c3").await;
    assert_eq!((dropped["code"].as_i64(), dropped["data"]["dropped"].as_bool()), (Some(202), Some(true)), "{dropped}");

    // 0 with a MsgBody: the message is replaced, body and text.
    let replaced = json!([{"MsgType": "TIMTextElem", "MsgContent": {"Text": "h***o"}}]);
    answer(json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "MsgBody": replaced}));
    assert_eq!(alice_ws.send_dm("tx_bob", "hello", "c4").await["code"], 201);
    let m = bob_ws.next_message().await;
    assert_eq!((m["content"].as_str(), m["meta"]["tencent"]["MsgBody"].clone()), (Some("h***o"), replaced));
    let history = server.history(&bob, m["conversation"].as_str().unwrap()).await;
    let contents: Vec<&str> = history.iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["hello", "h***o"], "neither the refused nor the dropped message was stored");

    // Group sends ask Group.CallbackBeforeSendMsg.
    answer(json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""}));
    let group = server.group(&alice, &[&bob]).await;
    assert_eq!(alice_ws.send_group(&group, "to the group", "g1").await["code"], 201);
    let call = receiver.state.lock().unwrap().hook_calls.last().cloned().unwrap();
    assert_eq!(
        (call["CallbackCommand"].as_str(), call["GroupId"].as_str()),
        (Some("Group.CallbackBeforeSendMsg"), Some(group.as_str()))
    );
}

async fn only_the_administrators_valid_usersig_opens_the_rest_api(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let receiver = Receiver::start();
    tencent_app(&server, &receiver).await;
    let rest = Rest::new(&server);
    let body = json!({"UserID": "tx_eve"}).to_string();
    let import = "im_open_login_svc/account_import";
    let alice_sig = mint(SDKAPPID, KEY, "tx_alice", 86400, None);
    let mut tampered = rest.sig.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let cases: Vec<(&str, String, String, u64, i64)> = vec![
        ("a user's UserSig", "tx_alice".into(), alice_sig, SDKAPPID, 70403),
        ("identifier not the signed one", ADMIN.into(), mint(SDKAPPID, KEY, "tx_alice", 86400, None), SDKAPPID, 70013),
        ("another SDKAppID in the query", ADMIN.into(), rest.sig.clone(), 1400000999, 70014),
        ("expired", ADMIN.into(), mint(SDKAPPID, KEY, ADMIN, 86400, Some(1_600_000_000)), SDKAPPID, 70001),
        ("another key", ADMIN.into(), mint(SDKAPPID, "other", ADMIN, 86400, None), SDKAPPID, 70009),
        ("unknown SDKAppID", ADMIN.into(), mint(1400000999, KEY, ADMIN, 86400, None), 1400000999, 70020),
        ("tampered", ADMIN.into(), tampered, SDKAPPID, -1),
        ("no usersig", ADMIN.into(), String::new(), SDKAPPID, 60004),
    ];
    for (what, identifier, sig, sdkappid, code) in cases {
        let reply = rest.call_as(import, &identifier, &sig, sdkappid, &body).await;
        assert_eq!(reply["ActionStatus"], "FAIL", "{what}: {reply}");
        if code > 0 {
            assert_eq!(reply["ErrorCode"], code, "{what}: {reply}");
        } else {
            assert!([70003, 70009].contains(&reply["ErrorCode"].as_i64().unwrap()), "{what}: {reply}");
        }
    }
    let checked = rest.ok("im_open_login_svc/account_check", json!({"CheckItem": [{"UserID": "tx_eve"}]})).await;
    assert_eq!(checked["ResultItem"][0]["AccountStatus"], "NotImported", "no refused call imported eve");
    let (status, _) = server.get("/v1/me", Some(&mint(SDKAPPID, KEY, "tx_eve", 86400, None))).await;
    assert_eq!(status, 200, "eve signs in with her UserSig (created on first sight)");

    // Bad input, each refused with its code, nothing sent.
    for (command, body, code) in [
        ("openim/sendmsg", "not json".to_string(), 90001),
        ("openim/sendmsg", json!({"To_Account": "tx_eve", "MsgRandom": 1, "MsgBody": []}).to_string(), 90001),
        (
            "openim/sendmsg",
            json!({"To_Account": "tx_eve", "MsgRandom": 1, "MsgBody": [{"MsgType": "TIMTextElem"}]}).to_string(),
            90001,
        ),
        ("openim/sendmsg", json!({"To_Account": "tx_eve", "MsgRandom": -1, "MsgBody": text("x")}).to_string(), 90001),
        ("openim/sendmsg", json!({"To_Account": "tx_ghost", "MsgRandom": 1, "MsgBody": text("x")}).to_string(), 90012),
        (
            "openim/sendmsg",
            json!({"To_Account": "tx_eve", "MsgRandom": 1, "MsgBody": text("a\u{0}b")}).to_string(),
            90001,
        ),
        (
            "openim/sendmsg",
            json!({"From_Account": "tx_ghost", "To_Account": "tx_eve", "MsgRandom": 1, "MsgBody": text("x")})
                .to_string(),
            90012,
        ),
        ("im_open_login_svc/account_import", json!({"Nick": "x"}).to_string(), 70402),
        ("group_open_http_svc/create_group", json!({"Type": "Public"}).to_string(), 10004),
        (
            "group_open_http_svc/create_group",
            json!({"Type": "Public", "Name": "x", "GroupId": "@TGS#bad"}).to_string(),
            10015,
        ),
        ("group_open_http_svc/destroy_group", json!({"GroupId": "nope"}).to_string(), 10010),
        ("openim/unknown_command", "{}".to_string(), 60002),
        (
            "openim/sendmsg",
            json!({"To_Account": "tx_eve", "MsgRandom": 1, "MsgBody": text(&"x".repeat(70_000))}).to_string(),
            90005,
        ),
    ] {
        let reply = rest.call_as(command, ADMIN, &rest.sig, SDKAPPID, &body).await;
        assert_eq!(
            (reply["ActionStatus"].as_str(), reply["ErrorCode"].as_i64()),
            (Some("FAIL"), Some(code)),
            "{command} {body}: {reply}"
        );
    }
    let eve = user("tx_eve");
    let (_, conversations) = server.get("/v1/conversations", Some(&eve.token)).await;
    assert_eq!(conversations["data"], json!([]), "nothing was sent to eve: {conversations}");
}

on_both_stores!(
    an_app_server_written_for_tencent_im_runs_against_natter,
    the_before_send_callback_speaks_tencents_codes,
    only_the_administrators_valid_usersig_opens_the_rest_api,
);
