//! One client connection: connects from a chosen loopback source address with small buffers,
//! sends on command, and accounts for every reply and push it reads.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::plan::{ConvKind, Plan};
use crate::stats::{FailCause, Kind, Recorder, bump};
use crate::tls::TlsConfig;

/// Attempts a reconnect makes before it counts as failed (about 7 s of backoff in all).
const RECONNECT_TRIES: u32 = 8;
/// Refusals for lack of room (503) a reconnect takes before it gives up.
const REFUSALS_TOLERATED: u32 = 60;

/// Read and write buffers of a few KiB: the client must never be what limits the server.
const BUFFER_BYTES: usize = 4096;

/// Longest the HTTP upgrade may take once TCP is connected (the client library's bound too).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// A connect attempt that failed, with why as far as the client can tell.
#[derive(Debug)]
pub struct ConnectFailure {
    pub cause: FailCause,
    /// The wait a 503 asked for (`Retry-After`, seconds): the server refused for lack of room.
    pub retry_after: Option<Duration>,
    pub error: anyhow::Error,
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:#})", self.cause.name(), self.error)
    }
}

impl ConnectFailure {
    fn new(cause: FailCause, error: impl Into<anyhow::Error>) -> Self {
        ConnectFailure { cause, retry_after: None, error: error.into() }
    }

    /// A failed TCP connect (or bind), by its errno.
    fn tcp(e: std::io::Error, what: String) -> Self {
        let cause = match e.raw_os_error() {
            Some(libc_errno::ECONNREFUSED) => FailCause::TcpRefused,
            Some(libc_errno::EADDRNOTAVAIL | libc_errno::EADDRINUSE) => FailCause::TcpNoPort,
            Some(libc_errno::ETIMEDOUT) => FailCause::TcpTimeout,
            _ => FailCause::TcpOther,
        };
        ConnectFailure::new(cause, anyhow::Error::new(e).context(what))
    }

    /// A failed HTTP upgrade.
    fn handshake(e: tokio_tungstenite::tungstenite::Error) -> Self {
        use tokio_tungstenite::tungstenite::{Error, error::ProtocolError};
        match &e {
            Error::Http(response) => {
                let retry_after = (response.status() == 503)
                    .then(|| response.headers().get("retry-after")?.to_str().ok()?.trim().parse().ok())
                    .flatten()
                    .map(Duration::from_secs);
                let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                let error =
                    anyhow::anyhow!("HTTP {}: {}", response.status(), body.chars().take(300).collect::<String>());
                ConnectFailure { cause: FailCause::HttpStatus, retry_after, error }
            }
            Error::Io(_)
            | Error::ConnectionClosed
            | Error::AlreadyClosed
            | Error::Protocol(ProtocolError::ResetWithoutClosingHandshake | ProtocolError::HandshakeIncomplete) => {
                ConnectFailure::new(FailCause::HandshakeReset, e)
            }
            _ => ConnectFailure::new(FailCause::Other, e),
        }
    }
}

/// The errno values the classification needs (Linux), without a libc dependency.
mod libc_errno {
    pub const EADDRINUSE: i32 = 98;
    pub const EADDRNOTAVAIL: i32 = 99;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
}

/// Opens a WebSocket to `url` from `source` (a loopback address, so one process can use more
/// than one address's ephemeral ports).
pub async fn connect(url: &str, source: Option<IpAddr>, tls: Option<&TlsConfig>) -> Result<Ws, ConnectFailure> {
    let other = |e: anyhow::Error| ConnectFailure::new(FailCause::Other, e);
    let authority =
        url.split("://").nth(1).and_then(|r| r.split(['/', '?']).next()).context("URL has no host").map_err(other)?;
    let addr: SocketAddr = tokio::net::lookup_host(authority)
        .await
        .map_err(|e| other(e.into()))?
        .next()
        .with_context(|| format!("{authority} does not resolve"))
        .map_err(other)?;
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
        .map_err(|e| ConnectFailure::tcp(e, "opening a socket".into()))?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| ConnectFailure::tcp(e, format!("binding source address {ip}")))?;
    }
    let stream = socket.connect(addr).await.map_err(|e| ConnectFailure::tcp(e, format!("TCP connect to {addr}")))?;
    stream.set_nodelay(true).map_err(|e| ConnectFailure::tcp(e, "TCP_NODELAY".into()))?;
    let config = WebSocketConfig::default().read_buffer_size(BUFFER_BYTES).write_buffer_size(0);
    let handshake = async {
        if url.starts_with("wss://") {
            let tls = tls.context("a wss:// target needs TLS settings").map_err(other)?;
            let connector = tokio_tungstenite::Connector::Rustls(tls.clone());
            let (ws, _) = tokio_tungstenite::client_async_tls_with_config(url, stream, Some(config), Some(connector))
                .await
                .map_err(ConnectFailure::handshake)?;
            return Ok(ws);
        }
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, MaybeTlsStream::Plain(stream), Some(config))
            .await
            .map_err(ConnectFailure::handshake)?;
        Ok(ws)
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(result) => result,
        Err(_) => Err(ConnectFailure::new(
            FailCause::HandshakeTimeout,
            anyhow::anyhow!("no answer to the upgrade within {HANDSHAKE_TIMEOUT:?}"),
        )),
    }
}

/// What a connection task is told to do.
pub enum Command {
    /// Send one message to a conversation; `intended_us` is when the schedule wanted it sent.
    Send {
        conv: usize,
        intended_us: u64,
    },
    /// Find every message of these conversations (index, server id, last acked seq) that
    /// this connection should have and has not, fetch it with `sync`, count the rest as lost.
    Check {
        convs: Arc<Vec<(usize, String, u64)>>,
        done: oneshot::Sender<()>,
    },
    /// Close and reconnect at once, then `sync` (the reconnect storm).
    Reconnect {
        done: oneshot::Sender<()>,
    },
    Close,
}

#[derive(Default)]
struct ConvState {
    /// The server's id for the conversation, learned from the first reply or push.
    server_id: Option<String>,
    seen: HashSet<u64>,
    own: HashSet<u64>,
    last: u64,
}

/// A `sync` in progress: what it is for and when it was asked.
struct SyncJob {
    request_id: u64,
    asked: Instant,
    conv: Option<(usize, String)>,
    missing: HashSet<u64>,
    /// Sent again with every page's cursor: conversations after the cursor's start from it.
    conversations: Value,
    done: Option<oneshot::Sender<()>>,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default, borrow)]
    data: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct Push<'a> {
    #[serde(borrow)]
    conversation: std::borrow::Cow<'a, str>,
    seq: u64,
    #[serde(borrow)]
    content: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct Ack {
    conversation: String,
    seq: u64,
}

/// Max acked seq per conversation, shared by a worker's connections.
pub type AckedSeqs = Arc<std::sync::Mutex<HashMap<usize, (String, u64)>>>;

pub struct Connection {
    pub user: usize,
    plan: Arc<Plan>,
    rec: Arc<Recorder>,
    acked: AckedSeqs,
    ws: Option<Ws>,
    next_id: u64,
    pending: HashMap<u64, (usize, u64)>,
    convs: HashMap<usize, ConvState>,
    sync: Option<SyncJob>,
    pad: String,
}

impl Connection {
    pub fn new(user: usize, plan: Arc<Plan>, rec: Arc<Recorder>, acked: AckedSeqs, ws: Ws) -> Connection {
        let convs = plan.users.get(user).map(|u| u.convs.iter().map(|c| (*c, ConvState::default())).collect());
        let pad = "x".repeat(plan.message_bytes.saturating_sub(18));
        Connection {
            user,
            plan,
            rec,
            acked,
            ws: Some(ws),
            next_id: 0,
            pending: HashMap::new(),
            convs: convs.unwrap_or_default(),
            sync: None,
            pad,
        }
    }

    /// Runs until told to close. An unexpected disconnect is counted and repaired the way a real
    /// client would: reconnect (once a second) and let the final check `sync` what was missed.
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut retry = tokio::time::interval(Duration::from_secs(1));
        loop {
            let frame = async {
                match self.ws.as_mut() {
                    Some(ws) => ws.next().await,
                    None => {
                        retry.tick().await;
                        None
                    }
                }
            };
            tokio::select! {
                frame = frame => match frame {
                    Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        if self.ws.take().is_some() {
                            bump(&self.rec.disconnected, 1);
                            bump(&self.rec.errors, 1);
                        } else if self.reconnect().await.is_ok() {
                            bump(&self.rec.connected, 1);
                        }
                    }
                    Some(Ok(_)) => {}
                },
                command = commands.recv() => match command {
                    Some(Command::Send { conv, intended_us }) => self.send_message(conv, intended_us).await,
                    Some(Command::Check { convs, done }) => self.check(&convs, done).await,
                    Some(Command::Reconnect { done }) => {
                        if let Some(mut ws) = self.ws.take() {
                            let _ = ws.close(None).await;
                        }
                        match self.reconnect().await {
                            Ok(()) => self.resync(done).await,
                            Err(_) => {
                                let _ = done.send(());
                            }
                        }
                    }
                    Some(Command::Close) | None => {
                        if let Some(mut ws) = self.ws.take() {
                            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                        }
                        return;
                    }
                },
            }
        }
    }

    /// Reconnects as a client should: a failed attempt is tried again after a capped, jittered
    /// backoff (100 ms doubling to 2 s, 50-100 % of it), up to `RECONNECT_TRIES` attempts; a
    /// node that answers 503 for lack of room is tried again after its `Retry-After` (50-100 %
    /// of it, so a storm's retries spread), counted apart and not against those attempts (at most
    /// `REFUSALS_TOLERATED`). The reconnect's latency counts from the first attempt, so the waits
    /// show in it.
    async fn reconnect(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut refusals = 0;
        let mut attempt = 0;
        while attempt < RECONNECT_TRIES {
            bump(&self.rec.connect_attempts, 1);
            match connect(&self.plan.url_of(self.user), self.plan.source_of(self.user), self.plan.tls.as_ref()).await {
                Ok(ws) => {
                    self.rec.record(Kind::Connect, started.elapsed().as_micros() as u64);
                    self.ws = Some(ws);
                    return Ok(());
                }
                Err(ConnectFailure { retry_after: Some(wait), .. }) if refusals < REFUSALS_TOLERATED => {
                    refusals += 1;
                    bump(&self.rec.connect_backpressure, 1);
                    let jittered = wait.mul_f64(rand::Rng::gen_range(&mut rand::thread_rng(), 0.5..=1.0));
                    tokio::time::sleep(jittered).await;
                }
                Err(e) => {
                    if self.rec.failed_because(e.cause) == 0 {
                        eprintln!("worker: first reconnect attempt failed for this cause: {e}");
                    }
                    if attempt + 1 == RECONNECT_TRIES {
                        bump(&self.rec.connect_failed, 1);
                        return Err(e.error);
                    }
                    attempt += 1;
                    bump(&self.rec.connect_retries, 1);
                    let jittered = backoff.mul_f64(rand::Rng::gen_range(&mut rand::thread_rng(), 0.5..=1.0));
                    tokio::time::sleep(jittered).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        anyhow::bail!("no reconnect attempt was made")
    }

    async fn write(&mut self, text: String) -> bool {
        match self.ws.as_mut() {
            Some(ws) => ws.send(Message::text(text)).await.is_ok(),
            None => false,
        }
    }

    async fn send_message(&mut self, conv: usize, intended_us: u64) {
        self.next_id += 1;
        let id = self.next_id;
        let content = format!("{intended_us} {}", self.pad);
        let client_msg_id = format!("c{}-{id}", self.user);
        let frame = match self.plan.convs.get(conv).map(|c| &c.kind) {
            Some(ConvKind::Group { id: group }) => json!({"type": "message", "id": id,
                "data": {"group": group, "content": content, "client_msg_id": client_msg_id}}),
            Some(ConvKind::Dm) => {
                let other = self.plan.convs[conv].members.iter().find(|m| **m != self.user).copied();
                let recipient = other.and_then(|o| self.plan.users.get(o)).map_or("", |u| u.id.as_str());
                json!({"type": "message", "id": id,
                    "data": {"recipient": recipient, "content": content, "client_msg_id": client_msg_id}})
            }
            None => {
                bump(&self.rec.ack_errors, 1);
                return;
            }
        };
        // `sent` was counted when the schedule handed the message over (see worker.rs).
        self.pending.insert(id, (conv, intended_us));
        if !self.write(frame.to_string()).await {
            self.pending.remove(&id);
            bump(&self.rec.ack_errors, 1);
        }
    }

    async fn on_text(&mut self, text: &str) {
        let Ok(frame) = serde_json::from_str::<Frame>(text) else {
            bump(&self.rec.errors, 1);
            return;
        };
        match frame.kind {
            "message" => self.on_push(frame.data.map_or("", |d| d.get())),
            "reply" => {
                let id = frame.id.as_ref().and_then(Value::as_u64).unwrap_or(0);
                let data = frame.data.map_or("null", |d| d.get());
                if let Some((conv, intended)) = self.pending.remove(&id) {
                    self.on_ack(conv, intended, frame.code.unwrap_or(0), data, text);
                } else if self.sync.as_ref().is_some_and(|s| s.request_id == id) {
                    self.on_sync_reply(frame.code.unwrap_or(0), data).await;
                }
            }
            _ => {}
        }
    }

    fn on_ack(&mut self, conv: usize, intended_us: u64, code: u16, data: &str, text: &str) {
        let ack = serde_json::from_str::<Ack>(data);
        match ack {
            Ok(ack) if code == 200 || code == 201 => {
                bump(&self.rec.acked, 1);
                bump(&self.rec.expected, self.plan.recipients(conv));
                self.rec.record(Kind::Ack, unix_micros().saturating_sub(intended_us));
                if let Some(state) = self.convs.get_mut(&conv) {
                    state.own.insert(ack.seq);
                    state.server_id.get_or_insert_with(|| ack.conversation.clone());
                }
                if let Ok(mut acked) = self.acked.lock() {
                    let entry = acked.entry(conv).or_insert_with(|| (ack.conversation.clone(), 0));
                    entry.1 = entry.1.max(ack.seq);
                }
            }
            _ => {
                // The first few refusals are shown: they usually name a limit to raise.
                if self.rec.ack_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3 {
                    eprintln!("worker: send refused: {text}");
                }
            }
        }
    }

    /// The plan index of a conversation the server names.
    fn conv_index(&self, server_id: &str) -> Option<usize> {
        let user = self.plan.users.get(self.user)?;
        user.convs.iter().copied().find(|c| match self.plan.convs.get(*c).map(|c| &c.kind) {
            Some(ConvKind::Group { id }) => id == server_id,
            Some(ConvKind::Dm) => {
                self.convs.get(c).and_then(|s| s.server_id.as_deref()).is_none_or(|known| known == server_id)
            }
            None => false,
        })
    }

    fn on_push(&mut self, data: &str) {
        let Ok(push) = serde_json::from_str::<Push>(data) else {
            bump(&self.rec.errors, 1);
            return;
        };
        let Some(conv) = self.conv_index(&push.conversation) else { return };
        let intended: u64 = push.content.split(' ').next().and_then(|t| t.parse().ok()).unwrap_or(0);
        let Some(state) = self.convs.get_mut(&conv) else { return };
        state.server_id.get_or_insert_with(|| push.conversation.to_string());
        if !state.seen.insert(push.seq) {
            bump(&self.rec.duplicated, 1);
            return;
        }
        if push.seq < state.last {
            bump(&self.rec.out_of_order, 1);
        }
        state.last = state.last.max(push.seq);
        bump(&self.rec.delivered, 1);
        if intended > 0 {
            self.rec.record(Kind::Delivery, unix_micros().saturating_sub(intended));
        }
    }

    /// The final accounting: which acked messages never arrived live.
    async fn check(&mut self, convs: &[(usize, String, u64)], done: oneshot::Sender<()>) {
        let mut missing_total = Vec::new();
        for (conv, server_id, max) in convs {
            let Some(state) = self.convs.get_mut(conv) else { continue };
            state.server_id.get_or_insert_with(|| server_id.clone());
            let missing: HashSet<u64> =
                (1..=*max).filter(|s| !state.seen.contains(s) && !state.own.contains(s)).collect();
            if !missing.is_empty() {
                missing_total.push((*conv, server_id.clone(), missing));
            }
        }
        // One conversation per sync; a connection here is in few.
        let Some((conv, server_id, missing)) = missing_total.pop() else {
            let _ = done.send(());
            return;
        };
        if self.plan.floor || self.ws.is_none() {
            // The floor stores nothing, and a dead connection cannot ask.
            let lost: usize = missing.len() + missing_total.iter().map(|m| m.2.len()).sum::<usize>();
            bump(&self.rec.lost, lost as u64);
            let _ = done.send(());
            return;
        }
        for (_, _, rest) in &missing_total {
            bump(&self.rec.lost, rest.len() as u64);
        }
        let from = missing.iter().min().copied().unwrap_or(1) - 1;
        self.start_sync(Some((conv, server_id.clone())), json!({ server_id: from }), missing, Some(done)).await;
    }

    /// After a reconnect: `sync` from the last seq held in each conversation.
    async fn resync(&mut self, done: oneshot::Sender<()>) {
        let known: serde_json::Map<String, Value> = self
            .convs
            .values()
            .filter_map(|s| Some((s.server_id.clone()?, json!(s.last.max(s.own.iter().copied().max().unwrap_or(0))))))
            .collect();
        self.start_sync(None, Value::Object(known), HashSet::new(), Some(done)).await;
    }

    async fn start_sync(
        &mut self,
        conv: Option<(usize, String)>,
        conversations: Value,
        missing: HashSet<u64>,
        done: Option<oneshot::Sender<()>>,
    ) {
        self.next_id += 1;
        let id = self.next_id;
        let frame = json!({"type": "action", "action": "sync", "id": id, "data": {"conversations": conversations}});
        self.sync = Some(SyncJob { request_id: id, asked: Instant::now(), conv, missing, conversations, done });
        if !self.write(frame.to_string()).await {
            self.finish_sync();
        }
    }

    async fn on_sync_reply(&mut self, code: u16, data: &str) {
        let Some(job) = self.sync.as_mut() else { return };
        self.rec.record(Kind::Sync, job.asked.elapsed().as_micros() as u64);
        bump(&self.rec.syncs, 1);
        let reply: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        if code != 200 {
            bump(&self.rec.errors, 1);
            self.finish_sync();
            return;
        }
        if let Some((_, server_id)) = &job.conv {
            for m in reply["messages"].as_array().into_iter().flatten() {
                if m["conversation"].as_str() == Some(server_id.as_str())
                    && let Some(seq) = m["seq"].as_u64()
                    && job.missing.remove(&seq)
                {
                    bump(&self.rec.recovered, 1);
                }
            }
        }
        let complete = reply["complete"].as_bool().unwrap_or(true);
        // A check stops paging as soon as it has found everything it was missing.
        let found_all = job.conv.is_some() && job.missing.is_empty();
        match reply["cursor"].as_str() {
            Some(cursor) if !complete && !found_all => {
                let cursor = cursor.to_string();
                self.next_id += 1;
                job.request_id = self.next_id;
                job.asked = Instant::now();
                let frame = json!({"type": "action", "action": "sync", "id": job.request_id,
                    "data": {"conversations": job.conversations, "cursor": cursor}});
                if !self.write(frame.to_string()).await {
                    self.finish_sync();
                }
            }
            _ => self.finish_sync(),
        }
    }

    fn finish_sync(&mut self) {
        if let Some(job) = self.sync.take() {
            bump(&self.rec.lost, job.missing.len() as u64);
            if let Some(done) = job.done {
                let _ = done.send(());
            }
        }
    }
}
