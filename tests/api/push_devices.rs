//! Devices for push through the server API: an app's server sees and removes its users' devices
//! (never another app's), and revoking a user's tokens removes every device they had.

use natter::auth::server_sig::Scheme;
use serde_json::{Value, json};

use crate::common::{Backend, TestServer};

async fn token(api: &crate::common::ServerClient, user: &str) -> String {
    let (status, body) = api.call("POST", "/v1/server/users/token", Some(json!({"user_id": user}))).await;
    assert_eq!(status, 200, "{body}");
    body["data"]["token"].as_str().unwrap().to_string()
}

async fn the_app_server_sees_and_removes_its_users_devices_and_only_its_own(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let shop = server.server_client("default", Scheme::V2HmacSha256).await;
    let other = server.server_client("other", Scheme::V2HmacSha256).await;
    let alice = token(&shop, "alice").await;
    token(&other, "alice").await;
    let (status, phone) =
        server.post("/v1/me/devices", Some(&alice), json!({"platform": "fcm", "token": "alice-phone"})).await;
    assert_eq!(status, 201, "{phone}");
    server.post("/v1/me/devices", Some(&alice), json!({"platform": "apns", "token": "cd".repeat(32)})).await;

    let (status, listed) = shop.call("GET", "/v1/server/users/alice/devices", None).await;
    assert_eq!(status, 200, "{listed}");
    let tokens: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|d| d["token"].as_str().unwrap()).collect();
    assert_eq!(tokens, vec!["alice-phone", &"cd".repeat(32)]);
    let (_, theirs) = other.call("GET", "/v1/server/users/alice/devices", None).await;
    assert_eq!(theirs["data"], json!([]), "another app's alice has none: {theirs}");
    let id = phone["data"]["id"].as_str().unwrap();
    let path = format!("/v1/server/users/alice/devices/{id}");
    assert_eq!(other.call("DELETE", &path, None).await.0, 404, "another app cannot remove it");
    let (status, removed) = shop.call("DELETE", &path, None).await;
    assert_eq!((status, &removed["data"]), (200, &json!({"id": id, "removed": true})));
    assert_eq!(shop.call("DELETE", &path, None).await.1["error"]["code"], "device_not_found");
    assert_eq!(shop.call("GET", "/v1/server/users/nobody/devices", None).await.0, 404);
    for odd in ["dev_%00", "%00", "dev_0123456789abcdef0123456789abcdeg", &"x".repeat(300)] {
        let (status, body) = shop.call("DELETE", &format!("/v1/server/users/alice/devices/{odd}"), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("device_not_found")), "{odd}: {body}");
        let (status, body) = server.delete(&format!("/v1/me/devices/{odd}"), &alice).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("device_not_found")), "{odd}: {body}");
    }

    // Signed out everywhere: no device is theirs to wake any more.
    assert_eq!(shop.call("POST", "/v1/server/users/alice/revoke-tokens", Some(json!({}))).await.0, 200);
    let (_, after) = shop.call("GET", "/v1/server/users/alice/devices", None).await;
    assert_eq!(after["data"], Value::Array(Vec::new()), "{after}");
}

async fn a_user_keeps_their_ten_newest_devices(backend: Backend) {
    let server = TestServer::start_on(backend, "");
    let shop = server.server_client("default", Scheme::V2HmacSha256).await;
    let bob = token(&shop, "bob").await;
    let register = |n: usize| {
        let (server, bob) = (&server, &bob);
        async move {
            let device = json!({"platform": "fcm", "token": format!("phone-{n}")});
            let (status, body) = server.post("/v1/me/devices", Some(bob), device).await;
            assert_eq!(status, 201, "{body}");
        }
    };
    for n in 0..10 {
        register(n).await;
    }
    // Renewing the oldest makes it the newest; the eleventh then removes phone-1.
    register(0).await;
    register(10).await;
    let (_, listed) = server.get("/v1/me/devices", Some(&bob)).await;
    let mut tokens: Vec<String> =
        listed["data"].as_array().unwrap().iter().map(|d| d["token"].as_str().unwrap().to_string()).collect();
    tokens.sort();
    let mut expected: Vec<String> = [0, 2, 3, 4, 5, 6, 7, 8, 9, 10].iter().map(|n| format!("phone-{n}")).collect();
    expected.sort();
    assert_eq!(tokens, expected);
}

on_both_stores!(
    the_app_server_sees_and_removes_its_users_devices_and_only_its_own,
    a_user_keeps_their_ten_newest_devices
);
