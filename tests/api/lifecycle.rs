//! A message's whole life (edit, recall, delete, reactions, replies, mentions) and the
//! conversation list built on it (unread counts, previews, pinned / archived / muted), through
//! the WebSocket, REST and the server API, read back through push, history and sync.

use crate::common;

use std::time::Duration;

use common::{Backend, Receiver, TestServer, User, Ws};
use natter::auth::server_sig::Scheme;
use serde_json::{Value, json};

async fn three_users(server: &TestServer) -> (User, User, User) {
    (server.guest().await, server.guest().await, server.guest().await)
}

async fn action_ok(ws: &mut Ws, action: &str, data: Value) -> Value {
    let reply = ws.action(action, data).await;
    assert_eq!(reply["code"], 200, "{action}: {reply}");
    reply["data"].clone()
}

/// Waits for an `unread` event with these counts (earlier ones may show counts on the way).
async fn unread_reaches(ws: &mut Ws, conversation: &str, unread: i64, total: i64) {
    loop {
        let event = ws.next_event("unread").await;
        if event["conversation"] == conversation && event["unread"] == unread && event["total"] == total {
            return;
        }
    }
}

fn error_of(reply: &Value) -> (i64, &str) {
    (reply["code"].as_i64().unwrap_or(0), reply["error"].as_str().unwrap_or(""))
}

/// The message at `seq` in `user`'s history.
async fn read_back(server: &TestServer, user: &User, conversation: &str, seq: i64) -> Value {
    let all = server.history(user, conversation).await;
    all.into_iter().find(|m| m["seq"] == seq).unwrap_or_else(|| panic!("seq {seq} missing from history"))
}

async fn edits_recalls_deletes_and_reactions_reach_every_device_and_read_back_everywhere(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let (alice, bob, _) = three_users(&server).await;
    let mut alice_phone = server.connect(&alice).await;
    let mut alice_laptop = server.connect(&alice).await;
    let mut bob_ws = server.connect(&bob).await;
    for ws in [&mut alice_phone, &mut alice_laptop, &mut bob_ws] {
        ws.settle().await;
    }
    let sent = alice_phone.send_dm(&bob.id, "hello wrold", "a1").await;
    let conv = sent["data"]["conversation"].as_str().unwrap().to_string();
    let pushed = bob_ws.next_message().await;
    assert_eq!(
        (
            pushed["edited_at"].clone(),
            pushed["recalled"].clone(),
            pushed["deleted"].clone(),
            pushed["reactions"].clone()
        ),
        (Value::Null, json!(false), json!(false), json!({})),
        "a new message carries its lifecycle fields"
    );
    let reply = bob_ws
        .request(json!({"type":"message","data":{"recipient": alice.id, "content":"what?", "client_msg_id":"b1",
            "reply_to": 1, "mentions": [alice.id]}}))
        .await;
    assert_eq!(reply["code"], 201, "{reply}");
    let mut answer = alice_laptop.next_message().await;
    if answer["seq"] == 1 {
        // The laptop first hears what the phone sent.
        answer = alice_laptop.next_message().await;
    }
    assert_eq!((answer["reply_to"].as_i64(), answer["mentions"].clone()), (Some(1), json!([alice.id])));

    // Edit: only the sender; every device of both users hears it.
    let edited =
        action_ok(&mut alice_phone, "edit", json!({"conversation": conv, "seq": 1, "content": "hello world"})).await;
    assert!(edited["edited_at"].as_i64().unwrap() > 0);
    for ws in [&mut bob_ws, &mut alice_laptop, &mut alice_phone] {
        let event = ws.next_event("message.edited").await;
        assert_eq!((event["seq"].as_i64(), event["content"].as_str()), (Some(1), Some("hello world")));
    }
    let refused = bob_ws.action("edit", json!({"conversation": conv, "seq": 1, "content": "mine now"})).await;
    assert_eq!(error_of(&refused), (403, "forbidden"));
    let m = read_back(&server, &bob, &conv, 1).await;
    assert_eq!((m["content"].as_str(), m["edited_at"].as_i64()), (Some("hello world"), edited["edited_at"].as_i64()));

    // Reactions: idempotent per user and key, counted, and "me" per reader.
    let r = action_ok(&mut bob_ws, "react", json!({"conversation": conv, "seq": 1, "key": "👍", "on": true})).await;
    assert_eq!(r["count"], 1);
    let event = alice_phone.next_event("message.reaction").await;
    assert_eq!(
        (event["key"].as_str(), event["user"].as_str(), event["count"].as_i64()),
        (Some("👍"), Some(bob.id.as_str()), Some(1))
    );
    let again = action_ok(&mut bob_ws, "react", json!({"conversation": conv, "seq": 1, "key": "👍", "on": true})).await;
    assert_eq!(again["count"], 1, "reacting twice counts once");
    action_ok(&mut alice_phone, "react", json!({"conversation": conv, "seq": 1, "key": "👍", "on": true})).await;
    assert_eq!(read_back(&server, &bob, &conv, 1).await["reactions"], json!({"👍": {"count": 2, "me": true}}));
    action_ok(&mut alice_phone, "react", json!({"conversation": conv, "seq": 1, "key": "👍", "on": false})).await;
    assert_eq!(read_back(&server, &alice, &conv, 1).await["reactions"], json!({"👍": {"count": 1, "me": false}}));

    // Recall: content gone from the store, a tombstone keeps the seq.
    let recalled = action_ok(&mut alice_phone, "recall", json!({"conversation": conv, "seq": 1})).await;
    assert_eq!(recalled["seq"], 1);
    let event = bob_ws.next_event("message.recalled").await;
    assert_eq!((event["seq"].as_i64(), event["by"].as_str()), (Some(1), Some(alice.id.as_str())));
    for reader in [&alice, &bob] {
        let m = read_back(&server, reader, &conv, 1).await;
        assert_eq!(
            (m["recalled"].as_bool(), m["content"].as_str(), m["reactions"].clone()),
            (Some(true), Some(""), json!({}))
        );
        assert!(m.get("meta").is_none());
    }
    let gone = bob_ws.action("react", json!({"conversation": conv, "seq": 1, "key": "👍", "on": true})).await;
    assert_eq!(error_of(&gone), (409, "message_gone"));
    let gone = alice_phone.action("edit", json!({"conversation": conv, "seq": 1, "content": "back"})).await;
    assert_eq!(error_of(&gone), (409, "message_gone"));

    // Delete for me: only bob's devices hear it and only bob's view changes.
    let deleted = action_ok(&mut bob_ws, "delete", json!({"conversation": conv, "seq": 2, "scope": "me"})).await;
    assert_eq!(deleted["scope"], "me");
    assert_eq!(bob_ws.next_event("message.deleted").await["scope"], "me");
    let mine = read_back(&server, &bob, &conv, 2).await;
    assert_eq!((mine["deleted"].as_bool(), mine["content"].as_str()), (Some(true), Some("")));
    let theirs = read_back(&server, &alice, &conv, 2).await;
    assert_eq!((theirs["deleted"].as_bool(), theirs["content"].as_str()), (Some(false), Some("what?")));
    alice_phone.settle().await;
    while let Some(frame) = alice_phone.try_pending() {
        assert_ne!(frame["event"], "message.deleted", "alice heard bob's private deletion: {frame}");
    }
    let everyone = bob_ws.action("delete", json!({"conversation": conv, "seq": 2, "scope": "all"})).await;
    assert_eq!(error_of(&everyone), (403, "forbidden"), "no one deletes for everyone in a direct conversation");
}

async fn every_refusal_has_its_code_and_changes_nothing(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    server.configure_app("default", |s| s.recall_window_secs = 1).await;
    let (alice, bob, carol) = three_users(&server).await;
    let (a, b, c) = (0, 1, 2);
    let mut ws = [server.connect(&alice).await, server.connect(&bob).await, server.connect(&carol).await];
    let [alice_ws, ..] = &mut ws;
    let conv = alice_ws.send_dm(&bob.id, "one", "a1").await["data"]["conversation"].as_str().unwrap().to_string();

    let cases = [
        (c, "edit", json!({"conversation": conv, "seq": 1, "content": "x"}), (404, "conversation_not_found")),
        (a, "edit", json!({"conversation": conv, "seq": 9, "content": "x"}), (404, "message_not_found")),
        (a, "edit", json!({"conversation": conv, "seq": 0, "content": "x"}), (404, "message_not_found")),
        (a, "edit", json!({"conversation": conv, "seq": 1, "content": ""}), (400, "validation_failed")),
        (a, "edit", json!({"conversation": conv, "seq": 1, "content": "a\u{0}b"}), (400, "validation_failed")),
        (b, "recall", json!({"conversation": conv, "seq": 1}), (403, "forbidden")),
        (c, "react", json!({"conversation": conv, "seq": 1, "key": "👍", "on": true}), (404, "conversation_not_found")),
        (
            b,
            "react",
            json!({"conversation": conv, "seq": 1, "key": "x".repeat(33), "on": true}),
            (400, "validation_failed"),
        ),
        (b, "react", json!({"conversation": conv, "seq": 1, "key": "a b", "on": true}), (400, "validation_failed")),
        (
            b,
            "react",
            json!({"conversation": conv, "seq": 1, "key": "\u{200b}", "on": true}),
            (400, "validation_failed"),
        ),
        (b, "delete", json!({"conversation": conv, "seq": 1, "scope": "them"}), (400, "validation_failed")),
        (c, "delete", json!({"conversation": conv, "seq": 1, "scope": "me"}), (404, "conversation_not_found")),
    ];
    for (who, action, data, expected) in cases {
        let reply = ws[who].action(action, data.clone()).await;
        assert_eq!(error_of(&reply), expected, "{action} {data}: {reply}");
    }
    let bad_refs = [
        (json!({"recipient": bob.id, "content": "x", "client_msg_id": "r1", "reply_to": 7}), (400, "invalid_reply")),
        (json!({"recipient": bob.id, "content": "x", "client_msg_id": "r2", "reply_to": 0}), (400, "invalid_reply")),
        (
            json!({"recipient": bob.id, "content": "x", "client_msg_id": "r3", "mentions": [carol.id]}),
            (400, "not_a_member"),
        ),
        (
            json!({"recipient": bob.id, "content": "x", "client_msg_id": "r4", "mentions": ["nobody"]}),
            (400, "not_a_member"),
        ),
        (
            json!({"recipient": bob.id, "content": "x", "client_msg_id": "r5", "mentions": ["bad id!"]}),
            (400, "validation_failed"),
        ),
    ];
    for (data, expected) in bad_refs {
        let reply = ws[a].request(json!({"type": "message", "data": data.clone()})).await;
        assert_eq!(error_of(&reply), expected, "{data}: {reply}");
    }
    // A reply to a DM that does not exist yet cannot point anywhere.
    let fresh = ws[c]
        .request(json!({"type":"message","data":{"recipient": alice.id, "content":"x", "client_msg_id":"c1", "reply_to": 1}}))
        .await;
    assert_eq!(error_of(&fresh), (400, "invalid_reply"));

    // Past the recall window the sender is refused; nothing changed.
    let deadline = std::time::Instant::now() + Duration::from_millis(1100);
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let late = ws[a].action("recall", json!({"conversation": conv, "seq": 1})).await;
    assert_eq!(error_of(&late), (409, "recall_window_passed"));
    let m = read_back(&server, &bob, &conv, 1).await;
    assert_eq!(
        (m["content"].as_str(), m["recalled"].as_bool(), m["reactions"].clone()),
        (Some("one"), Some(false), json!({}))
    );
    let (_, list) = server.get("/v1/conversations", Some(&bob.token)).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "no failed send created anything: {list}");
}

async fn group_owners_and_admins_recall_and_delete_for_everyone(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    server.configure_app("default", |s| s.recall_window_secs = 1).await;
    let (owner, member, other) = three_users(&server).await;
    let group = server.group(&owner, &[&member, &other]).await;
    let mut owner_ws = server.connect(&owner).await;
    let mut member_ws = server.connect(&member).await;
    let mut other_ws = server.connect(&other).await;
    for ws in [&mut owner_ws, &mut member_ws, &mut other_ws] {
        ws.settle().await;
    }
    member_ws.send_group(&group, "spam", "m1").await;
    member_ws.send_group(&group, "more spam", "m2").await;
    let deleted = other_ws.action("delete", json!({"conversation": group, "seq": 1, "scope": "all"})).await;
    assert_eq!(error_of(&deleted), (403, "forbidden"), "a plain member deletes only for themselves");
    let recalled = other_ws.action("recall", json!({"conversation": group, "seq": 1})).await;
    assert_eq!(error_of(&recalled), (403, "forbidden"));
    let deadline = std::time::Instant::now() + Duration::from_millis(1100);
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    action_ok(&mut owner_ws, "recall", json!({"conversation": group, "seq": 1})).await;
    action_ok(&mut owner_ws, "delete", json!({"conversation": group, "seq": 2, "scope": "all"})).await;
    for ws in [&mut member_ws, &mut other_ws] {
        assert_eq!(ws.next_event("message.recalled").await["seq"], 1);
        let event = ws.next_event("message.deleted").await;
        assert_eq!((event["seq"].as_i64(), event["scope"].as_str()), (Some(2), Some("all")));
    }
    let m = read_back(&server, &other, &group, 2).await;
    assert_eq!((m["deleted"].as_bool(), m["content"].as_str()), (Some(true), Some("")));
    let again = owner_ws.action("delete", json!({"conversation": group, "seq": 2, "scope": "all"})).await;
    assert_eq!(error_of(&again), (409, "message_gone"));
}

async fn the_conversation_list_counts_others_unread_messages_and_sorts_pinned_first(backend: Backend) {
    let server = TestServer::start_on(backend, "[chat]\npreview_chars = 5");
    let (alice, bob, carol) = three_users(&server).await;
    let mut alice_ws = server.connect(&alice).await;
    let mut bob_ws = server.connect(&bob).await;
    bob_ws.settle().await;
    let dm =
        alice_ws.send_dm(&bob.id, "first message", "a1").await["data"]["conversation"].as_str().unwrap().to_string();
    alice_ws.send_dm(&bob.id, "second message", "a2").await;
    bob_ws.send_dm(&alice.id, "bob's own", "b1").await;
    let group = server.group(&carol, &[&alice, &bob]).await;
    let mut carol_ws = server.connect(&carol).await;
    carol_ws
        .request(json!({"type":"message","data":{"group": group, "content":"hey @bob", "client_msg_id":"c1", "mentions": [bob.id]}}))
        .await;

    let (status, list) = server.get("/v1/conversations", Some(&bob.token)).await;
    assert_eq!(status, 200, "{list}");
    let items = list["data"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], group.as_str(), "newest activity first");
    assert_eq!((items[0]["unread"].as_i64(), items[0]["mentioned"].as_bool()), (Some(1), Some(true)));
    let dm_item = &items[1];
    assert_eq!(dm_item["unread"], 0, "sending moved bob's read marker past alice's messages");
    assert_eq!(dm_item["last_message"]["content"], "bob's", "a preview of preview_chars characters");
    assert_eq!(dm_item["last_message"]["sender"], bob.id.as_str());
    let (_, alice_list) = server.get("/v1/conversations", Some(&alice.token)).await;
    let alice_dm = alice_list["data"].as_array().unwrap().iter().find(|c| c["id"] == dm.as_str()).unwrap().clone();
    assert_eq!(alice_dm["unread"], 1, "alice's own two messages are not unread to her");

    // Reading moves the count, and every device hears it.
    action_ok(&mut bob_ws, "read", json!({"conversation": group, "seq": 1})).await;
    unread_reaches(&mut bob_ws, &group, 0, 0).await;

    // A recalled message is no longer unread: a DM's other participant gets fresh counts.
    alice_ws.send_dm(&bob.id, "oops", "a3").await;
    let (_, before) = server.get("/v1/conversations", Some(&bob.token)).await;
    assert_eq!(before["data"][0]["unread"], 1, "{before}");
    action_ok(&mut alice_ws, "recall", json!({"conversation": dm, "seq": 4})).await;
    unread_reaches(&mut bob_ws, &dm, 0, 0).await;
    let (_, after) = server.get("/v1/conversations", Some(&bob.token)).await;
    assert_eq!(after["data"][0]["last_message"]["recalled"], true);

    // Pinned first whatever the activity; archived and muted are the member's own.
    let pinned = server
        .call("PATCH", &format!("/v1/conversations/{dm}"), Some(&bob.token), Some(json!({"pinned": false})))
        .await;
    assert_eq!(pinned.0, 200, "{:?}", pinned.1);
    carol_ws.send_group(&group, "newer", "c2").await;
    let (status, set) = server
        .call(
            "PATCH",
            &format!("/v1/conversations/{dm}"),
            Some(&bob.token),
            Some(json!({"pinned": true, "archived": true, "muted_until": 4_000_000_000_000_i64})),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(
        (set["data"]["pinned"].as_bool(), set["data"]["archived"].as_bool(), set["data"]["muted_until"].as_i64()),
        (Some(true), Some(true), Some(4_000_000_000_000))
    );
    let (_, list) = server.get("/v1/conversations", Some(&bob.token)).await;
    assert_eq!(list["data"][0]["id"], dm.as_str(), "pinned first: {list}");
    let (_, alice_list) = server.get("/v1/conversations", Some(&alice.token)).await;
    assert!(alice_list["data"].as_array().unwrap().iter().all(|c| c["pinned"] == false), "pins are per member");
    let (status, _) = server
        .call("PATCH", &format!("/v1/conversations/{dm}"), Some(&carol.token), Some(json!({"pinned": true})))
        .await;
    assert_eq!(status, 404, "not carol's conversation");
    let (status, _) = server.call("PATCH", &format!("/v1/conversations/{dm}"), Some(&bob.token), Some(json!({}))).await;
    assert_eq!(status, 400);
    let (status, _) = server
        .call("PATCH", &format!("/v1/conversations/{dm}"), Some(&bob.token), Some(json!({"muted_until": null})))
        .await;
    assert_eq!(status, 200, "null unmutes");

    // Paged with a cursor: one conversation a page, each exactly once.
    let mut seen = Vec::new();
    let mut path = "/v1/conversations?limit=1".to_string();
    loop {
        let (status, page) = server.get(&path, Some(&bob.token)).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(page["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()));
        match page["cursor"].as_str() {
            Some(cursor) => path = format!("/v1/conversations?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, vec![dm.clone(), group.clone()]);
    let (status, _) = server.get("/v1/conversations?cursor=forged", Some(&bob.token)).await;
    assert_eq!(status, 400);
    let (status, _) = server.get("/v1/conversations?limit=0", Some(&bob.token)).await;
    assert_eq!(status, 400);

    // The app reads the same list.
    let api = server.server_client("default", Scheme::V2HmacSha256).await;
    let (status, body) = api.call("GET", &format!("/v1/server/users/{}/conversations", bob.id), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["id"], dm.as_str());
}

async fn a_device_that_was_away_learns_the_final_state_of_what_it_held_through_sync(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let (alice, bob, _) = three_users(&server).await;
    let mut alice_ws = server.connect(&alice).await;
    let conv = alice_ws.send_dm(&bob.id, "one", "a1").await["data"]["conversation"].as_str().unwrap().to_string();
    alice_ws.send_dm(&bob.id, "two", "a2").await;
    alice_ws.send_dm(&bob.id, "three", "a3").await;

    // Bob's tablet syncs everything, then goes away.
    let mut tablet = server.connect(&bob).await;
    let first = action_ok(&mut tablet, "sync", json!({})).await;
    let change = first["changes"][&conv].as_i64().unwrap();
    assert_eq!((first["messages"].as_array().map(Vec::len), change), (Some(3), 0));
    drop(tablet);

    let mut phone = server.connect(&bob).await;
    action_ok(&mut alice_ws, "edit", json!({"conversation": conv, "seq": 1, "content": "one (edited)"})).await;
    action_ok(&mut alice_ws, "recall", json!({"conversation": conv, "seq": 2})).await;
    action_ok(&mut phone, "react", json!({"conversation": conv, "seq": 3, "key": "🎉", "on": true})).await;
    action_ok(&mut phone, "delete", json!({"conversation": conv, "seq": 3, "scope": "me"})).await;
    alice_ws.send_dm(&bob.id, "four", "a4").await;

    let mut tablet = server.connect(&bob).await;
    let sync = action_ok(
        &mut tablet,
        "sync",
        json!({"conversations": {conv.as_str(): 3}, "changes": {conv.as_str(): change}}),
    )
    .await;
    assert_eq!(sync["complete"], true);
    let fresh: Vec<i64> = sync["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(fresh, vec![4], "only the new message is sent whole");
    let updates: Vec<&Value> = sync["updates"].as_array().unwrap().iter().collect();
    let state =
        |seq: i64| updates.iter().find(|m| m["seq"] == seq).unwrap_or_else(|| panic!("no update for {seq}: {sync}"));
    assert_eq!(state(1)["content"], "one (edited)");
    assert_eq!((state(2)["recalled"].as_bool(), state(2)["content"].as_str()), (Some(true), Some("")));
    assert_eq!(state(3)["deleted"], true, "hidden on every device of bob's");
    let now = sync["changes"][&conv].as_i64().unwrap();
    assert!(now > change);
    let again =
        action_ok(&mut tablet, "sync", json!({"conversations": {conv.as_str(): 4}, "changes": {conv.as_str(): now}}))
            .await;
    assert_eq!(
        (again["messages"].as_array().map(Vec::len), again["updates"].as_array().map(Vec::len)),
        (Some(0), Some(0))
    );
    // Alice's view of seq 3 is untouched by bob's deletion, and shows his reaction.
    let m = read_back(&server, &alice, &conv, 3).await;
    assert_eq!(
        (m["deleted"].as_bool(), m["reactions"].clone()),
        (Some(false), json!({"🎉": {"count": 1, "me": false}}))
    );
}

async fn rest_and_the_server_api_follow_the_same_rules(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    server.configure_app("default", |s| s.edit_window_secs = 1).await;
    let (alice, bob, _) = three_users(&server).await;
    let mut alice_ws = server.connect(&alice).await;
    let conv = alice_ws.send_dm(&bob.id, "one", "a1").await["data"]["conversation"].as_str().unwrap().to_string();
    alice_ws.send_dm(&bob.id, "two", "a2").await;
    let base = format!("/v1/conversations/{conv}/messages");

    let (status, body) = server
        .call(
            "PATCH",
            &format!("{base}/1"),
            Some(&alice.token),
            Some(json!({"content": "uno", "meta": {"lang": "es"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        server.call("PATCH", &format!("{base}/1"), Some(&bob.token), Some(json!({"content": "x"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));
    let (status, body) = server.call("PUT", &format!("{base}/1/reactions/%F0%9F%91%8D"), Some(&bob.token), None).await;
    assert_eq!((status, body["data"]["count"].as_i64()), (200, Some(1)), "{body}");
    let (status, body) =
        server.call("DELETE", &format!("{base}/1/reactions/%F0%9F%91%8D"), Some(&bob.token), None).await;
    assert_eq!((status, body["data"]["count"].as_i64()), (200, Some(0)), "{body}");
    let (status, _) = server.call("DELETE", &format!("{base}/2?scope=me"), Some(&bob.token), None).await;
    assert_eq!(status, 200);
    let (status, _) = server.call("DELETE", &format!("{base}/2?scope=nope"), Some(&bob.token), None).await;
    assert_eq!(status, 400);
    let (status, _) = server.call("DELETE", &format!("{base}/2"), Some(&bob.token), None).await;
    assert_eq!(status, 400, "the scope is required");
    let (status, _) = server.call("POST", &format!("{base}/2/recall"), Some(&alice.token), None).await;
    assert_eq!(status, 200);
    let m = read_back(&server, &bob, &conv, 1).await;
    assert_eq!((m["content"].as_str(), m["meta"].clone()), (Some("uno"), json!({"lang": "es"})));

    // Past the edit window the sender is refused; the app is not.
    let deadline = std::time::Instant::now() + Duration::from_millis(1100);
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) =
        server.call("PATCH", &format!("{base}/1"), Some(&alice.token), Some(json!({"content": "late"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("edit_window_passed")));
    let api = server.server_client("default", Scheme::V2HmacSha256).await;
    let server_base = format!("/v1/server/conversations/{conv}/messages");
    let (status, body) = api.call("PATCH", &format!("{server_base}/1"), Some(json!({"content": "moderated"}))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.call("PUT", &format!("{server_base}/1/reactions/ok?user={}", bob.id), None).await;
    assert_eq!((status, body["data"]["count"].as_i64()), (200, Some(1)), "{body}");
    let (status, body) = api.call("DELETE", &format!("{server_base}/1"), None).await;
    assert_eq!(status, 200, "{body}");
    let m = read_back(&server, &alice, &conv, 1).await;
    assert_eq!((m["deleted"].as_bool(), m["content"].as_str()), (Some(true), Some("")));
    let (status, body) = api.call("POST", &format!("{server_base}/9/recall"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("message_not_found")));
    let (status, body) = api
        .call(
            "POST",
            "/v1/server/messages",
            Some(json!({"from": bob.id, "recipient": alice.id, "content": "re", "client_msg_id": "s1", "reply_to": 2})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api
        .call(
            "POST",
            "/v1/server/messages",
            Some(
                json!({"recipient": alice.id, "content": "re", "client_msg_id": "s2", "reply_to": 99, "from": bob.id}),
            ),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_reply")));
}

async fn every_device_hears_fresh_unread_counts_after_new_messages_and_removals(backend: Backend) {
    let server = TestServer::start_on(backend, "[chat]\nunread_push_ms = 100");
    let (alice, bob, carol) = three_users(&server).await;
    let group = server.group(&carol, &[&alice, &bob]).await;
    let mut phone = server.connect(&bob).await;
    let mut laptop = server.connect(&bob).await;
    let mut carol_ws = server.connect(&carol).await;
    laptop.settle().await;
    for n in 1..=3 {
        carol_ws.send_group(&group, &format!("news {n}"), &format!("c{n}")).await;
    }
    for ws in [&mut phone, &mut laptop] {
        unread_reaches(ws, &group, 3, 3).await;
    }
    let mut alice_ws = server.connect(&alice).await;
    let dm = alice_ws.send_dm(&bob.id, "psst", "a1").await["data"]["conversation"].as_str().unwrap().to_string();
    unread_reaches(&mut phone, &dm, 1, 4).await;
    // A removal in a group: every member who had it unread gets fresh counts.
    action_ok(&mut carol_ws, "delete", json!({"conversation": group, "seq": 2, "scope": "all"})).await;
    unread_reaches(&mut phone, &group, 2, 3).await;
    action_ok(&mut carol_ws, "recall", json!({"conversation": group, "seq": 3})).await;
    unread_reaches(&mut laptop, &group, 1, 2).await;
    // The counts pushed are the list's.
    let (_, list) = server.get("/v1/conversations", Some(&bob.token)).await;
    let counts: Vec<(String, i64)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_string(), c["unread"].as_i64().unwrap()))
        .collect();
    assert_eq!(counts, [(dm, 1), (group, 1)]);
}

async fn edits_recalls_and_deletions_reach_the_apps_webhooks(backend: Backend) {
    let server = TestServer::start_on(backend, "[webhooks]\npoll_ms = 50\nretry_schedule_ms = [200]");
    let receiver = Receiver::start();
    server.hook_up(&receiver, &["message.edited", "message.recalled", "message.deleted"]).await;
    let (alice, bob, _) = three_users(&server).await;
    let mut alice_ws = server.connect(&alice).await;
    let conv = alice_ws.send_dm(&bob.id, "one", "a1").await["data"]["conversation"].as_str().unwrap().to_string();
    alice_ws.send_dm(&bob.id, "two", "a2").await;
    action_ok(&mut alice_ws, "edit", json!({"conversation": conv, "seq": 1, "content": "uno"})).await;
    action_ok(&mut alice_ws, "recall", json!({"conversation": conv, "seq": 2})).await;
    let api = server.server_client("default", Scheme::V2HmacSha256).await;
    let (status, _) = api.call("DELETE", &format!("/v1/server/conversations/{conv}/messages/1"), None).await;
    assert_eq!(status, 200);
    let got = receiver.wait_for(3, Duration::from_secs(20)).await;
    let events: Vec<(String, Value)> = got
        .iter()
        .map(|d| {
            let v: Value = serde_json::from_str(&d.body).unwrap();
            (v["type"].as_str().unwrap().to_string(), v["data"].clone())
        })
        .collect();
    // Deliveries run side by side: found by type, not by order.
    let of = |kind: &str| {
        events.iter().find(|(t, _)| t == kind).map(|(_, d)| d.clone()).unwrap_or_else(|| panic!("no {kind}"))
    };
    let edited = of("message.edited");
    assert_eq!(
        (edited["content"].as_str(), edited["by"].as_str(), edited["seq"].as_i64()),
        (Some("uno"), Some(alice.id.as_str()), Some(1))
    );
    assert_eq!(of("message.recalled")["seq"], 2);
    let deleted = of("message.deleted");
    assert_eq!((deleted["seq"].as_i64(), deleted["by"].clone()), (Some(1), Value::Null), "the app deleted it");
}

async fn the_before_send_hook_sees_edits_and_may_reject_or_modify_them(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let receiver = Receiver::start();
    let (alice, bob, _) = three_users(&server).await;
    let mut alice_ws = server.connect(&alice).await;
    let conv = alice_ws.send_dm(&bob.id, "original", "a1").await["data"]["conversation"].as_str().unwrap().to_string();
    let url = receiver.url("/before-send");
    server
        .configure_app("default", move |s| {
            s.before_send_url = url;
            s.allow_private_targets = true;
        })
        .await;
    receiver.state.lock().unwrap().hook_answer = json!({"action": "reject", "reason": "no edits today"});
    let refused = alice_ws.action("edit", json!({"conversation": conv, "seq": 1, "content": "changed"})).await;
    assert_eq!((error_of(&refused), refused["msg"].as_str()), ((403, "rejected_by_hook"), Some("no edits today")));
    assert_eq!(read_back(&server, &bob, &conv, 1).await["content"], "original", "a rejected edit changes nothing");
    let call = receiver.state.lock().unwrap().hook_calls.last().cloned().unwrap();
    assert_eq!(
        (call["edit_of"].as_i64(), call["client_msg_id"].as_str(), call["content"].as_str()),
        (Some(1), Some("a1"), Some("changed"))
    );

    receiver.state.lock().unwrap().hook_answer = json!({"action": "modify", "content": "changed, politely"});
    action_ok(&mut alice_ws, "edit", json!({"conversation": conv, "seq": 1, "content": "changed"})).await;
    let m = read_back(&server, &bob, &conv, 1).await;
    assert_eq!((m["content"].as_str(), m["edited_at"].is_i64()), (Some("changed, politely"), true));
    // The app's own edits skip the hook.
    let calls = receiver.state.lock().unwrap().hook_calls.len();
    let api = server.server_client("default", Scheme::V2HmacSha256).await;
    let (status, _) = api
        .call("PATCH", &format!("/v1/server/conversations/{conv}/messages/1"), Some(json!({"content": "by the app"})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(receiver.state.lock().unwrap().hook_calls.len(), calls);
}

/// The counts the unread pusher takes for many users at once (more than one statement's worth,
/// padded statements included) are each user's own, as the conversation list reads them alone.
async fn unread_counts_taken_for_many_users_at_once_are_each_ones_own(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let api = server.server_client("default", Scheme::V2HmacSha256).await;
    let ids: Vec<String> = (0..600).map(|i| format!("member-{i}")).collect();
    let mut tokens = Vec::new();
    for id in &ids[..3] {
        let (status, body) = api.call("POST", "/v1/server/users/token", Some(json!({"user_id": id}))).await;
        assert_eq!(status, 200, "{body}");
        tokens.push(body["data"]["token"].as_str().unwrap().to_string());
    }
    for id in &ids[3..] {
        let (status, body) = api.call("POST", "/v1/server/users", Some(json!({"id": id}))).await;
        assert!(status == 200 || status == 201, "{body}");
    }
    let (status, body) = api
        .call("POST", "/v1/server/groups", Some(json!({"name": "Hall", "owner": ids[0], "members": &ids[1..]})))
        .await;
    assert_eq!(status, 201, "{body}");
    let group = body["data"]["id"].as_str().unwrap().to_string();
    let mut owner =
        server.connect(&User { token: tokens[0].clone(), refresh: String::new(), id: ids[0].clone() }).await;
    for n in 1..=4 {
        owner.send_group(&group, &format!("notice {n}"), &format!("n{n}")).await;
    }
    action_ok(&mut owner, "recall", json!({"conversation": group, "seq": 2})).await;
    // Two members read part of it: their counts differ from everyone else's.
    for (token, seq) in [(&tokens[1], 3), (&tokens[2], 4)] {
        let mut ws = server.connect(&User { token: token.clone(), refresh: String::new(), id: "reader".into() }).await;
        action_ok(&mut ws, "read", json!({"conversation": group, "seq": seq})).await;
    }

    let node = server.node();
    let app = natter::domain::AppId::parse("default").unwrap();
    let mut keys = Vec::new();
    for id in &ids {
        let user =
            node.store.user_by_id(&app, &natter::domain::UserId::parse(id.clone()).unwrap()).await.unwrap().unwrap();
        keys.push(user.key);
    }
    let every = node.store.unread_of_users(&app, &keys, None).await.unwrap();
    let count = |key| every.get(&key).and_then(|c| c.get(&group)).map_or(0, |u| u.count);
    // Four messages, the second recalled, all the owner's.
    assert_eq!(count(keys[0]), 0, "the owner's own messages are not unread to them");
    assert_eq!(count(keys[1]), 1, "read up to seq 3 of 4");
    assert_eq!(count(keys[2]), 0, "read everything");
    for (i, key) in keys.iter().enumerate().skip(3) {
        assert_eq!(count(*key), 3, "member {i}");
    }
    for (i, key) in keys.iter().enumerate() {
        let alone = node.store.unread(&app, *key, None).await.unwrap();
        assert_eq!(alone.get(&group).map_or(0, |u| u.count), count(*key), "member {i} counted alone");
    }
    for size in [1, 7, 9, 65, 512, 513] {
        let some = node.store.unread_of_users(&app, &keys[3..3 + size], None).await.unwrap();
        assert_eq!(some.len(), size, "{size} users counted at once");
    }
}

on_both_stores!(
    edits_recalls_deletes_and_reactions_reach_every_device_and_read_back_everywhere,
    every_refusal_has_its_code_and_changes_nothing,
    group_owners_and_admins_recall_and_delete_for_everyone,
    the_conversation_list_counts_others_unread_messages_and_sorts_pinned_first,
    every_device_hears_fresh_unread_counts_after_new_messages_and_removals,
    a_device_that_was_away_learns_the_final_state_of_what_it_held_through_sync,
    rest_and_the_server_api_follow_the_same_rules,
    edits_recalls_and_deletions_reach_the_apps_webhooks,
    the_before_send_hook_sees_edits_and_may_reject_or_modify_them,
    unread_counts_taken_for_many_users_at_once_are_each_ones_own,
);
