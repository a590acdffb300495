//! The WebSocket transport under the session actor: handshakes, frames split across reads,
//! fragments, control frames and the close handshake, spoken byte by byte where it matters.

use crate::common;

use std::time::Duration;

use common::{TestServer, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::{
        CloseFrame,
        frame::{Frame, coding::CloseCode},
    },
};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn handshake(path: &str, version: &str, token: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: {KEY}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
}

/// Reads an HTTP response head (and, with a content-length, its body) from a raw socket.
async fn read_response(io: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, io.read(&mut byte)).await.expect("response timeout").expect("read");
        assert_eq!(n, 1, "connection closed before the response head ended: {:?}", String::from_utf8_lossy(&buf));
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).expect("ascii head");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0usize);
    let mut body = vec![0u8; length];
    tokio::time::timeout(WAIT, io.read_exact(&mut body)).await.expect("body timeout").expect("body");
    (status, head, body)
}

/// A masked client frame.
fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads one unfragmented server frame: (opcode, payload).
async fn server_frame(io: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    tokio::time::timeout(WAIT, io.read_exact(&mut head)).await.expect("frame timeout").expect("frame head");
    assert_eq!(head[0] & 0x80, 0x80, "server frames are final");
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let len = match head[1] & 0x7F {
        126 => io.read_u16().await.expect("len16") as usize,
        127 => io.read_u64().await.expect("len64") as usize,
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await.expect("payload");
    (head[0] & 0x0F, payload)
}

#[tokio::test]
async fn upgrades_to_other_paths_and_broken_handshakes_get_json_errors() {
    let server = TestServer::start();
    let alice = server.register("alice@example.com").await;

    let mut io = TcpStream::connect(server.addr).await.unwrap();
    io.write_all(handshake("/elsewhere", "13", &alice.token).as_bytes()).await.unwrap();
    let (status, _, body) = read_response(&mut io).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");

    let mut io = TcpStream::connect(server.addr).await.unwrap();
    io.write_all(handshake("/ws", "8", &alice.token).as_bytes()).await.unwrap();
    let (status, _, body) = read_response(&mut io).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("validation_failed")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("version"), "{body}");

    let (status, body) = server.get("/ws", Some(&alice.token)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("validation_failed")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("Upgrade: websocket"), "{body}");
}

#[tokio::test]
async fn a_frame_written_one_byte_at_a_time_is_read_whole() {
    let server = TestServer::start();
    let alice = server.register("alice@example.com").await;
    let mut io = TcpStream::connect(server.addr).await.unwrap();
    io.set_nodelay(true).unwrap();
    io.write_all(handshake("/ws", "13", &alice.token).as_bytes()).await.unwrap();
    let (status, head, _) = read_response(&mut io).await;
    assert_eq!(status, 101, "{head}");
    // RFC 6455's sample key and its accept value.
    assert!(head.to_ascii_lowercase().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");

    // 300 bytes: the 16-bit length form, itself split across reads.
    let ping = json!({"type": "action", "action": "ping", "id": 7, "data": {"pad": "p".repeat(240)}}).to_string();
    for byte in client_frame(0x1, true, ping.as_bytes()) {
        io.write_all(&[byte]).await.unwrap();
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let (opcode, payload) = server_frame(&mut io).await;
    let reply: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!((opcode, reply["id"].as_i64(), reply["msg"].as_str()), (0x1, Some(7), Some("pong")), "{reply}");

    // Two whole frames in one write are both answered, in order.
    let mut both = client_frame(0x1, true, br#"{"type":"action","action":"ping","id":8}"#);
    both.extend(client_frame(0x1, true, br#"{"type":"action","action":"ping","id":9}"#));
    io.write_all(&both).await.unwrap();
    for id in [8, 9] {
        let (_, payload) = server_frame(&mut io).await;
        assert_eq!(serde_json::from_slice::<Value>(&payload).unwrap()["id"], id);
    }
}

#[tokio::test]
async fn fragments_pings_and_a_client_close_are_answered() {
    let server = TestServer::start();
    let alice = server.register("alice@example.com").await;
    let request = format!("ws://{}/ws?token={}", server.addr, alice.token);
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await.unwrap().unwrap();

    let text = br#"{"type":"action","action":"ping","id":"frag"}"#;
    let (first, rest) = text.split_at(10);
    let (middle, last) = rest.split_at(10);
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    ws.send(Message::Frame(Frame::message(first.to_vec(), OpCode::Data(Data::Text), false))).await.unwrap();
    // A ping between fragments is answered at once, as RFC 6455 allows.
    ws.send(Message::Ping(b"between".to_vec().into())).await.unwrap();
    ws.send(Message::Frame(Frame::message(middle.to_vec(), OpCode::Data(Data::Continue), false))).await.unwrap();
    ws.send(Message::Frame(Frame::message(last.to_vec(), OpCode::Data(Data::Continue), true))).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap() {
            Message::Pong(p) => seen.push(format!("pong {}", String::from_utf8_lossy(&p))),
            Message::Text(t) => seen.push(serde_json::from_str::<Value>(&t).unwrap()["id"].as_str().unwrap().into()),
            _ => {}
        }
    }
    assert_eq!(seen, ["pong between", "frag"]);

    ws.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() }))).await.unwrap();
    let echoed = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            other => panic!("expected the close echoed, got {other:?}"),
        }
    };
    assert_eq!(echoed, Some(1000));
    // Then the server closes the TCP connection.
    let end = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    assert!(matches!(end, None | Some(Err(_))), "{end:?}");
}

/// A node that holds all the connections it may says so: 503 `unavailable` with `Retry-After`,
/// before the upgrade; a socket waiting for its login frame counts as open, and room made by a
/// close is room again.
#[tokio::test]
async fn a_full_node_refuses_connects_with_503_and_retry_after_until_someone_leaves() {
    let server = TestServer::start_with("[ws]\nmax_connections = 2\n");
    let alice = server.register("full-alice@example.com").await;
    let mut first = common::Ws::connect(&server.ws_url(), Some(&alice.token)).await;
    first.action("ping", json!({})).await;
    // No token: waiting for a login frame still holds a socket.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(
        format!(
            "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(read_response(&mut idle).await.0, 101);

    let mut io = TcpStream::connect(server.addr).await.unwrap();
    io.write_all(handshake("/ws", "13", &alice.token).as_bytes()).await.unwrap();
    let (status, head, body) = read_response(&mut io).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")), "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after: 5\r\n"), "{head}");

    drop(idle);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut io = TcpStream::connect(server.addr).await.unwrap();
        io.write_all(handshake("/ws", "13", &alice.token).as_bytes()).await.unwrap();
        match read_response(&mut io).await.0 {
            101 => break,
            503 => assert!(tokio::time::Instant::now() < deadline, "the closed socket's room never came back"),
            other => panic!("unexpected {other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(first.action("ping", json!({})).await["code"], 200, "those inside are unaffected");
}
