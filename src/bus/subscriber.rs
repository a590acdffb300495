//! The subscribing half of the NATS bus: one connection of its own speaking the NATS client
//! protocol (`SUB`, `UNSUB`, `MSG`, `PING`/`PONG`), handing every message to the Router.
//!
//! Why not async-nats here: it gives every subscription its own channel, whose first block holds
//! 32 messages (~6 KiB), and we drained each with a task; a node holds one subscription per
//! connected user, so that was ~8 KiB per connection (issue 11's heaptrack and suite figures).
//! Here a subscription is one map entry. Publishing stays on async-nats. It speaks TLS and NKey /
//! `.creds` authentication like async-nats does (`security`); WebSocket URLs keep async-nats
//! subscriptions instead (see `nats.rs`).
//!
//! Failover: `nats.url` may list several servers; a lost connection reconnects to the next one
//! (then round the list, which grows with the servers the cluster announces in its INFO) and
//! subscribes everything again. Measured in `tests/cluster.rs`: ~14 ms from killing the server to
//! both nodes' subscriptions standing on the others, no acknowledged message lost.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use actix::Recipient;
use anyhow::{Context as _, bail};
use bytes::{Buf, Bytes, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, oneshot},
};

use super::{BusDelivery, security::Security};

/// A connection's byte stream: plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Client pings: a connection that answers none of two in a row is dead.
const PING_EVERY: Duration = Duration::from_secs(20);
/// Longest protocol line accepted (the server's own default limit is 4 KiB).
const MAX_LINE: usize = 64 * 1024;

enum Command {
    Subscribe(String),
    Unsubscribe(String),
    /// Answered when the server has processed everything sent before it (a PING's PONG).
    Sync(oneshot::Sender<()>),
}

/// One server and how to log in to it.
#[derive(Clone, Debug, PartialEq)]
struct Server {
    host: String,
    port: u16,
    user: Option<String>,
    pass: Option<String>,
}

/// Where to connect: the configured servers (a NATS cluster lists several) and those the
/// cluster announces in its INFO (`connect_urls`), tried in turn.
#[derive(Clone)]
pub struct Target {
    servers: Vec<Server>,
    name: String,
    security: Security,
}

impl Target {
    /// `nats.url`: one URL or several, comma-separated. `None` when one of them is a URL this
    /// connection does not speak (WebSocket).
    pub fn from_url(url: &str, name: String, security: Security) -> anyhow::Result<Option<Self>> {
        let mut servers = Vec::new();
        for one in super::server_urls(url) {
            let addr: async_nats::ServerAddr = one.parse().context("nats.url")?;
            if !matches!(addr.scheme(), "nats" | "tls") {
                return Ok(None);
            }
            servers.push(Server {
                host: addr.host().to_string(),
                port: addr.port(),
                user: addr.username().map(str::to_string),
                pass: addr.password().map(str::to_string),
            });
        }
        if servers.is_empty() {
            bail!("nats.url names no server");
        }
        Ok(Some(Self { servers, name, security }))
    }

    /// Adds the servers a cluster announces (`connect_urls` of its INFO), with the first
    /// configured server's credentials (a cluster shares its accounts).
    fn learn(&mut self, info: &str) {
        let Ok(info) = serde_json::from_str::<serde_json::Value>(info) else { return };
        let Some(urls) = info.get("connect_urls").and_then(|u| u.as_array()) else { return };
        for url in urls.iter().filter_map(|u| u.as_str()) {
            let Some((host, port)) = url.rsplit_once(':') else { continue };
            let Ok(port) = port.parse::<u16>() else { continue };
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            if !self.servers.iter().any(|s| s.host == host && s.port == port) {
                let (user, pass) = (self.servers[0].user.clone(), self.servers[0].pass.clone());
                self.servers.push(Server { host, port, user, pass });
            }
        }
    }

    fn connect_line(&self, server: &Server, nonce: Option<&str>) -> anyhow::Result<String> {
        let mut info = serde_json::json!({
            "verbose": false, "pedantic": false, "lang": "rust", "version": env!("CARGO_PKG_VERSION"),
            "protocol": 1, "name": self.name, "headers": true, "no_responders": false,
        });
        // `nats://token@host` carries a token; `nats://user:pass@host` a user and password.
        match (&server.user, &server.pass) {
            (Some(user), Some(pass)) => {
                info["user"] = user.as_str().into();
                info["pass"] = pass.as_str().into();
            }
            (Some(token), None) => info["auth_token"] = token.as_str().into(),
            _ => {}
        }
        self.security.auth.connect_fields(nonce, &mut info)?;
        Ok(format!("CONNECT {info}\r\nPING\r\n"))
    }
}

/// The subscription connection as the bus sees it.
pub struct Subscriber {
    commands: mpsc::UnboundedSender<Command>,
    connected: Arc<AtomicBool>,
}

impl Subscriber {
    /// Connects once (so a refusal such as TLS required or bad credentials surfaces here), then
    /// keeps the connection up, resubscribing everything after each reconnect.
    pub async fn start(mut target: Target, sink: Arc<OnceLock<Recipient<BusDelivery>>>) -> anyhow::Result<Self> {
        let conn = Conn::open_any(&mut target, 0).await?;
        let (commands, rx) = mpsc::unbounded_channel();
        let connected = Arc::new(AtomicBool::new(true));
        tokio::spawn(run(conn, target, rx, sink, connected.clone()));
        Ok(Self { commands, connected })
    }

    pub fn subscribe(&self, subject: &str) {
        let _ = self.commands.send(Command::Subscribe(subject.to_string()));
    }

    pub fn unsubscribe(&self, subject: &str) {
        let _ = self.commands.send(Command::Unsubscribe(subject.to_string()));
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Resolves once the server has applied every subscription asked for so far (or the
    /// connection was lost meanwhile: resubscribing is then up to the reconnect).
    pub fn synced(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let sent = self.commands.send(Command::Sync(tx)).is_ok();
        async move {
            if sent {
                let _ = rx.await;
            }
        }
    }
}

struct Conn {
    io: Box<dyn Io>,
    buf: BytesMut,
    /// Which of the target's servers this is.
    server: usize,
}

impl Conn {
    /// Connects to the first server that answers, starting at `from` and going round the list
    /// once (the list grows with what the cluster announces).
    async fn open_any(target: &mut Target, from: usize) -> anyhow::Result<Self> {
        let mut last = None;
        for i in 0..target.servers.len() {
            let index = (from + i) % target.servers.len();
            match Conn::open(target, index).await {
                Ok((conn, info)) => {
                    target.learn(&info);
                    return Ok(conn);
                }
                Err(e) => {
                    tracing::debug!(error = %e, server = index, "nats server unavailable; trying the next");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("nats.url names no server")))
    }

    /// Connects to one server; returns the connection and the server's INFO.
    async fn open(target: &Target, index: usize) -> anyhow::Result<(Self, String)> {
        let server = &target.servers[index];
        let handshake = async {
            let mut tcp = TcpStream::connect((server.host.as_str(), server.port))
                .await
                .with_context(|| format!("connecting to NATS at {}:{}", server.host, server.port))?;
            let _ = tcp.set_nodelay(true);
            // INFO comes in the clear; TLS starts after it.
            let mut buf = BytesMut::with_capacity(64 * 1024);
            let info = loop {
                match parse(&mut buf)? {
                    Some(Op::Info(info)) => break info,
                    Some(_) => bail!("NATS did not start with INFO"),
                    None if tcp.read_buf(&mut buf).await? == 0 => bail!("NATS closed the connection"),
                    None => {}
                }
            };
            let fields: serde_json::Value = serde_json::from_str(&info).unwrap_or_default();
            let tls = target.security.tls_required || fields["tls_required"] == true;
            let io: Box<dyn Io> =
                if tls { Box::new(target.security.wrap(tcp, &server.host).await?) } else { Box::new(tcp) };
            let mut conn = Conn { io, buf, server: index };
            let connect = target.connect_line(server, fields["nonce"].as_str())?;
            conn.io.write_all(connect.as_bytes()).await?;
            loop {
                match conn.next_op().await? {
                    Op::Pong => return Ok((conn, info)),
                    Op::Err(e) => bail!("NATS refused the connection: {e}"),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), handshake).await.context("NATS handshake timed out")?
    }

    async fn next_op(&mut self) -> anyhow::Result<Op> {
        loop {
            if let Some(op) = parse(&mut self.buf)? {
                return Ok(op);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                bail!("NATS closed the connection");
            }
        }
    }
}

#[derive(Debug, PartialEq)]
enum Op {
    Info(String),
    Msg { subject: String, payload: Bytes },
    Ping,
    Pong,
    Ok,
    Err(String),
}

/// Takes one complete protocol operation off the front of `buf`, if it holds one.
fn parse(buf: &mut BytesMut) -> anyhow::Result<Option<Op>> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > MAX_LINE {
            bail!("NATS protocol line too long");
        }
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[..end]).context("NATS protocol line is not UTF-8")?;
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let op = match verb.to_ascii_uppercase().as_str() {
        "MSG" | "HMSG" => {
            // MSG <subject> <sid> [reply] <size> / HMSG <subject> <sid> [reply] <header size> <size>
            let parts: Vec<&str> = rest.split_ascii_whitespace().collect();
            let headers = verb.eq_ignore_ascii_case("HMSG");
            let (subject, sizes) = match (headers, parts.len()) {
                (false, 3 | 4) => (parts[0], &parts[parts.len() - 1..]),
                (true, 4 | 5) => (parts[0], &parts[parts.len() - 2..]),
                _ => bail!("malformed NATS message line: {line}"),
            };
            let sizes: Vec<usize> =
                sizes.iter().map(|s| s.parse()).collect::<Result<_, _>>().context("NATS message size")?;
            let (header_len, total) = if headers { (sizes[0], sizes[1]) } else { (0, sizes[0]) };
            if header_len > total {
                bail!("malformed NATS message line: {line}");
            }
            if buf.len() < end + 2 + total + 2 {
                return Ok(None);
            }
            let subject = subject.to_string();
            buf.advance(end + 2);
            let mut payload = buf.split_to(total).freeze();
            payload.advance(header_len);
            buf.advance(2);
            return Ok(Some(Op::Msg { subject, payload }));
        }
        "INFO" => Op::Info(rest.to_string()),
        "PING" => Op::Ping,
        "PONG" => Op::Pong,
        "+OK" => Op::Ok,
        "-ERR" => Op::Err(rest.trim().trim_matches('\'').to_string()),
        _ => bail!("unknown NATS operation: {line}"),
    };
    buf.advance(end + 2);
    Ok(Some(op))
}

/// Subject → sid, and the next sid to hand out.
#[derive(Default)]
struct Subscriptions {
    sids: HashMap<String, u64>,
    next: u64,
}

impl Subscriptions {
    /// Writes what a command needs; a sync's answer is handed back to wait for the next PONG.
    fn apply(&mut self, command: Command, out: &mut Vec<u8>) -> Option<oneshot::Sender<()>> {
        match command {
            Command::Subscribe(subject) => {
                if !self.sids.contains_key(&subject) {
                    self.next += 1;
                    out.extend_from_slice(format!("SUB {subject} {}\r\n", self.next).as_bytes());
                    self.sids.insert(subject, self.next);
                }
            }
            Command::Unsubscribe(subject) => {
                if let Some(sid) = self.sids.remove(&subject) {
                    out.extend_from_slice(format!("UNSUB {sid}\r\n").as_bytes());
                }
            }
            Command::Sync(done) => return Some(done),
        }
        None
    }

    fn resubscribe(&self, out: &mut Vec<u8>) {
        for (subject, sid) in &self.sids {
            out.extend_from_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
        }
    }
}

async fn run(
    first: Conn,
    mut target: Target,
    mut commands: mpsc::UnboundedReceiver<Command>,
    sink: Arc<OnceLock<Recipient<BusDelivery>>>,
    connected: Arc<AtomicBool>,
) {
    let mut subs = Subscriptions::default();
    let mut next = first.server + 1;
    let mut conn = Some(first);
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut c = match conn.take() {
            Some(c) => c,
            // The next server first: the one just lost is likely the one that is down.
            None => match Conn::open_any(&mut target, next).await {
                Ok(c) => {
                    tracing::info!(server = c.server, "nats subscriptions reconnected");
                    c
                }
                Err(e) => {
                    metrics::counter!("natter_bus_connection_errors_total", "connection" => "subscriber").increment(1);
                    tracing::warn!(error = %e, "nats subscription connection failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(100);
        let mut out = Vec::new();
        subs.resubscribe(&mut out);
        connected.store(true, Ordering::Relaxed);
        match serve(&mut c, &mut subs, &mut commands, &sink, out).await {
            Ok(()) => return,
            Err(e) => {
                metrics::counter!("natter_bus_connection_errors_total", "connection" => "subscriber").increment(1);
                tracing::warn!(error = %e, "nats subscription connection lost; reconnecting")
            }
        }
        next = c.server + 1;
        connected.store(false, Ordering::Relaxed);
    }
}

/// Runs one connection until it fails (`Err`) or the bus is dropped (`Ok`).
async fn serve(
    c: &mut Conn,
    subs: &mut Subscriptions,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    sink: &OnceLock<Recipient<BusDelivery>>,
    mut out: Vec<u8>,
) -> anyhow::Result<()> {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut unanswered = 0u32;
    // One entry per PING in flight, oldest first: the syncs its PONG answers (none for
    // keepalives). The server answers PINGs in order, after everything written before them.
    let mut pings: VecDeque<Vec<oneshot::Sender<()>>> = VecDeque::new();
    loop {
        if !out.is_empty() {
            c.io.write_all(&out).await?;
            out.clear();
        }
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { return Ok(()) };
                let mut syncs: Vec<_> = subs.apply(command, &mut out).into_iter().collect();
                // Batch whatever else is waiting into the same write.
                while let Ok(command) = commands.try_recv() {
                    syncs.extend(subs.apply(command, &mut out));
                }
                if !syncs.is_empty() {
                    out.extend_from_slice(b"PING\r\n");
                    pings.push_back(syncs);
                }
            }
            read = c.io.read_buf(&mut c.buf) => {
                if read? == 0 {
                    bail!("NATS closed the connection");
                }
                while let Some(op) = parse(&mut c.buf)? {
                    match op {
                        Op::Msg { subject, payload } => {
                            if let Some(sink) = sink.get() {
                                sink.do_send(BusDelivery { subject, payload });
                            }
                        }
                        Op::Ping => out.extend_from_slice(b"PONG\r\n"),
                        Op::Pong => {
                            unanswered = 0;
                            for done in pings.pop_front().unwrap_or_default() {
                                let _ = done.send(());
                            }
                        }
                        Op::Err(e) => tracing::warn!(error = %e, "nats error on the subscription connection"),
                        Op::Info(_) | Op::Ok => {}
                    }
                }
                // Room for a full read: a buffer left with a few spare bytes would make every
                // read a tiny one (tokio grows a full `BytesMut` by just 64 bytes).
                if c.buf.capacity() - c.buf.len() < 16 * 1024 {
                    c.buf.reserve(64 * 1024);
                }
            }
            _ = ping.tick() => {
                unanswered += 1;
                if unanswered > 2 {
                    bail!("NATS stopped answering pings");
                }
                out.extend_from_slice(b"PING\r\n");
                pings.push_back(Vec::new());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(input: &[u8]) -> (Vec<Op>, usize) {
        let mut buf = BytesMut::from(input);
        let mut ops = Vec::new();
        while let Some(op) = parse(&mut buf).unwrap() {
            ops.push(op);
        }
        (ops, buf.len())
    }

    #[test]
    fn messages_with_and_without_reply_and_headers_are_read_whole() {
        let input =
            b"MSG a.b 1 5\r\nhello\r\nMSG a.c 2 _INBOX.x 0\r\n\r\nHMSG a.d 3 12 15\r\nNATS/1.0\r\n\r\nabc\r\nPING\r\n";
        let (ops, left) = ops(input);
        assert_eq!(left, 0);
        assert_eq!(
            ops,
            vec![
                Op::Msg { subject: "a.b".into(), payload: Bytes::from_static(b"hello") },
                Op::Msg { subject: "a.c".into(), payload: Bytes::new() },
                Op::Msg { subject: "a.d".into(), payload: Bytes::from_static(b"abc") },
                Op::Ping,
            ]
        );
    }

    #[test]
    fn a_message_split_anywhere_waits_for_the_rest() {
        let input = b"MSG a.b 1 11\r\nhello world\r\n";
        for cut in 0..input.len() {
            let mut buf = BytesMut::from(&input[..cut]);
            assert_eq!(parse(&mut buf).unwrap(), None, "cut at {cut}");
            buf.extend_from_slice(&input[cut..]);
            assert_eq!(
                parse(&mut buf).unwrap(),
                Some(Op::Msg { subject: "a.b".into(), payload: Bytes::from_static(b"hello world") })
            );
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn errors_and_garbage_are_told_apart() {
        let (ops, _) = ops(b"-ERR 'Authorization Violation'\r\n+OK\r\nPONG\r\n");
        assert_eq!(ops, vec![Op::Err("Authorization Violation".into()), Op::Ok, Op::Pong]);
        assert!(parse(&mut BytesMut::from(&b"BOGUS\r\n"[..])).is_err());
        assert!(parse(&mut BytesMut::from(&b"MSG a 1 x\r\n"[..])).is_err());
    }

    fn plain() -> Security {
        let config: crate::config::NatsConfig =
            serde_json::from_value(serde_json::json!({"url": "nats://a:4222", "prefix": "p", "tls_ca_file": "",
                "tls_cert_file": "", "tls_key_file": "", "credentials_file": "", "nkey_seed_file": ""}))
            .unwrap();
        Security::from_config(&config).unwrap()
    }

    #[test]
    fn a_server_list_is_read_and_grows_with_what_the_cluster_announces() {
        let mut t = Target::from_url(" nats://u:p@a:4222, nats://b:4223 ,", "n".into(), plain()).unwrap().unwrap();
        assert_eq!(t.servers.iter().map(|s| (s.host.as_str(), s.port)).collect::<Vec<_>>(), [("a", 4222), ("b", 4223)]);
        assert_eq!((t.servers[0].user.as_deref(), t.servers[1].user.as_deref()), (Some("u"), None));
        t.learn(r#"{"server_id":"x","connect_urls":["10.0.0.3:4222","b:4223","[::1]:4224","junk"]}"#);
        let hosts: Vec<(&str, u16)> = t.servers.iter().map(|s| (s.host.as_str(), s.port)).collect();
        assert_eq!(hosts, [("a", 4222), ("b", 4223), ("10.0.0.3", 4222), ("::1", 4224)]);
        assert_eq!(t.servers[2].user.as_deref(), Some("u"), "announced servers log in like the first");
        assert!(Target::from_url("nats://a:4222,ws://b:80", "n".into(), plain()).unwrap().is_none(), "ws: async-nats");
        assert!(Target::from_url("tls://a:4222", "n".into(), plain()).unwrap().is_some(), "TLS is spoken here");
        assert!(Target::from_url(" , ", "n".into(), plain()).is_err());
    }

    #[test]
    fn subscriptions_are_sent_once_and_replayed_after_a_reconnect() {
        let mut subs = Subscriptions::default();
        let mut out = Vec::new();
        subs.apply(Command::Subscribe("a".into()), &mut out);
        subs.apply(Command::Subscribe("a".into()), &mut out);
        subs.apply(Command::Subscribe("b".into()), &mut out);
        subs.apply(Command::Unsubscribe("a".into()), &mut out);
        subs.apply(Command::Unsubscribe("zzz".into()), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "SUB a 1\r\nSUB b 2\r\nUNSUB 1\r\n");
        let mut again = Vec::new();
        subs.resubscribe(&mut again);
        assert_eq!(String::from_utf8(again).unwrap(), "SUB b 2\r\n");
    }
}
