//! Push notifications' figures, each as medians of repeated runs with the spread:
//!
//! 1. **What push costs a message when no device is registered**: DM saturation (the suite's
//!    section 3 scenario) against nodes with `push.enabled = false` and `true`, interleaved
//!    (off, on, on, off, …), on embedded SQLite and on one PostgreSQL cluster node.
//! 2. **Push jobs one node sends per second**: `recipients` offline users with a Web Push device
//!    each (a loopback push service that answers 201), one message to each through the server
//!    API, gathered for ten minutes; once all are stored the harness makes every job due at once
//!    (an UPDATE on the node's database, with psql or sqlite3), so the dispatcher, not the
//!    senders, sets the pace. The rate is jobs over the time from that moment to the last push,
//!    each read, encrypted (RFC 8291), VAPID-signed, sent and recorded.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::{
    plan::{AppCredentials, Scenario, ServerApi},
    suite::{self, Deployment, Env, Spread},
};

#[derive(clap::Args, Debug, Clone)]
pub struct PushArgs {
    /// The natter binary (default: beside this one, e.g. target/release/natter).
    #[arg(long)]
    pub natter_bin: Option<PathBuf>,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pub postgres: String,
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// Runs of each compared variant.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Offline recipients (one push each) per throughput run.
    #[arg(long, default_value_t = 2000)]
    pub recipients: usize,
    /// Only these parts (1: cost per message, 2: throughput); default both.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<u8>,
    /// Where the Markdown report goes (default: stdout only).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub async fn run(args: &PushArgs) -> anyhow::Result<String> {
    let mut md = format!(
        "# Push notifications: cost and throughput\n\n`natter-loadtest push --repeat {} --recipients {}` on this machine ({} cores). \
         Medians of interleaved runs, with min–max.\n\n",
        args.repeat,
        args.recipients,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let want = |n: u8| args.only.is_empty() || args.only.contains(&n);
    if want(1) {
        cost(args, &mut md).await?;
    }
    if want(2) {
        sends(args, &mut md).await?;
    }
    if let Some(out) = &args.out {
        std::fs::write(out, &md).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(md)
}

async fn cost(args: &PushArgs, md: &mut String) -> anyhow::Result<()> {
    md.push_str("## 1. DM saturation with push off and on, no device registered\n\n");
    md.push_str("| store | push | runs | acked msg/s | ack p99 ms |\n|---|---|---|---|---|\n");
    for store in [Store::Sqlite, Store::Postgres] {
        let (mut rate, mut p99) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        for run in 0..args.repeat {
            // off, on, on, off, …: neither variant always goes first.
            let order = if run % 2 == 0 { [false, true] } else { [true, false] };
            for enabled in order {
                let s = saturate(args, store, enabled).await?;
                rate[enabled as usize].push(s.0);
                p99[enabled as usize].push(s.1);
            }
        }
        for enabled in [false, true] {
            let (r, p) = (Spread::of(&rate[enabled as usize]), Spread::of(&p99[enabled as usize]));
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                store.name(),
                if enabled { "on" } else { "off" },
                args.repeat,
                r.show(0),
                p.show(2)
            ));
        }
        let (off, on) = (Spread::of(&rate[0]).median, Spread::of(&rate[1]).median);
        md.push_str(&format!("| {} | on ÷ off | | {:.3}× | |\n", store.name(), on / off.max(1.0)));
        eprintln!("{md}");
    }
    Ok(())
}

async fn sends(args: &PushArgs, md: &mut String) -> anyhow::Result<()> {
    md.push_str("\n## 2. Push jobs one node sends per second (Web Push, loopback push service)\n\n");
    md.push_str("| store | runs | pushes per run | pushes/s |\n|---|---|---|---|\n");
    for store in [Store::Sqlite, Store::Postgres] {
        let mut rates = Vec::new();
        for _ in 0..args.repeat {
            rates.push(throughput(args, store).await?);
        }
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            store.name(),
            args.repeat,
            args.recipients,
            Spread::of(&rates).show(0),
        ));
        eprintln!("{md}");
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Store {
    Sqlite,
    Postgres,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Sqlite => "embedded SQLite",
            Store::Postgres => "PostgreSQL, one cluster node",
        }
    }

    fn deploy(self, env: &Env) -> anyhow::Result<Deployment> {
        match self {
            Store::Sqlite => suite::embedded(env),
            Store::Postgres => suite::cluster(env, 1),
        }
    }
}

fn env(args: &PushArgs, extra: &[(&str, String)]) -> anyhow::Result<Env> {
    let mut env = Env::new(args.natter_bin.as_ref(), &args.postgres, &args.nats)?;
    env.extra = extra.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    Ok(env)
}

/// One DM saturation run: (acked msg/s, ack p99 ms).
async fn saturate(args: &PushArgs, store: Store, push: bool) -> anyhow::Result<(f64, f64)> {
    let env = env(args, &[("NATTER_PUSH__ENABLED", push.to_string())])?;
    let d = store.deploy(&env)?;
    let mut a = suite::base_args(&d, Scenario::Dm);
    a.pairs = 100;
    a.rate = match store {
        Store::Sqlite => 15_000.0,
        Store::Postgres => 20_000.0,
    };
    a.duration = 4.0;
    a.drain = 30.0;
    let label = format!("push {} on {}", if push { "on" } else { "off" }, store.name());
    let s = suite::scenario(a, &label).await?;
    if s.counts.lost > 0 {
        bail!("{label}: {} messages lost", s.counts.lost);
    }
    Ok((s.acked_per_s, s.ack.p99_ms))
}

/// One throughput run: pushes/s from the moment every job was due to the last push.
async fn throughput(args: &PushArgs, store: Store) -> anyhow::Result<f64> {
    // Gathering outlasts the sends, so the dispatcher, not the senders, sets the pace.
    let env = env(args, &[("NATTER_PUSH__COALESCE_MS", "600000".into()), ("NATTER_PUSH__POLL_MS", "50".into())])?;
    let d = store.deploy(&env)?;
    let (key, secret) = d.creds.clone().context("a natter deployment has app credentials")?;
    let (vapid, _) = natter::push::webpush::Vapid::generate();
    set_app(&env, &d.db_url, &[("allow_private_targets", "true".into()), ("vapid_private_key", vapid)])?;
    let service = PushService::start().await?;
    let base = d.servers.first().context("a node")?.ws.replacen("ws://", "http://", 1).replace("/ws", "");
    let api = ServerApi::new(base.clone(), AppCredentials { key, secret }, None)?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    // Any valid P-256 point serves as the browser's key: the push service does not decrypt.
    let (_, p256dh) = natter::push::webpush::Vapid::generate();
    let tag = suite::unique();
    api.call("POST", "/v1/server/users", &json!({"id": format!("sender-{tag}")})).await?;
    let ids: Vec<String> = (0..args.recipients).map(|n| format!("r{n}-{tag}")).collect();
    for chunk in ids.chunks(64) {
        let jobs = chunk.iter().map(|id| {
            let (api, http, base, service, p256dh) = (&api, &http, &base, &service, &p256dh);
            async move {
                api.call("POST", "/v1/server/users", &json!({"id": id})).await?;
                let token = api.call("POST", "/v1/server/users/token", &json!({"user_id": id})).await?["token"]
                    .as_str()
                    .context("no token")?
                    .to_string();
                let device = json!({"platform": "webpush", "subscription": {
                    "endpoint": format!("{}/wp/{id}", service.url), "keys": {"p256dh": p256dh, "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}});
                http.post(format!("{base}/v1/me/devices"))
                    .bearer_auth(token)
                    .json(&device)
                    .send()
                    .await?
                    .error_for_status()
                    .context("registering a device")?;
                anyhow::Ok(())
            }
        });
        for r in futures_util::future::join_all(jobs).await {
            r?;
        }
    }
    let sending = Instant::now();
    for chunk in ids.chunks(64) {
        let jobs = chunk.iter().map(|id| {
            let body =
                json!({"from": format!("sender-{tag}"), "recipient": id, "content": "ping", "client_msg_id": "p1"});
            let api = &api;
            async move { api.call("POST", "/v1/server/messages", &body).await }
        });
        for r in futures_util::future::join_all(jobs).await {
            r?;
        }
    }
    eprintln!("push throughput: {} messages stored in {:.1} s", ids.len(), sending.elapsed().as_secs_f64());
    anyhow::ensure!(service.count() == 0, "pushes went out before the jobs were made due");
    let due = Instant::now();
    make_due(&d.db_url)?;
    let deadline = Instant::now() + Duration::from_secs(180);
    while service.count() < ids.len() {
        if Instant::now() > deadline {
            bail!("only {} of {} pushes arrived in 180 s", service.count(), ids.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, last) = service.span().context("pushes arrived")?;
    let rate = ids.len() as f64 / last.duration_since(due).as_secs_f64().max(0.001);
    eprintln!("push throughput: {rate:.0} pushes/s ({})", store.name());
    Ok(rate)
}

/// Every gathering job due now.
fn make_due(db: &str) -> anyhow::Result<()> {
    const SQL: &str = "UPDATE push_jobs SET next_attempt_at = 0 WHERE status = 'pending'";
    match db.strip_prefix("sqlite://") {
        Some(path) => {
            let path = path.split('?').next().unwrap_or(path);
            let out = std::process::Command::new("sqlite3").args([path, ".timeout 10000", SQL]).output()?;
            if !out.status.success() {
                bail!("sqlite3: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        None => {
            let (server, name) = db.rsplit_once('/').context("a PostgreSQL URL names its database")?;
            suite::psql(server, name, SQL)?;
        }
    }
    Ok(())
}

/// `natter app set loadtest key=value…` on the deployment's database.
fn set_app(env: &Env, db: &str, settings: &[(&str, String)]) -> anyhow::Result<()> {
    let mut cmd = std::process::Command::new(&env.natter);
    cmd.env("NATTER_DATABASE__URL", db).env("NATTER_NATS__URL", "").env_remove("DATABASE_URL");
    cmd.args(["app", "set", "loadtest"]);
    cmd.args(settings.iter().map(|(k, v)| format!("{k}={v}")));
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("natter app set: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A push service on loopback: answers every request 201 and notes when each arrived.
struct PushService {
    url: String,
    arrived: Arc<Mutex<Vec<Instant>>>,
    connections: Arc<AtomicUsize>,
}

impl PushService {
    async fn start() -> anyhow::Result<PushService> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let arrived = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (seen, open) = (arrived.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                open.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(answer(socket, seen.clone()));
            }
        });
        Ok(PushService { url, arrived, connections })
    }

    fn count(&self) -> usize {
        self.arrived.lock().map_or(0, |a| a.len())
    }

    fn span(&self) -> Option<(Instant, Instant)> {
        let a = self.arrived.lock().ok()?;
        Some((*a.iter().min()?, *a.iter().max()?))
    }
}

impl Drop for PushService {
    fn drop(&mut self) {
        eprintln!("push service: {} connections", self.connections.load(Ordering::Relaxed));
    }
}

/// HTTP/1.1 keep-alive: headers, a `content-length` body, `201 Created`.
async fn answer(socket: tokio::net::TcpStream, arrived: Arc<Mutex<Vec<Instant>>>) {
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                match value.trim().parse() {
                    Ok(n) => length = n,
                    Err(_) => return,
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        if let Ok(mut a) = arrived.lock() {
            a.push(Instant::now());
        }
        if write.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n").await.is_err() {
            return;
        }
    }
}
