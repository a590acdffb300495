//! Test harness: a real node on port 0 with its own temporary SQLite file, driven over real
//! HTTP and WebSocket connections. Every wait is bounded.
#![allow(dead_code)]

use std::{collections::VecDeque, net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use natter::{config::Config, server::Spawned};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

pub const WAIT: Duration = Duration::from_secs(15);

/// Which store a test node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The machine's PostgreSQL (trust auth), overridable for other set-ups.
fn postgres_admin_url() -> String {
    std::env::var("NATTER_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh PostgreSQL database: (url, name). Drop it with `drop_postgres`.
pub fn fresh_postgres() -> (String, String) {
    let name = format!("natter_test_{}", natter::domain::random_id("", 8));
    postgres_admin(format!("CREATE DATABASE {name}"));
    let base = postgres_admin_url();
    let server = base.rsplit_once('/').map_or(base.as_str(), |(s, _)| s).to_string();
    (format!("{server}/{name}"), name)
}

pub fn drop_postgres(name: &str) {
    postgres_admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
}

/// Runs admin SQL on a thread of its own, so it works from sync and async contexts alike.
fn postgres_admin(sql: String) {
    let url = postgres_admin_url();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("PostgreSQL reachable for tests");
            sqlx::Executor::execute(&mut conn, sql.as_str()).await.expect("admin sql");
        })
    })
    .join()
    .expect("admin thread");
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub node: Option<Spawned>,
    pub addr: SocketAddr,
    extra: String,
    database_url: String,
    pg_database: Option<String>,
}

fn config(database_url: &str, extra: &str) -> Config {
    let base = format!(
        "[http]\nbind = \"127.0.0.1:0\"\nadmin_bind = \"127.0.0.1:0\"\nworkers = 2\n[database]\nurl = \"{database_url}\"\nmax_connections = 8\n[ws]\nmessages_per_second = 100000\nmessage_burst = 100000\n",
    );
    Config::from_toml_layers(&[&base, extra]).expect("test config")
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// `extra` is TOML merged over the test defaults.
    pub fn start_with(extra: &str) -> Self {
        Self::start_on(Backend::Sqlite, extra)
    }

    /// A node on a fresh database of the given kind (a new PostgreSQL database per test).
    pub fn start_on(backend: Backend, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (database_url, pg_database) = match backend {
            Backend::Sqlite => (format!("sqlite://{}", dir.path().join("natter.db").display()), None),
            Backend::Postgres => {
                let (url, name) = fresh_postgres();
                (url, Some(name))
            }
        };
        let node = Spawned::start(config(&database_url, extra)).expect("server starts");
        let addr = node.addr;
        Self { dir, node: Some(node), addr, extra: extra.to_string(), database_url, pg_database }
    }

    /// Stops the node and starts a new one on the same database (new port).
    pub fn restart(&mut self) {
        if let Some(node) = self.node.take() {
            node.stop();
        }
        let node = Spawned::start(config(&self.database_url, &self.extra)).expect("server restarts");
        self.addr = node.addr;
        self.node = Some(node);
    }

    /// The node's database, for the command line's own commands.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A path on the admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.node.as_ref().expect("a running node").admin_addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        post_to(self.addr, path, token, body).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let client = reqwest::Client::new();
        let mut req = client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = tokio::time::timeout(WAIT, req.send()).await.expect("http timeout").expect("http");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Any method, with an optional bearer token and JSON body.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = reqwest::Client::new().request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = tokio::time::timeout(WAIT, req.send()).await.expect("http timeout").expect("http");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str, token: &str) -> (u16, Value) {
        let res = tokio::time::timeout(WAIT, reqwest::Client::new().delete(self.url(path)).bearer_auth(token).send())
            .await
            .expect("http timeout")
            .expect("http");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Registers a user; returns (token, public id, full response data).
    pub async fn register(&self, email: &str) -> User {
        let (status, body) = self
            .post(
                "/v1/auth/register",
                None,
                json!({"email": email, "password": "correct horse battery", "first_name": "Test", "last_name": "User"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        User::from(&body["data"])
    }

    /// A guest user (no password hashing: fast for tests that need many users).
    pub async fn guest(&self) -> User {
        let (status, body) = self.post("/v1/auth/guest", None, json!({})).await;
        assert_eq!(status, 201, "{body}");
        User::from(&body["data"])
    }

    /// Creates a group owned by `owner` with `members`; returns its id.
    pub async fn group(&self, owner: &User, members: &[&User]) -> String {
        let ids: Vec<&str> = members.iter().map(|u| u.id.as_str()).collect();
        let (status, body) =
            self.post("/v1/groups", Some(&owner.token), json!({"name": "Test group", "members": ids})).await;
        assert_eq!(status, 201, "{body}");
        body["data"]["id"].as_str().expect("group id").to_string()
    }

    /// Every stored message of a conversation, as the user may read it, oldest first.
    pub async fn history(&self, user: &User, conversation: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        loop {
            let after = out.last().map_or(0, |m| m["seq"].as_i64().unwrap_or(0));
            let (status, body) = self
                .get(
                    &format!("/v1/conversations/{conversation}/messages?after_seq={after}&limit=200"),
                    Some(&user.token),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let page = body["data"]["messages"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    pub async fn connect(&self, user: &User) -> Ws {
        Ws::connect(&self.ws_url(), Some(&user.token)).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            node.stop();
        }
        if let Some(name) = self.pg_database.take() {
            drop_postgres(&name);
        }
    }
}

/// Runs each named `async fn(Backend)` as two tests, `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            }
        )*
    };
}

/// POST to any node.
pub async fn post_to(addr: SocketAddr, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    call_at(addr, "POST", path, token, Some(body)).await
}

/// GET from any node.
pub async fn get_from(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    call_at(addr, "GET", path, token, None).await
}

/// DELETE on any node.
pub async fn delete_at(addr: SocketAddr, path: &str, token: &str) -> (u16, Value) {
    call_at(addr, "DELETE", path, Some(token), None).await
}

/// Any method on any node, with a JSON body when given; the answer's status and JSON body.
pub async fn call_at(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = reqwest::Client::new().request(method, format!("http://{addr}{path}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = tokio::time::timeout(WAIT, req.send()).await.expect("http timeout").expect("http");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[derive(Debug, Clone)]
pub struct User {
    pub token: String,
    pub refresh: String,
    pub id: String,
}

impl From<&Value> for User {
    fn from(data: &Value) -> Self {
        User {
            token: data["access_token"].as_str().expect("token").to_string(),
            refresh: data["refresh_token"].as_str().unwrap_or_default().to_string(),
            id: data["user"]["id"].as_str().expect("id").to_string(),
        }
    }
}

pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Value>,
    /// `unread` events, kept apart: they arrive on their own schedule (`chat.unread_push_ms`),
    /// so only `next_event("unread")` reads them and no other wait or silence sees them.
    counts: VecDeque<Value>,
    next_id: u64,
    /// A close already read by `pump`.
    close_code: Option<Option<u16>>,
}

impl Ws {
    pub async fn connect(url: &str, token: Option<&str>) -> Ws {
        let mut request = url.into_client_request().expect("request");
        if let Some(t) = token {
            request
                .headers_mut()
                .insert("authorization", HeaderValue::from_str(&format!("Bearer {t}")).expect("header"));
        }
        let (stream, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("ws connect timeout")
            .expect("ws connect");
        Ws { stream, pending: VecDeque::new(), counts: VecDeque::new(), next_id: 1, close_code: None }
    }

    /// Wraps a WebSocket the test connected itself (e.g. over a socket with small buffers).
    pub fn from_stream(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Ws {
        Ws { stream, pending: VecDeque::new(), counts: VecDeque::new(), next_id: 1, close_code: None }
    }

    /// Connects, or None if the node does not answer (e.g. it was just killed).
    pub async fn try_connect(url: &str, token: &str) -> Option<Ws> {
        let mut request = url.into_client_request().ok()?;
        request.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).ok()?);
        let (stream, _) =
            tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(request)).await.ok()?.ok()?;
        Some(Ws { stream, pending: VecDeque::new(), counts: VecDeque::new(), next_id: 1, close_code: None })
    }

    /// Like `pipeline`, but a closed socket or a silent one (`wait`) is an error, not a panic.
    pub async fn try_pipeline(&mut self, frames: Vec<Value>, wait: Duration) -> Result<Vec<Value>, String> {
        let mut ids = Vec::with_capacity(frames.len());
        for mut frame in frames {
            let id = format!("r{}", self.next_id);
            self.next_id += 1;
            frame["id"] = json!(id);
            ids.push(json!(id));
            let sent = tokio::time::timeout(wait, self.stream.send(Message::text(frame.to_string()))).await;
            if !matches!(sent, Ok(Ok(()))) {
                return Err("send failed".into());
            }
        }
        let mut replies: std::collections::HashMap<String, Value> = std::collections::HashMap::new();
        while replies.len() < ids.len() {
            let v = match tokio::time::timeout(wait, self.stream.next()).await {
                Err(_) => return Err("no reply in time".into()),
                Ok(None) | Ok(Some(Err(_))) => return Err("socket closed".into()),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Err(format!("closed {:?}", frame.map(|f| u16::from(f.code))));
                }
                Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<Value>(&t).map_err(|e| e.to_string())?,
                Ok(Some(Ok(_))) => continue,
            };
            if v["type"] == "reply" && ids.contains(&v["id"]) {
                replies.insert(v["id"].as_str().unwrap_or_default().to_string(), v);
            } else {
                self.keep(v);
            }
        }
        Ok(ids.iter().map(|id| replies.remove(id.as_str().unwrap_or_default()).unwrap_or(Value::Null)).collect())
    }

    /// Reads whatever arrives within `quiet` into the buffer; false if the socket closed.
    pub async fn pump(&mut self, quiet: Duration) -> bool {
        loop {
            match tokio::time::timeout(quiet, self.stream.next()).await {
                Err(_) => return true,
                Ok(None) | Ok(Some(Err(_))) => {
                    self.close_code = Some(None);
                    return false;
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    self.close_code = Some(frame.map(|f| u16::from(f.code)));
                    return false;
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    if let Ok(v) = serde_json::from_str(&t) {
                        self.keep(v);
                    }
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Sends a frame, reporting failure (the server may already have closed).
    pub async fn send_frame(&mut self, message: Message) -> Result<(), String> {
        match tokio::time::timeout(WAIT, self.stream.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("send timed out".into()),
        }
    }

    pub async fn send_raw(&mut self, message: Message) {
        tokio::time::timeout(WAIT, self.stream.send(message)).await.expect("send timeout").expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send_raw(Message::text(text.to_string())).await;
    }

    /// Reads the next frame from the socket (not the buffer); None when the socket closed.
    async fn read(&mut self, wait: Duration) -> Result<Value, Option<u16>> {
        loop {
            let v = self.read_any(wait).await?;
            if is_count(&v) {
                self.counts.push_back(v);
            } else {
                return Ok(v);
            }
        }
    }

    /// The next frame from the socket, `unread` events included.
    async fn read_any(&mut self, wait: Duration) -> Result<Value, Option<u16>> {
        loop {
            match tokio::time::timeout(wait, self.stream.next()).await {
                Err(_) => panic!("no frame within {wait:?}"),
                Ok(None) => return Err(None),
                Ok(Some(Err(_))) => return Err(None),
                Ok(Some(Ok(Message::Text(t)))) => return Ok(serde_json::from_str(&t).expect("server sent JSON")),
                Ok(Some(Ok(Message::Close(frame)))) => return Err(frame.map(|f| u16::from(f.code))),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Buffers a frame read while waiting for another.
    fn keep(&mut self, v: Value) {
        if is_count(&v) { self.counts.push_back(v) } else { self.pending.push_back(v) }
    }

    /// A frame already read and buffered, if any.
    pub fn try_pending(&mut self) -> Option<Value> {
        self.pending.pop_front()
    }

    /// The next frame, buffered ones first.
    pub async fn next(&mut self) -> Value {
        if let Some(v) = self.pending.pop_front() {
            return v;
        }
        match self.read(WAIT).await {
            Ok(v) => v,
            Err(code) => panic!("socket closed ({code:?}) while a frame was expected"),
        }
    }

    /// Sends a frame with a fresh id and returns its reply; other frames are kept for later.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        let id = format!("r{}", self.next_id);
        self.next_id += 1;
        frame["id"] = json!(id);
        self.send_text(&frame.to_string()).await;
        loop {
            let v = match self.read(WAIT).await {
                Ok(v) => v,
                Err(code) => panic!("socket closed ({code:?}) awaiting reply to {frame}"),
            };
            if v["type"] == "reply" && v["id"] == json!(id) {
                return v;
            }
            self.pending.push_back(v);
        }
    }

    /// Sends every frame at once (fresh ids), then gathers their replies in sending order.
    pub async fn pipeline(&mut self, frames: Vec<Value>) -> Vec<Value> {
        self.try_pipeline(frames, WAIT).await.unwrap_or_else(|e| panic!("awaiting pipelined replies: {e}"))
    }

    /// Waits until every reply and push already in flight has arrived (a ping round-trip).
    pub async fn settle(&mut self) {
        let reply = self.action("ping", json!({})).await;
        assert_eq!(reply["code"], 200);
    }

    pub async fn action(&mut self, action: &str, data: Value) -> Value {
        self.request(json!({"type": "action", "action": action, "data": data})).await
    }

    pub async fn send_dm(&mut self, to: &str, content: &str, cmid: &str) -> Value {
        self.request(json!({"type": "message", "data": {"recipient": to, "content": content, "client_msg_id": cmid}}))
            .await
    }

    pub async fn send_group(&mut self, group: &str, content: &str, cmid: &str) -> Value {
        self.request(json!({"type": "message", "data": {"group": group, "content": content, "client_msg_id": cmid}}))
            .await
    }

    /// The next pushed message (type "message"), skipping events.
    pub async fn next_message(&mut self) -> Value {
        loop {
            let v = self.next().await;
            if v["type"] == "message" {
                return v["data"].clone();
            }
        }
    }

    /// The next event with this name, skipping other frames.
    pub async fn next_event(&mut self, event: &str) -> Value {
        if event == "unread" {
            loop {
                if let Some(v) = self.counts.pop_front() {
                    return v["data"].clone();
                }
                match self.read_any(WAIT).await {
                    Ok(v) if is_count(&v) => return v["data"].clone(),
                    Ok(v) => self.pending.push_back(v),
                    Err(code) => panic!("socket closed ({code:?}) while an unread event was expected"),
                }
            }
        }
        loop {
            let v = self.next().await;
            if v["type"] == "event" && v["event"] == event {
                return v["data"].clone();
            }
        }
    }

    /// Collects `n` pushed messages.
    pub async fn messages(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        // One bound for the whole wait: server pings would otherwise keep a per-frame timeout
        // from ever firing while a lost push is awaited.
        let collected = tokio::time::timeout(WAIT * 4, async {
            while out.len() < n {
                out.push(self.next_message().await);
            }
        })
        .await;
        assert!(collected.is_ok(), "only {} of {n} pushed messages arrived", out.len());
        out
    }

    /// Asserts nothing arrives for `quiet` (frames that do arrive are returned for the message).
    pub async fn assert_silent(&mut self, quiet: Duration) {
        if let Some(v) = self.pending.pop_front() {
            panic!("unexpected frame {v}");
        }
        let until = tokio::time::Instant::now() + quiet;
        while let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout_at(until, self.stream.next()).await {
            let v: Value = serde_json::from_str(&t).expect("server sent JSON");
            assert!(is_count(&v), "unexpected frame {t}");
            self.counts.push_back(v);
        }
    }

    /// Waits for the server to close the socket; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        if let Some(code) = self.close_code {
            return code;
        }
        loop {
            match self.read(WAIT).await {
                Ok(_) => continue,
                Err(code) => return code,
            }
        }
    }
}

/// An `unread` event (see `Ws::counts`).
fn is_count(v: &Value) -> bool {
    v["type"] == "event" && v["event"] == "unread"
}

/// An app's server-API credentials and a signing client for them.
#[derive(Clone)]
pub struct ServerClient {
    pub addr: SocketAddr,
    pub key: String,
    pub secret: String,
    pub scheme: natter::auth::server_sig::Scheme,
}

/// A request to build by hand (for forgeries).
pub struct Raw<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl ServerClient {
    /// Signed headers for a request at `timestamp` with `nonce`.
    pub fn headers(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        timestamp: i64,
        nonce: &str,
    ) -> Vec<(&'static str, String)> {
        use natter::auth::server_sig::{Scheme, Signed, sign};
        let ts = timestamp.to_string();
        let signature = sign(self.scheme, &self.secret, &Signed { method, path, timestamp: &ts, nonce, body });
        let mut h = vec![
            ("App-Key", self.key.clone()),
            ("Nonce", nonce.to_string()),
            ("Timestamp", ts),
            ("Signature", signature),
        ];
        if self.scheme == Scheme::V2HmacSha256 {
            h.push(("Signature-Method", "hmac-sha256".into()));
        }
        h
    }

    pub fn now() -> i64 {
        natter::domain::now_millis() / 1000
    }

    /// A correctly signed call with a fresh nonce.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| serde_json::to_vec(&b).unwrap_or_default()).unwrap_or_default();
        let nonce = natter::domain::random_id("", 8);
        let headers = self.headers(method, path, &body, Self::now(), &nonce);
        send_raw(self.addr, Raw { method, path, body, headers }).await
    }
}

pub async fn send_raw(addr: SocketAddr, raw: Raw<'_>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(raw.method.as_bytes()).expect("method");
    let mut req = client.request(method, format!("http://{addr}{}", raw.path)).body(raw.body);
    for (k, v) in raw.headers {
        req = req.header(k, v);
    }
    let res = tokio::time::timeout(WAIT, req.send()).await.expect("http timeout").expect("http");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

impl TestServer {
    pub fn node(&self) -> &natter::node::Node {
        &self.node.as_ref().expect("running").node
    }

    /// The server-API client of an app (created if missing).
    pub async fn server_client(&self, app: &str, scheme: natter::auth::server_sig::Scheme) -> ServerClient {
        let id = natter::domain::AppId::parse(app).expect("app id");
        let store = &self.node().store;
        let record = match store.app(&id).await.expect("store") {
            Some(a) => a,
            None => store.create_app(&id, &natter::config::AppSettings::default()).await.expect("create app"),
        };
        ServerClient { addr: self.addr, key: record.api_key, secret: record.api_secret.expose().to_string(), scheme }
    }

    /// Sends the default app's webhooks for `events` (all when empty) to `receiver`, signed with
    /// `WEBHOOK_SECRET`.
    pub async fn hook_up(&self, receiver: &Receiver, events: &[&str]) {
        let url = receiver.url("/hooks");
        let events: Vec<String> = events.iter().map(|e| e.to_string()).collect();
        self.configure_app("default", move |s| {
            s.webhook_url = url;
            s.webhook_secret = natter::config::Secret::new(WEBHOOK_SECRET);
            s.webhook_events = events;
            s.allow_private_targets = true;
        })
        .await;
    }

    /// Changes an app's settings in place.
    pub async fn configure_app(&self, app: &str, change: impl FnOnce(&mut natter::config::AppSettings)) {
        let id = natter::domain::AppId::parse(app).expect("app id");
        let store = &self.node().store;
        let mut settings = store.app(&id).await.expect("store").expect("app exists").settings;
        change(&mut settings);
        store.set_app_settings(&id, &settings).await.expect("settings saved");
    }

    /// A second node on the same database (and the same in-process store semantics).
    pub fn second_node(&self) -> Spawned {
        Spawned::start(config(&self.database_url, &self.extra)).expect("second node starts")
    }
}

/// A real HTTP server the node's webhooks and before-send hook call, recording what arrives.
pub struct Receiver {
    pub addr: SocketAddr,
    pub state: std::sync::Arc<std::sync::Mutex<ReceiverState>>,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    /// The request's query string (Tencent-format callbacks carry their command there).
    pub query: String,
    pub at: std::time::Instant,
}

#[derive(Default)]
pub struct ReceiverState {
    pub deliveries: Vec<Delivery>,
    pub hook_calls: Vec<Value>,
    /// Answer 503 to the first N attempts of each event id.
    pub fail_first: usize,
    /// Answer every webhook with this status instead.
    pub status: Option<u16>,
    /// Wait this long before answering a webhook.
    pub delay_ms: u64,
    /// What the before-send hook answers, after `hook_delay_ms`.
    pub hook_answer: Value,
    pub hook_delay_ms: u64,
    /// Where /redirect sends callers.
    pub redirect_to: String,
    attempts: std::collections::HashMap<String, usize>,
}

impl Receiver {
    pub fn start() -> Self {
        use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
        let state = std::sync::Arc::new(std::sync::Mutex::new(ReceiverState {
            hook_answer: json!({"action": "allow"}),
            ..ReceiverState::default()
        }));
        let shared = state.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let data = web::Data::new(shared);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .route(
                            "/hooks",
                            web::post().to(|req: HttpRequest, body: web::Bytes, s: web::Data<std::sync::Arc<std::sync::Mutex<ReceiverState>>>| async move {
                                let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                                let id = header("webhook-id");
                                let (status, delay) = {
                                    let mut st = s.lock().unwrap();
                                    st.deliveries.push(Delivery {
                                        id: id.clone(),
                                        timestamp: header("webhook-timestamp"),
                                        signature: header("webhook-signature"),
                                        body: String::from_utf8_lossy(&body).to_string(),
                                        query: req.query_string().to_string(),
                                        at: std::time::Instant::now(),
                                    });
                                    let seen = st.attempts.entry(id).or_insert(0);
                                    *seen += 1;
                                    let status = if *seen <= st.fail_first { 503 } else { st.status.unwrap_or(200) };
                                    (status, st.delay_ms)
                                };
                                if delay > 0 {
                                    actix_rt::time::sleep(Duration::from_millis(delay)).await;
                                }
                                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
                            }),
                        )
                        .route(
                            "/before-send",
                            web::post().to(|body: web::Json<Value>, s: web::Data<std::sync::Arc<std::sync::Mutex<ReceiverState>>>| async move {
                                let (answer, delay) = {
                                    let mut st = s.lock().unwrap();
                                    st.hook_calls.push(body.into_inner());
                                    (st.hook_answer.clone(), st.hook_delay_ms)
                                };
                                if delay > 0 {
                                    actix_rt::time::sleep(Duration::from_millis(delay)).await;
                                }
                                HttpResponse::Ok().json(answer)
                            }),
                        )
                        .route(
                            "/redirect",
                            web::post().to(|s: web::Data<std::sync::Arc<std::sync::Mutex<ReceiverState>>>| async move {
                                let to = s.lock().unwrap().redirect_to.clone();
                                HttpResponse::Found().insert_header(("location", to)).finish()
                            }),
                        )
                })
                .workers(1)
                .disable_signals()
                .bind("127.0.0.1:0")
                .expect("receiver binds");
                let addr = server.addrs()[0];
                let server = server.run();
                let _ = tx.send((addr, server.handle()));
                let _ = server.await;
            })
        });
        let (addr, handle) = rx.recv().expect("receiver starts");
        Receiver { addr, state, handle, thread: Some(thread) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.lock().unwrap().deliveries.clone()
    }

    /// Waits until `n` deliveries arrived (or `within` passes); returns what arrived.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Delivery> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let got = self.deliveries();
            if got.len() >= n || std::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        let _ = std::thread::spawn(move || actix_rt::System::new().block_on(handle.stop(false))).join();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The webhook signing secret `TestServer::hook_up` sets.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A raw socket upgraded to a WebSocket, for frames no library would send.
pub async fn raw_socket(server: &TestServer, token: &str) -> TcpStream {
    let mut io = TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    io.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(WAIT, io.read_exact(&mut byte)).await.unwrap().unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    io
}

/// The close code of the close frame the server sends (skipping other frames), then the socket's
/// end; None if it dropped the connection without one.
pub async fn close_code(io: &mut TcpStream) -> Option<u16> {
    loop {
        let mut head = [0u8; 2];
        match tokio::time::timeout(WAIT, io.read_exact(&mut head)).await.expect("server answered") {
            Ok(_) => {}
            Err(_) => return None,
        }
        let len = match head[1] & 0x7F {
            126 => io.read_u16().await.unwrap() as usize,
            127 => io.read_u64().await.unwrap() as usize,
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        io.read_exact(&mut payload).await.unwrap();
        if head[0] & 0x0F == 0x8 {
            return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        }
    }
}

/// Runs a tool the test drives (node, python3), its output inherited, killed past `within`;
/// fails the test with `what` unless it exits successfully.
pub fn run_tool(what: &str, cmd: &mut std::process::Command, within: Duration) {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} cannot start: {e} (see .ci/run for the tools the tests call)"));
    let deadline = std::time::Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish in {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{what} failed ({status}); see the output above");
}
