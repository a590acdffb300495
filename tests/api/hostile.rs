//! A hostile client and a newcomer's mistakes at the edges: spoofed forwarding headers,
//! registration floods, frames that do not parse, RFC 6455 violations, look-alike emails and
//! requests HTTP itself refuses. Each is answered with a documented code and hurts nobody else.

use crate::common;

use std::time::Duration;

use common::{TestServer, WAIT, close_code, raw_socket};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::Message;

async fn guest_via(server: &TestServer, header: (&str, &str)) -> u16 {
    reqwest::Client::new()
        .post(server.url("/v1/auth/guest"))
        .header(header.0, header.1)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_client_cannot_pick_its_own_rate_limit_address() {
    // The test client is the proxy (127.0.0.1); nginx appends the address it saw to whatever
    // X-Forwarded-For the client sent.
    let server = TestServer::start_with(
        "[http]\ntrusted_proxies = [\"127.0.0.0/8\"]\n[default_app]\nguest_signups_per_hour = 3",
    );
    let mut created = 0;
    for i in 0..20 {
        let spoofed = format!("203.0.113.{i}, 198.51.100.7");
        if guest_via(&server, ("x-forwarded-for", &spoofed)).await == 201 {
            created += 1;
        }
    }
    assert_eq!(created, 3, "20 sign-ups from 198.51.100.7 with 20 made-up first hops");
    assert_eq!(guest_via(&server, ("x-forwarded-for", "198.51.100.8")).await, 201, "another client is not affected");
    // A chain of trusted proxies: the right-most address that is not one of them counts.
    assert_eq!(guest_via(&server, ("x-forwarded-for", "6.6.6.6, 198.51.100.7, 127.0.0.9")).await, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc_7239_forwarded_is_read_when_the_proxies_write_it() {
    let server = TestServer::start_with(
        "[http]\ntrusted_proxies = [\"127.0.0.1\"]\nclient_ip_header = \"forwarded\"\n[default_app]\nguest_signups_per_hour = 2",
    );
    let mut created = 0;
    for i in 0..6 {
        let spoofed = format!("for=203.0.113.{i}, for=\"[2001:db8::7]:4711\";proto=https");
        if guest_via(&server, ("forwarded", &spoofed)).await == 201 {
            created += 1;
        }
    }
    assert_eq!(created, 2);
    // X-Forwarded-For is the client's word here: it changes nothing.
    assert_eq!(guest_via(&server, ("x-forwarded-for", "198.51.100.9")).await, 201, "peer 127.0.0.1 itself");
    assert_eq!(guest_via(&server, ("x-forwarded-for", "198.51.100.10")).await, 201);
    assert_eq!(guest_via(&server, ("x-forwarded-for", "198.51.100.11")).await, 429, "same peer, limit reached");
}

#[tokio::test]
async fn trusted_proxies_must_be_addresses_or_networks() {
    let err = natter::config::Config::from_toml("[http]\ntrusted_proxies = [\"10.0.0.0/33\"]").unwrap_err();
    assert!(format!("{err:#}").contains("10.0.0.0/33"), "{err:#}");
    let ok =
        natter::config::Config::from_toml("[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"fd00::/8\", \"192.0.2.1\"]");
    assert!(ok.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_limited_per_address_over_rest_and_websocket() {
    let server = TestServer::start_with("[default_app]\nregistrations_per_hour = 3");
    let body = |i: usize| json!({"email": format!("u{i}@example.com"), "password": "correct horse battery", "first_name": "U", "last_name": "N"});
    for i in 0..3 {
        assert_eq!(server.post("/v1/auth/register", None, body(i)).await.0, 201);
    }
    let (status, refused) = server.post("/v1/auth/register", None, body(3)).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (429, Some("rate_limited")), "{refused}");
    let mut ws = common::Ws::connect(&server.ws_url(), None).await;
    let reply = ws.action("register", body(4)).await;
    assert_eq!((reply["code"].as_u64(), reply["error"].as_str()), (Some(429), Some("rate_limited")), "{reply}");
    // Logging in is a separate limit.
    let (status, _) = server
        .post("/v1/auth/login", None, json!({"email": "u0@example.com", "password": "correct horse battery"}))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_flood_is_refused_quickly_while_logins_keep_working() {
    let server = TestServer::start_with(
        "[auth]\npassword_hash_concurrency = 1\npassword_hash_queue = 2\n[default_app]\nregistrations_per_hour = 100000",
    );
    server.register("ada@example.com").await;
    let addr = server.addr;
    let flood: Vec<_> = (0..40)
        .map(|i| {
            tokio::spawn(async move {
                let body = json!({"email": format!("f{i}@example.com"), "password": "correct horse battery", "first_name": "F", "last_name": "L"});
                common::post_to(addr, "/v1/auth/register", None, body).await
            })
        })
        .collect();
    let login = json!({"email": "ada@example.com", "password": "correct horse battery"});
    let (status, body) = server.post("/v1/auth/login", None, login).await;
    assert_eq!(status, 200, "the login has its own queue: {body}");
    let mut refused = 0;
    for f in flood {
        let (status, body) = f.await.unwrap();
        if status == 429 {
            assert_eq!(body["error"]["code"], "rate_limited");
            refused += 1;
        } else {
            assert_eq!(status, 201, "{body}");
        }
    }
    println!("40 concurrent registrations on 1 hashing slot with a queue of 2: {refused} refused with 429 at once");
    assert!(refused > 0);
}

/// Every frame a client sends counts, parse or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_do_not_parse_count_against_the_limit_too() {
    let server = TestServer::start_with("[ws]\nmessages_per_second = 5\nmessage_burst = 10");
    let alice = server.register("alice@example.com").await;
    for junk in [Message::text("{not json"), Message::binary(vec![1u8, 2, 3])] {
        let mut ws = server.connect(&alice).await;
        for _ in 0..600 {
            if ws.send_frame(junk.clone()).await.is_err() {
                break;
            }
        }
        // Reads until the server closes (or stays quiet for 2 s).
        ws.pump(Duration::from_secs(2)).await;
        let mut limited = 0;
        while let Some(v) = ws.try_pending() {
            if v["error"] == "rate_limited" {
                limited += 1;
            }
        }
        let code = Some(ws.closed().await);
        println!("600 frames of {junk:?}: {limited} answered 429, closed with {code:?}");
        assert!(limited > 0, "some were answered 429");
        assert_eq!(code, Some(Some(4003)));
    }
}

fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc_6455_violations_close_with_1002_and_invalid_utf8_with_1007() {
    let server = TestServer::start();
    let alice = server.register("alice@example.com").await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("RSV1 set", masked(0x80 | 0x40 | 0x1, b"{}"), 1002),
        ("reserved data opcode 0x3", masked(0x80 | 0x3, b"x"), 1002),
        ("reserved control opcode 0xB", masked(0x80 | 0xB, b""), 1002),
        ("ping of 126 bytes", masked(0x80 | 0x9, &[b'p'; 126]), 1002),
        ("fragmented ping", masked(0x9, b"p"), 1002),
        ("continuation without a start", masked(0x80, b"x"), 1002),
        ("new text inside a fragmented one", [masked(0x1, b"{"), masked(0x81, b"{}")].concat(), 1002),
        ("close code 1005 on the wire", masked(0x88, &1005u16.to_be_bytes()), 1002),
        ("close code 999", masked(0x88, &999u16.to_be_bytes()), 1002),
        ("close reason not UTF-8", masked(0x88, &[0x03, 0xE8, 0xC3, 0x28]), 1002),
        ("close payload of 1 byte", masked(0x88, &[0x03]), 1002),
        ("unmasked frame", vec![0x81, 0x02, b'{', b'}'], 1002),
        ("text not UTF-8", masked(0x81, &[0xC3, 0x28]), 1007),
        ("fragmented text not UTF-8", [masked(0x1, &[0xE2, 0x82]), masked(0x80, &[0x28])].concat(), 1007),
    ];
    for (what, bytes, expected) in cases {
        let mut io = raw_socket(&server, &alice.token).await;
        io.write_all(&bytes).await.unwrap();
        let code = close_code(&mut io).await;
        assert_eq!(code, Some(expected), "{what}");
    }
    // Empty continuation frames never grow a message, but they cannot go on forever either.
    let mut io = raw_socket(&server, &alice.token).await;
    let mut flood = masked(0x1, b"{");
    for _ in 0..2000 {
        flood.extend(masked(0x0, b""));
    }
    io.write_all(&flood).await.unwrap();
    assert_eq!(close_code(&mut io).await, Some(1009), "2,000 fragments of one message");
    // A message in a few fragments is fine.
    let mut io = raw_socket(&server, &alice.token).await;
    let frames =
        [masked(0x1, br#"{"type":"action","#), masked(0x0, br#""action":"ping","#), masked(0x80, br#""id":1}"#)]
            .concat();
    io.write_all(&frames).await.unwrap();
    let mut head = [0u8; 2];
    tokio::time::timeout(WAIT, io.read_exact(&mut head)).await.unwrap().unwrap();
    let mut reply = vec![0u8; (head[1] & 0x7F) as usize];
    io.read_exact(&mut reply).await.unwrap();
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["msg"], "pong", "{reply}");
    // A valid close is answered with the same code.
    let mut io = raw_socket(&server, &alice.token).await;
    io.write_all(&masked(0x88, &1000u16.to_be_bytes())).await.unwrap();
    assert_eq!(close_code(&mut io).await, Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_emails_are_the_same_account_or_refused() {
    let server = TestServer::start();
    server.register("alice@example.com").await;
    let body =
        |email: &str| json!({"email": email, "password": "correct horse battery", "first_name": "A", "last_name": "B"});
    let (status, taken) = server.post("/v1/auth/register", None, body("ａｌｉｃｅ@example.com")).await;
    assert_eq!((status, taken["error"]["code"].as_str()), (409, Some("email_taken")), "fullwidth folds onto alice");
    let (status, taken) = server.post("/v1/auth/register", None, body("ALICE@EXAMPLE.COM")).await;
    assert_eq!((status, taken["error"]["code"].as_str()), (409, Some("email_taken")));
    for hidden in ["ali\u{200B}ce@example.com", "alice\u{2060}@example.com", "\u{FEFF}alice@example.com"] {
        let (status, refused) = server.post("/v1/auth/register", None, body(hidden)).await;
        assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("validation_failed")), "{hidden:?}");
    }
    let (status, _) = server
        .post("/v1/auth/login", None, json!({"email": "ａｌｉｃｅ@example.com", "password": "correct horse battery"}))
        .await;
    assert_eq!(status, 200, "the fullwidth spelling logs in to the same account");
}

async fn raw_http(server: &TestServer, request: &[u8]) -> (u16, Value) {
    let mut io = TcpStream::connect(server.addr).await.unwrap();
    io.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, io.read_to_end(&mut out)).await.expect("answer");
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_http_itself_refuses_get_the_json_error_body() {
    let server = TestServer::start();
    let (status, body) = raw_http(&server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nBroken header line\r\n\r\n").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("malformed_request")), "{body}");
    let (status, body) = raw_http(&server, b"NOT-HTTP\r\n\r\n").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("malformed_request")));
    let big = [b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".as_slice(), &[b'a'; 300_000], b"\r\n\r\n"].concat();
    let (status, body) = raw_http(&server, &big).await;
    assert_eq!((status, body["error"]["code"].as_str()), (431, Some("headers_too_large")), "{body}");
    // The node is fine afterwards.
    assert_eq!(server.get("/healthz", None).await.0, 200);
}
