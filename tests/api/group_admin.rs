//! Group administration: every role (and the app) against every act of the permission table,
//! allowed or refused with its code and nothing changed; mutes of a member and of a whole group;
//! dissolving (history stays, sends get 410); leaving with the owner's hand-over; the events,
//! webhooks and audit entries every act leaves; bad input on every field.

use crate::common;

use std::time::Duration;

use common::{Backend, Receiver, ServerClient, TestServer, User};
use natter::{auth::server_sig::Scheme, domain::now_millis};
use serde_json::{Value, json};

const MANY_GUESTS: &str = "[default_app]\nguest_signups_per_hour = 1000000";

/// A group owned by `owner` with admins `a1`, `a2` and members `m1`, `m2`, made by the app.
struct Cast {
    owner: User,
    a1: User,
    a2: User,
    m1: User,
    m2: User,
    outsider: User,
}

impl Cast {
    async fn new(server: &TestServer) -> Cast {
        Cast {
            owner: server.guest().await,
            a1: server.guest().await,
            a2: server.guest().await,
            m1: server.guest().await,
            m2: server.guest().await,
            outsider: server.guest().await,
        }
    }

    async fn group(&self, api: &ServerClient) -> String {
        let members = [&self.a1.id, &self.a2.id, &self.m1.id, &self.m2.id];
        let (status, body) = api
            .call(
                "POST",
                "/v1/server/groups",
                Some(json!({"name": "Crew", "owner": self.owner.id, "members": members})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let group = body["data"]["id"].as_str().unwrap().to_string();
        for admin in [&self.a1, &self.a2] {
            let path = format!("/v1/server/groups/{group}/members/{}", admin.id);
            let (status, body) = api.call("PATCH", &path, Some(json!({"role": "admin"}))).await;
            assert_eq!(status, 200, "{body}");
        }
        group
    }
}

/// The group's audit trail, newest first: (action, actor, target user).
async fn audit_of(api: &ServerClient, query: &str) -> Vec<(String, Option<String>, Option<String>)> {
    let (status, body) = api.call("GET", &format!("/v1/server/audit?{query}"), None).await;
    assert_eq!(status, 200, "{body}");
    let text = |v: &Value| v.as_str().map(str::to_string);
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap().to_string(), text(&e["actor"]), text(&e["target_user"])))
        .collect()
}

/// One expected audit entry.
fn entry(action: &str, actor: Option<&User>, target: Option<&User>) -> (String, Option<String>, Option<String>) {
    (action.to_string(), actor.map(|u| u.id.clone()), target.map(|u| u.id.clone()))
}

/// The group as the app sees it.
async fn state(api: &ServerClient, group: &str) -> Value {
    let (status, body) = api.call("GET", &format!("/v1/server/groups/{group}"), None).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

fn role_of<'a>(group: &'a Value, user: &User) -> Option<&'a str> {
    group["members"].as_array().unwrap().iter().find(|m| m["id"] == user.id.as_str()).and_then(|m| m["role"].as_str())
}

fn muted_until(group: &Value, user: &User) -> Option<i64> {
    group["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == user.id.as_str())
        .and_then(|m| m["muted_until"].as_i64())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Owner,
    Admin,
    Member,
    App,
}

#[derive(Debug, Clone, Copy)]
enum Case {
    Update,
    Dissolve,
    Add,
    KickMember,
    KickAdmin,
    KickOwner,
    MuteMember,
    MuteAdmin,
    MuteOwner,
    GrantAdmin,
    RevokeAdmin,
    Transfer,
    Leave,
}

/// Does `case` as `who`; returns the status and error code.
async fn act(
    server: &TestServer,
    api: &ServerClient,
    cast: &Cast,
    group: &str,
    who: Who,
    case: Case,
) -> (u16, Option<String>) {
    let until = now_millis() + 3_600_000;
    let member = |u: &User| format!("members/{}", u.id);
    let (method, sub, body) = match case {
        Case::Update => ("PATCH", String::new(), Some(json!({"name": "Renamed", "announcement": "Be kind"}))),
        Case::Dissolve => ("DELETE", String::new(), None),
        Case::Add => ("POST", "members".into(), Some(json!({"members": [cast.outsider.id]}))),
        Case::KickMember => ("DELETE", member(&cast.m2), None),
        Case::KickAdmin => ("DELETE", member(&cast.a2), None),
        Case::KickOwner => ("DELETE", member(&cast.owner), None),
        Case::MuteMember => ("PATCH", member(&cast.m2), Some(json!({"muted_until": until}))),
        Case::MuteAdmin => ("PATCH", member(&cast.a2), Some(json!({"muted_until": until}))),
        Case::MuteOwner => ("PATCH", member(&cast.owner), Some(json!({"muted_until": until}))),
        Case::GrantAdmin => ("PATCH", member(&cast.m2), Some(json!({"role": "admin"}))),
        Case::RevokeAdmin => ("PATCH", member(&cast.a2), Some(json!({"role": "member"}))),
        Case::Transfer => ("PATCH", member(&cast.m2), Some(json!({"role": "owner"}))),
        Case::Leave => ("POST", "leave".into(), None),
    };
    let path =
        |prefix: &str| if sub.is_empty() { format!("{prefix}/{group}") } else { format!("{prefix}/{group}/{sub}") };
    let (status, reply) = match who {
        Who::App => api.call(method, &path("/v1/server/groups"), body).await,
        Who::Owner => server.call(method, &path("/v1/groups"), Some(&cast.owner.token), body).await,
        Who::Admin => server.call(method, &path("/v1/groups"), Some(&cast.a1.token), body).await,
        Who::Member => server.call(method, &path("/v1/groups"), Some(&cast.m1.token), body).await,
    };
    (status, reply["error"]["code"].as_str().map(str::to_string))
}

/// What an allowed act must have changed.
fn took_effect(case: Case, who: Who, cast: &Cast, before: &Value, after: &Value) -> bool {
    let actor = match who {
        Who::Owner => Some(&cast.owner),
        Who::Admin => Some(&cast.a1),
        Who::Member => Some(&cast.m1),
        Who::App => None,
    };
    match case {
        Case::Update => after["name"] == "Renamed" && after["announcement"] == "Be kind",
        Case::Dissolve => after["dissolved_at"].is_i64(),
        Case::Add => role_of(after, &cast.outsider) == Some("member"),
        Case::KickMember => role_of(after, &cast.m2).is_none(),
        Case::KickAdmin => role_of(after, &cast.a2).is_none(),
        Case::KickOwner => role_of(after, &cast.owner).is_none(),
        Case::MuteMember => muted_until(after, &cast.m2).is_some(),
        Case::MuteAdmin => muted_until(after, &cast.a2).is_some(),
        Case::MuteOwner => muted_until(after, &cast.owner).is_some(),
        Case::GrantAdmin => role_of(after, &cast.m2) == Some("admin"),
        Case::RevokeAdmin => role_of(after, &cast.a2) == Some("member"),
        Case::Transfer => {
            role_of(after, &cast.m2) == Some("owner")
                && role_of(after, &cast.owner) == Some("admin")
                && role_of(before, &cast.owner) == Some("owner")
        }
        Case::Leave => actor.is_some_and(|a| role_of(after, a).is_none()),
    }
}

async fn every_role_and_the_app_are_allowed_and_refused_exactly_as_the_table_says(backend: Backend) {
    let server = TestServer::start_on(backend, MANY_GUESTS);
    let api = server.server_client("default", Scheme::V2HmacSha256).await;
    let cast = Cast::new(&server).await;
    let ok: Option<&str> = None;
    #[rustfmt::skip]
    let table: Vec<(Case, [Option<&str>; 4])> = vec![
        //                       owner                     admin                     member                    app
        (Case::Update,      [ok,                      ok,                       Some("admin_only"),       ok]),
        (Case::Dissolve,    [ok,                      Some("owner_only"),       Some("owner_only"),       ok]),
        (Case::Add,         [ok,                      ok,                       Some("admin_only"),       ok]),
        (Case::KickMember,  [ok,                      ok,                       Some("admin_only"),       ok]),
        (Case::KickAdmin,   [ok,                      Some("outranked"),        Some("admin_only"),       ok]),
        // The owner naming themself leaves (below); nobody else removes the owner.
        (Case::KickOwner,   [ok,                      Some("owner_protected"),  Some("owner_protected"),  Some("owner_protected")]),
        (Case::MuteMember,  [ok,                      ok,                       Some("admin_only"),       ok]),
        (Case::MuteAdmin,   [ok,                      Some("outranked"),        Some("admin_only"),       ok]),
        (Case::MuteOwner,   [Some("owner_protected"), Some("owner_protected"),  Some("owner_protected"),  Some("owner_protected")]),
        (Case::GrantAdmin,  [ok,                      Some("owner_only"),       Some("owner_only"),       ok]),
        (Case::RevokeAdmin, [ok,                      Some("owner_only"),       Some("owner_only"),       ok]),
        (Case::Transfer,    [ok,                      Some("owner_only"),       Some("owner_only"),       ok]),
        (Case::Leave,       [ok,                      ok,                       ok,                       None]),
    ];
    let mut checked = 0;
    for (case, expected) in table {
        for (who, want) in [Who::Owner, Who::Admin, Who::Member, Who::App].into_iter().zip(expected) {
            if who == Who::App && matches!(case, Case::Leave) {
                continue; // the app has no membership; its server API has no leave
            }
            let group = cast.group(&api).await;
            let before = state(&api, &group).await;
            let (status, code) = act(&server, &api, &cast, &group, who, case).await;
            let after = state(&api, &group).await;
            match want {
                None => {
                    assert_eq!(status, 200, "{who:?} {case:?}: {code:?}");
                    assert!(took_effect(case, who, &cast, &before, &after), "{who:?} {case:?} took effect: {after}");
                }
                Some(refused) => {
                    assert_eq!((status, code.as_deref()), (403, Some(refused)), "{who:?} {case:?}");
                    assert_eq!(before, after, "{who:?} {case:?}: a refused act changes nothing");
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 51);
}

async fn muted_members_and_muted_groups_are_refused_but_the_app_is_not(backend: Backend) {
    let server = TestServer::start_on(backend, MANY_GUESTS);
    let api = server.server_client("default", Scheme::V2HmacSha256).await;
    let cast = Cast::new(&server).await;
    let group = cast.group(&api).await;
    let mut owner = server.connect(&cast.owner).await;
    let mut admin = server.connect(&cast.a1).await;
    let mut member = server.connect(&cast.m1).await;

    // One member silenced for a short while: refused, then free again by itself.
    let until = now_millis() + 1_500;
    let reply = owner.action("group.member", json!({"group": group, "member": cast.m1.id, "muted_until": until})).await;
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(reply["data"]["muted_until"], until);
    let refused = member.send_group(&group, "hello?", "m-1").await;
    assert_eq!((refused["code"].as_i64(), refused["error"].as_str()), (Some(403), Some("muted")), "{refused}");
    let (status, body) = api
        .call(
            "POST",
            "/v1/server/messages",
            Some(json!({"from": cast.m1.id, "group": group, "content": "via app", "client_msg_id": "app-1"})),
        )
        .await;
    assert_eq!(status, 201, "the app's sends pass mutes: {body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = member.send_group(&group, "free again", "m-2").await;
        if reply["code"] == 201 {
            break;
        }
        assert_eq!(reply["error"], "muted", "{reply}");
        assert!(std::time::Instant::now() < deadline, "a timed mute ends by itself");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The whole group muted: plain members refused, owner and admins heard, the app too.
    let reply = admin.action("group.update", json!({"group": group, "muted": true})).await;
    assert_eq!((reply["code"].as_i64(), reply["data"]["muted"].as_bool()), (Some(200), Some(true)), "{reply}");
    let event = member.next_event("group.updated").await;
    assert_eq!((event["muted"].as_bool(), event["by"].as_str()), (Some(true), Some(cast.a1.id.as_str())));
    let refused = member.send_group(&group, "anyone?", "m-3").await;
    assert_eq!(refused["error"], "muted", "{refused}");
    assert_eq!(admin.send_group(&group, "admins speak", "a-1").await["code"], 201);
    assert_eq!(owner.send_group(&group, "owner speaks", "o-1").await["code"], 201);
    let (status, _) = api
        .call(
            "POST",
            "/v1/server/messages",
            Some(json!({"group": group, "content": "system", "client_msg_id": "sys-1"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = server
        .call("PATCH", &format!("/v1/groups/{group}"), Some(&cast.owner.token), Some(json!({"muted": false})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(member.send_group(&group, "thanks", "m-4").await["code"], 201);
    // Refused sends stored nothing: the history holds exactly the accepted ones.
    let contents: Vec<String> =
        server.history(&cast.m2, &group).await.iter().map(|m| m["content"].as_str().unwrap().to_string()).collect();
    assert_eq!(contents, ["via app", "free again", "admins speak", "owner speaks", "system", "thanks"]);
}

async fn a_dissolved_group_keeps_its_history_and_refuses_everything_else(backend: Backend) {
    let server = TestServer::start_on(
        backend,
        "[webhooks]\npoll_ms = 50\nretry_schedule_ms = [200]\n[default_app]\nguest_signups_per_hour = 1000000",
    );
    let receiver = Receiver::start();
    server.hook_up(&receiver, &["group.updated", "group.member_updated", "group.dissolved"]).await;
    let api = server.server_client("default", Scheme::V2HmacSha256).await;
    let cast = Cast::new(&server).await;
    let group = cast.group(&api).await;
    let mut owner = server.connect(&cast.owner).await;
    let mut member = server.connect(&cast.m1).await;
    assert_eq!(owner.send_group(&group, "before", "o-1").await["code"], 201);
    member.next_message().await;

    let reply = owner
        .action("group.update", json!({"group": group, "name": "New name", "avatar_url": "https://x.test/g.png"}))
        .await;
    assert_eq!(reply["data"]["name"], "New name", "{reply}");
    let event = member.next_event("group.updated").await;
    assert_eq!(
        (event["name"].as_str(), event["avatar_url"].as_str()),
        (Some("New name"), Some("https://x.test/g.png"))
    );
    let reply = owner.action("group.member", json!({"group": group, "member": cast.m1.id, "role": "admin"})).await;
    assert_eq!(reply["data"]["role"], "admin", "{reply}");
    let event = member.next_event("group.member_updated").await;
    assert_eq!(event["members"][0], json!({"id": cast.m1.id, "role": "admin"}));

    let reply = owner.action("group.dissolve", json!({"group": group})).await;
    assert_eq!(reply["code"], 200, "{reply}");
    let event = member.next_event("group.dissolved").await;
    assert_eq!((event["group"].as_str(), event["by"].as_str()), (Some(group.as_str()), Some(cast.owner.id.as_str())));
    let refused = member.send_group(&group, "after", "m-1").await;
    assert_eq!((refused["code"].as_i64(), refused["error"].as_str()), (Some(410), Some("group_dissolved")));
    let (status, body) = api
        .call("POST", "/v1/server/messages", Some(json!({"group": group, "content": "x", "client_msg_id": "sys"})))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (410, Some("group_dissolved")), "the app too");
    assert_eq!(server.history(&cast.m1, &group).await.len(), 1, "members keep the history");
    let (status, body) = server.get(&format!("/v1/groups/{group}"), Some(&cast.m1.token)).await;
    assert!(status == 200 && body["data"]["dissolved_at"].is_i64(), "{body}");
    for (method, path, body) in [
        ("PATCH", format!("/v1/groups/{group}"), Some(json!({"name": "x"}))),
        ("DELETE", format!("/v1/groups/{group}"), None),
        ("POST", format!("/v1/groups/{group}/members"), Some(json!({"members": [cast.outsider.id]}))),
        ("PATCH", format!("/v1/groups/{group}/members/{}", cast.m2.id), Some(json!({"role": "admin"}))),
        ("DELETE", format!("/v1/groups/{group}/members/{}", cast.m2.id), None),
    ] {
        let (status, reply) = server.call(method, &path, Some(&cast.owner.token), body).await;
        assert_eq!((status, reply["error"]["code"].as_str()), (410, Some("group_dissolved")), "{method} {path}");
    }
    // Its messages stay as they were, and the list shows the end.
    let edit = member.action("edit", json!({"conversation": group, "seq": 1, "content": "x"})).await;
    assert_eq!(edit["error"], "group_dissolved", "{edit}");
    let react = owner.action("react", json!({"conversation": group, "seq": 1, "key": "👍", "on": true})).await;
    assert_eq!(react["error"], "group_dissolved", "{react}");
    let hide = member.action("delete", json!({"conversation": group, "seq": 1, "scope": "me"})).await;
    assert_eq!(hide["code"], 200, "hiding a message for oneself still works: {hide}");
    let (_, list) = server.get("/v1/conversations", Some(&cast.m2.token)).await;
    assert!(list["data"][0]["dissolved_at"].is_i64(), "{list}");
    let (status, _) = server.post(&format!("/v1/groups/{group}/leave"), Some(&cast.m2.token), json!({})).await;
    assert_eq!(status, 200, "leaving a dissolved group still works");

    // The app made two admins (two member updates) before the owner's three acts.
    let got = receiver.wait_for(5, Duration::from_secs(20)).await;
    let mut kinds: Vec<String> = got
        .iter()
        .map(|d| serde_json::from_str::<Value>(&d.body).unwrap()["type"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["group.dissolved", "group.member_updated", "group.member_updated", "group.member_updated", "group.updated"]
    );
}

async fn an_owner_leaving_hands_the_group_to_the_oldest_admin_else_the_oldest_member(backend: Backend) {
    let server = TestServer::start_on(backend, MANY_GUESTS);
    let api = server.server_client("default", Scheme::V2HmacSha256).await;
    let (owner, first, second, late_admin) =
        (server.guest().await, server.guest().await, server.guest().await, server.guest().await);
    let group = server.group(&owner, &[&first, &second]).await;
    let (status, _) = server
        .post(&format!("/v1/groups/{group}/members"), Some(&owner.token), json!({"members": [late_admin.id]}))
        .await;
    assert_eq!(status, 200);
    let path = format!("/v1/groups/{group}/members/{}", late_admin.id);
    assert_eq!(server.call("PATCH", &path, Some(&owner.token), Some(json!({"role": "admin"}))).await.0, 200);
    let mut first_ws = server.connect(&first).await;
    first_ws.settle().await;

    let (status, body) = server.post(&format!("/v1/groups/{group}/leave"), Some(&owner.token), json!({})).await;
    assert_eq!((status, body["data"]["new_owner"].as_str()), (200, Some(late_admin.id.as_str())), "{body}");
    let event = first_ws.next_event("group.member_updated").await;
    assert_eq!(event["members"][0], json!({"id": late_admin.id, "role": "owner"}));
    let event = first_ws.next_event("group.member_removed").await;
    assert_eq!(event["members"][0], owner.id.as_str());
    // No admin left: the longest-standing member.
    let (_, body) = server.post(&format!("/v1/groups/{group}/leave"), Some(&late_admin.token), json!({})).await;
    assert_eq!(body["data"]["new_owner"], first.id.as_str());
    let (_, body) = server.post(&format!("/v1/groups/{group}/leave"), Some(&second.token), json!({})).await;
    assert_eq!(body["data"]["new_owner"], Value::Null, "a plain member hands nothing over");
    // The last one out ends the group.
    let (_, body) = server.post(&format!("/v1/groups/{group}/leave"), Some(&first.token), json!({})).await;
    assert_eq!(body["data"]["new_owner"], Value::Null);
    let group_now = state(&api, &group).await;
    assert!(group_now["dissolved_at"].is_i64() && group_now["members"].as_array().unwrap().is_empty(), "{group_now}");
    assert_eq!(
        audit_of(&api, &format!("group={group}")).await,
        [
            entry("group.dissolved", Some(&first), None),
            entry("group.owner_transferred", Some(&late_admin), Some(&first)),
            entry("group.owner_transferred", Some(&owner), Some(&late_admin)),
            entry("group.role_changed", Some(&owner), Some(&late_admin)),
        ],
        "newest first"
    );
}

async fn every_moderation_act_is_in_the_audit_trail_with_its_actor(backend: Backend) {
    let server = TestServer::start_on(backend, MANY_GUESTS);
    let api = server.server_client("default", Scheme::V2HmacSha256).await;
    let cast = Cast::new(&server).await;
    let group = cast.group(&api).await;
    let until = now_millis() + 60_000;
    let member = |u: &User| format!("/v1/groups/{group}/members/{}", u.id);
    assert_eq!(
        server.call("PATCH", &member(&cast.m1), Some(&cast.a1.token), Some(json!({"muted_until": until}))).await.0,
        200
    );
    assert_eq!(
        server.call("PATCH", &member(&cast.m1), Some(&cast.a1.token), Some(json!({"muted_until": null}))).await.0,
        200
    );
    assert_eq!(server.call("DELETE", &member(&cast.m2), Some(&cast.a1.token), None).await.0, 200);
    assert_eq!(
        server.call("PATCH", &member(&cast.a2), Some(&cast.owner.token), Some(json!({"role": "member"}))).await.0,
        200
    );
    assert_eq!(
        server
            .call("PATCH", &format!("/v1/groups/{group}"), Some(&cast.a1.token), Some(json!({"announcement": "hi"})))
            .await
            .0,
        200
    );
    // A refused act leaves no entry.
    assert_eq!(server.call("DELETE", &member(&cast.a1), Some(&cast.m1.token), None).await.0, 403);
    assert_eq!(api.call("DELETE", &format!("/v1/server/groups/{group}"), None).await.0, 200);

    let (owner, a1) = (Some(&cast.owner), Some(&cast.a1));
    assert_eq!(
        audit_of(&api, &format!("group={group}")).await,
        [
            entry("group.dissolved", None, None),
            entry("group.updated", a1, None),
            entry("group.role_changed", owner, Some(&cast.a2)),
            entry("group.member_kicked", a1, Some(&cast.m2)),
            entry("group.member_unmuted", a1, Some(&cast.m1)),
            entry("group.member_muted", a1, Some(&cast.m1)),
            entry("group.role_changed", None, Some(&cast.a2)),
            entry("group.role_changed", None, Some(&cast.a1)),
        ]
    );
    assert_eq!(audit_of(&api, &format!("user={}", cast.m1.id)).await.len(), 2, "found by target user too");
}

async fn bad_group_requests_get_their_codes_and_change_nothing(backend: Backend) {
    let server = TestServer::start_on(backend, MANY_GUESTS);
    let api = server.server_client("default", Scheme::V2HmacSha256).await;
    let cast = Cast::new(&server).await;
    let group = cast.group(&api).await;
    let before = state(&api, &group).await;
    let owner = Some(cast.owner.token.as_str());
    let g = format!("/v1/groups/{group}");
    let m1 = format!("/v1/groups/{group}/members/{}", cast.m1.id);
    type BadCall<'a> = (&'a str, String, Option<&'a str>, Option<Value>, u16, &'a str);
    let cases: Vec<BadCall> = vec![
        ("PATCH", "/v1/groups/nope".into(), owner, Some(json!({"name": "x"})), 404, "group_not_found"),
        ("PATCH", g.clone(), Some(cast.outsider.token.as_str()), Some(json!({"name": "x"})), 404, "group_not_found"),
        ("PATCH", g.clone(), owner, Some(json!({})), 400, "validation_failed"),
        ("PATCH", g.clone(), owner, Some(json!({"name": ""})), 400, "validation_failed"),
        ("PATCH", g.clone(), owner, Some(json!({"name": "a\u{202e}b"})), 400, "validation_failed"),
        ("PATCH", g.clone(), owner, Some(json!({"avatar_url": "javascript:alert(1)"})), 400, "validation_failed"),
        ("PATCH", g.clone(), owner, Some(json!({"announcement": "a\u{0}b"})), 400, "validation_failed"),
        ("PATCH", g.clone(), owner, Some(json!({"announcement": "x".repeat(4097)})), 400, "validation_failed"),
        ("PATCH", g.clone(), owner, Some(json!({"muted": "yes"})), 400, "validation_failed"),
        ("PATCH", g.clone(), owner, Some(json!({"name": "x", "owner": "me"})), 400, "validation_failed"),
        ("PATCH", m1.clone(), owner, Some(json!({"role": "king"})), 400, "validation_failed"),
        ("PATCH", m1.clone(), owner, Some(json!({"muted_until": 5})), 400, "validation_failed"),
        ("PATCH", m1.clone(), owner, Some(json!({"muted_until": "soon"})), 400, "validation_failed"),
        ("PATCH", m1.clone(), owner, Some(json!({})), 400, "validation_failed"),
        ("PATCH", format!("{g}/members/ghost"), owner, Some(json!({"role": "admin"})), 404, "user_not_found"),
        (
            "PATCH",
            format!("{g}/members/{}", cast.outsider.id),
            owner,
            Some(json!({"role": "admin"})),
            403,
            "not_a_member",
        ),
        ("DELETE", format!("{g}/members/ghost"), owner, None, 404, "user_not_found"),
        ("DELETE", format!("{g}/members/{}", cast.outsider.id), owner, None, 403, "not_a_member"),
        ("DELETE", format!("{g}/members/bad%20id"), owner, None, 400, "validation_failed"),
        ("POST", format!("{g}/members"), owner, Some(json!({"members": ["ghost"]})), 404, "user_not_found"),
        ("POST", "/v1/groups/nope/leave".into(), owner, None, 404, "group_not_found"),
        ("DELETE", "/v1/groups/nope".into(), owner, None, 404, "group_not_found"),
    ];
    for (method, path, token, body, status, code) in cases {
        let (got, reply) = server.call(method, &path, token, body.clone()).await;
        assert_eq!((got, reply["error"]["code"].as_str()), (status, Some(code)), "{method} {path} {body:?}: {reply}");
    }
    for (method, path, body, status, code) in [
        ("PATCH", "/v1/server/groups/nope".to_string(), Some(json!({"name": "x"})), 404, "group_not_found"),
        ("GET", "/v1/server/groups/nope".to_string(), None, 404, "group_not_found"),
        (
            "PATCH",
            format!("/v1/server/groups/{group}/members/ghost"),
            Some(json!({"role": "admin"})),
            404,
            "user_not_found",
        ),
        ("PATCH", format!("/v1/server/groups/{group}"), Some(json!({"muted": 1})), 400, "validation_failed"),
    ] {
        let (got, reply) = api.call(method, &path, body).await;
        assert_eq!((got, reply["error"]["code"].as_str()), (status, Some(code)), "{method} {path}: {reply}");
    }
    assert_eq!(state(&api, &group).await, before, "nothing changed");
    // What was accepted reads back the same through the member's view and the app's.
    let announcement = "Rules:\n1. be kind\t🙂 <b>not html</b>";
    let (status, _) = server.call("PATCH", &g, owner, Some(json!({"announcement": announcement}))).await;
    assert_eq!(status, 200);
    let (_, mine) = server.get(&g, Some(&cast.m1.token)).await;
    assert_eq!(mine["data"]["announcement"], announcement);
    assert_eq!(state(&api, &group).await["announcement"], announcement);
    let (status, _) = server.call("PATCH", &g, owner, Some(json!({"announcement": null}))).await;
    assert_eq!(status, 200);
    assert_eq!(state(&api, &group).await["announcement"], Value::Null, "null removes it");
}

on_both_stores!(
    every_role_and_the_app_are_allowed_and_refused_exactly_as_the_table_says,
    muted_members_and_muted_groups_are_refused_but_the_app_is_not,
    a_dissolved_group_keeps_its_history_and_refuses_everything_else,
    an_owner_leaving_hands_the_group_to_the_oldest_admin_else_the_oldest_member,
    every_moderation_act_is_in_the_audit_trail_with_its_actor,
    bad_group_requests_get_their_codes_and_change_nothing,
);
