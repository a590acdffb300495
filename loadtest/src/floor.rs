//! The floor: the least a WebSocket server can do to answer the harness's frames the way Natter
//! does (a reply with a seq, a push to every other member), with no auth and no storage. Natter's
//! figures are read as ratios against it, measured by the same client in the same run.
//!
//! The user and its groups come from the URL (`/ws?user=u1&groups=g1,g2`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

type Outbox = mpsc::UnboundedSender<Utf8Bytes>;

#[derive(Default)]
struct Rooms {
    next_conn: u64,
    /// group → (connection, its outbox)
    groups: HashMap<String, Vec<(u64, Outbox)>>,
    users: HashMap<String, Vec<(u64, Outbox)>>,
    seqs: HashMap<String, u64>,
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: serde_json::Value,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    data: Option<MessageData>,
}

#[derive(Deserialize)]
struct MessageData {
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    recipient: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    client_msg_id: Option<String>,
}

pub async fn serve(bind: SocketAddr, announce: bool) -> anyhow::Result<()> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    if announce {
        // The suite and the tests read the address from this line.
        println!("{}", json!({"floor": addr.to_string()}));
    }
    eprintln!("floor listening on ws://{addr}/ws");
    let rooms = Arc::new(Mutex::new(Rooms::default()));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: keep serving the connections already held.
                eprintln!("floor: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let rooms = rooms.clone();
        tokio::spawn(async move {
            let _ = session(stream, rooms).await;
        });
    }
}

fn query_of(uri: &str) -> HashMap<String, String> {
    uri.split_once('?')
        .map(|(_, q)| {
            q.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
        })
        .unwrap_or_default()
}

async fn session(stream: TcpStream, rooms: Arc<Mutex<Rooms>>) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut uri = String::new();
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    // The callback's signature is tungstenite's (its error type is a whole HTTP response).
    #[allow(clippy::result_large_err)]
    let ws = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |req: &Request, res: Response| {
            uri = req.uri().to_string();
            Ok(res)
        },
        Some(config),
    )
    .await?;
    let query = query_of(&uri);
    let user = query.get("user").cloned().unwrap_or_default();
    let groups: Vec<String> = query
        .get("groups")
        .map(|g| g.split(',').filter(|s| !s.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    let (tx, mut rx) = mpsc::unbounded_channel::<Utf8Bytes>();
    let me = {
        let mut r = rooms.lock().map_err(|_| anyhow::anyhow!("rooms lock"))?;
        r.next_conn += 1;
        let me = r.next_conn;
        for g in &groups {
            r.groups.entry(g.clone()).or_default().push((me, tx.clone()));
        }
        r.users.entry(user.clone()).or_default().push((me, tx.clone()));
        me
    };
    let (mut sink, mut stream) = ws.split();
    let result: anyhow::Result<()> = async {
        loop {
            tokio::select! {
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(reply) = handle(&rooms, me, &user, text.as_str()) {
                            sink.send(Message::Text(reply.into())).await?;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                    Some(Ok(_)) => {}
                },
                out = rx.recv() => match out {
                    Some(bytes) => sink.send(Message::Text(bytes)).await?,
                    None => return Ok(()),
                },
            }
        }
    }
    .await;
    if let Ok(mut r) = rooms.lock() {
        for g in &groups {
            if let Some(members) = r.groups.get_mut(g) {
                members.retain(|(c, _)| *c != me);
            }
        }
        if let Some(conns) = r.users.get_mut(&user) {
            conns.retain(|(c, _)| *c != me);
        }
    }
    result
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The reply to one frame, after fanning a message out. The push is encoded once and its bytes
/// shared by every recipient.
fn handle(rooms: &Mutex<Rooms>, me: u64, user: &str, text: &str) -> Option<String> {
    let Ok(frame) = serde_json::from_str::<Incoming>(text) else {
        return Some(json!({"type": "reply", "code": 400, "error": "invalid_json", "msg": "not JSON"}).to_string());
    };
    match (frame.kind.as_str(), frame.action.as_deref()) {
        ("message", _) => {
            let data = frame.data?;
            let mut r = rooms.lock().ok()?;
            let (conv, targets) = match (&data.group, &data.recipient) {
                (Some(g), _) => (g.clone(), r.groups.get(g).cloned().unwrap_or_default()),
                (None, Some(to)) => {
                    let mut pair = [user, to.as_str()];
                    pair.sort();
                    let mut t = r.users.get(to).cloned().unwrap_or_default();
                    t.extend(r.users.get(user).cloned().unwrap_or_default());
                    (format!("dm_{}_{}", pair[0], pair[1]), t)
                }
                _ => {
                    return Some(
                        json!({"type": "reply", "id": frame.id, "code": 400, "error": "validation_failed"}).to_string(),
                    );
                }
            };
            let seq = {
                let s = r.seqs.entry(conv.clone()).or_insert(0);
                *s += 1;
                *s
            };
            drop(r);
            let at = now_ms();
            let push: Utf8Bytes = json!({"type": "message", "data": {
                "id": format!("{conv}-{seq}"), "conversation": conv, "seq": seq, "sender": user,
                "group": data.group, "recipient": data.recipient, "content": data.content,
                "client_msg_id": data.client_msg_id, "created_at": at}})
            .to_string()
            .into();
            for (conn, tx) in targets {
                if conn != me {
                    let _ = tx.send(push.clone());
                }
            }
            Some(
                json!({"type": "reply", "id": frame.id, "code": 201, "msg": "sent",
                    "data": {"message_id": format!("{conv}-{seq}"), "conversation": conv, "seq": seq, "created_at": at}})
                .to_string(),
            )
        }
        ("action", Some("ping")) => {
            Some(json!({"type": "reply", "id": frame.id, "code": 200, "msg": "pong"}).to_string())
        }
        ("action", Some("sync")) => Some(
            json!({"type": "reply", "id": frame.id, "code": 200, "msg": "ok",
                "data": {"messages": [], "conversations": [], "complete": true}})
            .to_string(),
        ),
        ("action", _) => {
            Some(json!({"type": "reply", "id": frame.id, "code": 200, "msg": "ok", "data": null}).to_string())
        }
        _ => Some(json!({"type": "reply", "id": frame.id, "code": 400, "error": "unknown_type"}).to_string()),
    }
}
