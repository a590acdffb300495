//! The standard suite: starts the floor and Natter (embedded, and cluster on PostgreSQL + NATS),
//! runs the scenarios side by side, and writes `loadtest/results/<date>.md` and `.json`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;

use crate::plan::{Auth, Scenario};
use crate::procfs::CpuTimes;
use crate::report::Summary;
use crate::run::{self, RunArgs};

#[derive(clap::Args, Debug, Clone)]
pub struct SuiteArgs {
    /// The natter binary (default: beside this one, e.g. target/release/natter).
    #[arg(long)]
    pub natter_bin: Option<PathBuf>,
    /// Where the results go.
    #[arg(long, default_value = "loadtest/results")]
    pub out_dir: PathBuf,
    /// PostgreSQL server for cluster mode (a fresh database is created per server set).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pub postgres: String,
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// Smaller sizes and shorter runs (a smoke test of the suite itself, not a measurement).
    #[arg(long)]
    pub quick: bool,
    /// Only these sections (1-6); default all.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<u8>,
    /// Runs of each compared row of sections 2 and 4, interleaved with the floor's (floor,
    /// embedded, one node, three nodes, floor, …): the tables show medians and min–max, and their
    /// targets are judged on the medians. Default 5 (1 with --quick).
    #[arg(long)]
    pub repeat: Option<usize>,
}

/// Median and extremes of some figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    pub(crate) fn of(values: &[f64]) -> Spread {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread { median: f64::NAN, min: f64::NAN, max: f64::NAN };
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len().is_multiple_of(2) { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] };
        Spread { median, min: v[0], max: v[v.len() - 1] }
    }

    /// `median (min–max)`, or just the figure for a single run.
    pub(crate) fn show(&self, decimals: usize) -> String {
        if self.min == self.max {
            format!("{:.*}", decimals, self.median)
        } else {
            format!("{:.*} ({:.*}–{:.*})", decimals, self.median, decimals, self.min, decimals, self.max)
        }
    }
}

/// A server process the suite started; killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) ws: String,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A set of servers for one row: their URLs, pids and the app credentials.
pub(crate) struct Deployment {
    name: String,
    pub(crate) servers: Vec<Server>,
    pub(crate) creds: Option<(String, String)>,
    /// The database its nodes share (empty for the floor).
    pub(crate) db_url: String,
    database: Option<String>,
    postgres: String,
    _dir: Option<TempDir>,
}

impl Deployment {
    fn targets(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.ws.clone()).collect()
    }
    fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(Server::pid).collect()
    }
    fn auth(&self) -> Auth {
        if self.creds.is_some() { Auth::ServerApi } else { Auth::Floor }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.servers.clear();
        if let Some(db) = &self.database {
            let _ = psql(&self.postgres, "postgres", &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
        }
    }
}

/// A directory removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn psql(server: &str, db: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .arg(format!("{server}/{db}"))
        .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

pub(crate) struct Env {
    pub(crate) natter: PathBuf,
    pub(crate) postgres: String,
    pub(crate) nats: String,
    /// Settings every node of this environment starts with (`NATTER_…` variables).
    pub(crate) extra: Vec<(String, String)>,
}

impl Env {
    pub(crate) fn new(natter_bin: Option<&PathBuf>, postgres: &str, nats: &str) -> anyhow::Result<Env> {
        let natter = match natter_bin {
            Some(p) => p.clone(),
            None => std::env::current_exe()?.with_file_name("natter"),
        };
        if !natter.exists() {
            bail!("{} not found; build it (cargo build --release) or pass --natter-bin", natter.display());
        }
        Ok(Env {
            natter,
            postgres: postgres.trim_end_matches('/').to_string(),
            nats: nats.to_string(),
            extra: Vec::new(),
        })
    }
}

fn natter_env(cmd: &mut Command, env: &Env, db: &str, nats: &str, prefix: &str) {
    cmd.envs(env.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd.env("NATTER_DATABASE__URL", db)
        .env("NATTER_NATS__URL", nats)
        .env("NATTER_NATS__PREFIX", prefix)
        .env("NATTER_HTTP__BIND", "127.0.0.1:0")
        .env("NATTER_HTTP__ADMIN_BIND", "127.0.0.1:0")
        .env("NATTER_LOG__FORMAT", "json")
        .env("NATTER_LOG__LEVEL", "warn,natter::server=info")
        // The harness, not the per-socket abuse limits, is what is being measured.
        .env("NATTER_WS__MESSAGES_PER_SECOND", "1000000")
        .env("NATTER_WS__MESSAGE_BURST", "1000000")
        .env("NATTER_WS__OUTBOUND_QUEUE", "4096")
        .env("NATTER_DATABASE__MAX_CONNECTIONS", "16")
        .env_remove("DATABASE_URL")
        .env_remove("NATS_URL")
        .env_remove("NATTER_ENV");
}

pub(crate) fn create_app(env: &Env, db: &str) -> anyhow::Result<(String, String)> {
    let mut cmd = Command::new(&env.natter);
    natter_env(&mut cmd, env, db, "", "x");
    let out = cmd.args(["app", "create", "--id", "loadtest", "--name", "Load test", "--json"]).output()?;
    if !out.status.success() {
        bail!("natter app create: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("natter app create --json output")?;
    Ok((
        v["api_key"].as_str().context("no api_key")?.to_string(),
        v["api_secret"].as_str().context("no api_secret")?.to_string(),
    ))
}

pub(crate) fn start_natter(env: &Env, db: &str, nats: &str, prefix: &str) -> anyhow::Result<Server> {
    let mut cmd = Command::new(&env.natter);
    natter_env(&mut cmd, env, db, nats, prefix);
    cmd.arg("serve");
    let (child, addr) = natter::launch::serve(&mut cmd, "natter", Duration::from_secs(60))?;
    Ok(Server { child, ws: format!("ws://{addr}/ws") })
}

fn start_floor() -> anyhow::Result<Server> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["floor", "--bind", "127.0.0.1:0", "--announce"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("floor stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let v: Value = serde_json::from_str(&line).context("floor announcement")?;
    let addr = v["floor"].as_str().context("floor address")?;
    Ok(Server { ws: format!("ws://{addr}/ws"), child })
}

pub(crate) fn unique() -> String {
    hex::encode(rand::random::<[u8; 4]>())
}

fn floor() -> anyhow::Result<Deployment> {
    floor_of(1)
}

/// `processes` floor servers side by side (the harness spreads its users over them as over nodes).
fn floor_of(processes: usize) -> anyhow::Result<Deployment> {
    Ok(Deployment {
        name: if processes == 1 { "floor".into() } else { format!("floor, {processes} processes") },
        servers: (0..processes).map(|_| start_floor()).collect::<anyhow::Result<_>>()?,
        creds: None,
        db_url: String::new(),
        database: None,
        postgres: String::new(),
        _dir: None,
    })
}

pub(crate) fn embedded(env: &Env) -> anyhow::Result<Deployment> {
    let dir = std::env::temp_dir().join(format!("natter-lt-{}", unique()));
    std::fs::create_dir_all(&dir)?;
    let db = format!("sqlite://{}/natter.db", dir.display());
    let creds = create_app(env, &db)?;
    let server = start_natter(env, &db, "", "natter")?;
    Ok(Deployment {
        name: "natter embedded (SQLite)".into(),
        servers: vec![server],
        creds: Some(creds),
        db_url: db,
        database: None,
        postgres: String::new(),
        _dir: Some(TempDir(dir)),
    })
}

pub(crate) fn cluster(env: &Env, nodes: usize) -> anyhow::Result<Deployment> {
    let name = format!("natter_lt_{}", unique());
    psql(&env.postgres, "postgres", &format!("CREATE DATABASE {name}"))?;
    let mut d = Deployment {
        name: format!("natter cluster, {nodes} node{}", if nodes == 1 { "" } else { "s" }),
        servers: Vec::new(),
        creds: None,
        db_url: format!("{}/{name}", env.postgres),
        database: Some(name.clone()),
        postgres: env.postgres.clone(),
        _dir: None,
    };
    let db = format!("{}/{name}", env.postgres);
    d.creds = Some(create_app(env, &db)?);
    let prefix = format!("lt{}", unique());
    for _ in 0..nodes {
        d.servers.push(start_natter(env, &db, &env.nats, &prefix)?);
    }
    Ok(d)
}

pub(crate) fn base_args(d: &Deployment, scenario: Scenario) -> RunArgs {
    RunArgs {
        scenario,
        targets: d.targets(),
        auth: d.auth(),
        app_key: d.creds.as_ref().map(|c| c.0.clone()),
        app_secret: d.creds.as_ref().map(|c| c.1.clone()),
        users: 0,
        pairs: 1,
        groups: 1,
        group_size: 2,
        senders: 1,
        rate: 0.0,
        mix: "dm=50,group=50".into(),
        duration: 5.0,
        message_bytes: 64,
        connect_rate: 0.0,
        connect_concurrency: 64,
        settle: 1.5,
        source_ips: "4".into(),
        procs: 1,
        server_pids: d.pids(),
        server_metrics: Vec::new(),
        tls_ca: None,
        thresholds: Vec::new(),
        out: None,
        drain: 10.0,
        run_id: None,
        quiet: true,
    }
}

#[derive(Serialize)]
struct Row {
    section: u8,
    what: String,
    summary: Option<Summary>,
    extra: Value,
}

struct Results {
    rows: Vec<Row>,
    md: String,
    t: Targets,
}

/// The figures the performance targets are judged on, gathered as the sections run.
#[derive(Default)]
struct Targets {
    floor_kib: Option<f64>,
    natter_kib: Option<f64>,
    floor_p99: Option<f64>,
    floor_cpu: Option<f64>,
    one_node: Option<(f64, f64, f64)>,
    /// Medians of each round's p99 over that round's floor: one node at 100 msg/s, embedded at
    /// 100 msg/s, one node at 50 msg/s.
    one_node_ratio: Option<f64>,
    embedded_ratio: Option<f64>,
    half_rate_ratio: Option<f64>,
    three_nodes_p99: Option<f64>,
    pgbench_tps: Option<f64>,
    pg_max: Option<f64>,
    /// The median of each round's saturated rate over that round's pgbench.
    pg_ratio: Option<f64>,
    pg_half_p99: Option<f64>,
    sqlite_max: Option<f64>,
    big: Option<(u64, f64, f64)>,
    /// The room of 10,000: % delivered, p99 over the floor's, CPU per delivery over the floor's.
    room: Option<(f64, f64, f64)>,
    /// The storm's reconnect + sync p99 (the larger of the two), natter's and the floor's medians.
    storm: Option<(f64, f64)>,
}

impl Targets {
    fn table(&self) -> String {
        let mut out = String::from("## Targets\n\n| # | target | figure | ratio | met |\n|---|---|---|---|---|\n");
        let mut row = |n: &str, what: &str, figure: String, ratio: Option<f64>, limit: f64, at_most: bool| {
            let met = match ratio {
                Some(r) if at_most => {
                    if r <= limit {
                        "yes"
                    } else {
                        "no"
                    }
                }
                Some(r) => {
                    if r >= limit {
                        "yes"
                    } else {
                        "no"
                    }
                }
                None => "not measured",
            };
            let r = ratio.map_or("–".to_string(), |r| format!("{r:.2}"));
            out.push_str(&format!("| {n} | {what} | {figure} | {r} | {met} |\n"));
        };
        let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        row(
            "1",
            "idle memory per connection ≤ 1.15 × floor",
            format!("natter {:.2} KiB, floor {:.2} KiB", self.natter_kib.unwrap_or(0.0), self.floor_kib.unwrap_or(0.0)),
            div(self.natter_kib, self.floor_kib),
            1.15,
            true,
        );
        let (p99, cpu, pct) = self.one_node.unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        row(
            "2a",
            "1,000-member group at 100 msg/s, cluster 1 node: 100 % delivered",
            format!("{pct:.2} %"),
            self.one_node.map(|_| pct / 100.0),
            1.0,
            false,
        );
        row(
            "2b",
            "… p99 ≤ 1.5 × floor",
            format!("{p99:.2} ms vs floor {:.2} ms", self.floor_p99.unwrap_or(0.0)),
            self.one_node_ratio,
            1.5,
            true,
        );
        row(
            "2d",
            "… embedded (SQLite): p99 ≤ 1.5 × floor",
            "median of each round's ratio".into(),
            self.embedded_ratio,
            1.5,
            true,
        );
        row(
            "2e",
            "same group at 50 msg/s, cluster 1 node: p99 ≤ 1.3 × floor",
            "median of each round's ratio".into(),
            self.half_rate_ratio,
            1.3,
            true,
        );
        row(
            "2c",
            "… server CPU per delivery ≤ 1.3 × floor",
            format!("{cpu:.2} µs vs floor {:.2} µs", self.floor_cpu.unwrap_or(0.0)),
            div(self.one_node.map(|o| o.1), self.floor_cpu),
            1.3,
            true,
        );
        row(
            "3",
            "3 nodes p99 ≤ 1.3 × 1 node",
            format!("{:.2} ms vs {p99:.2} ms", self.three_nodes_p99.unwrap_or(0.0)),
            div(self.three_nodes_p99, self.one_node.map(|o| o.0)),
            1.3,
            true,
        );
        row(
            "4a",
            "DM acked msg/s on PostgreSQL ≥ 2 × pgbench (naive SQL)",
            format!("{:.0}/s vs pgbench {:.0}/s", self.pg_max.unwrap_or(0.0), self.pgbench_tps.unwrap_or(0.0)),
            self.pg_ratio.or(div(self.pg_max, self.pgbench_tps)),
            2.0,
            false,
        );
        row(
            "4b",
            "DM ack p99 ≤ 20 ms at half the maximum",
            format!("{:.2} ms", self.pg_half_p99.unwrap_or(0.0)),
            self.pg_half_p99.map(|p| p / 20.0),
            1.0,
            true,
        );
        row(
            "4c",
            "embedded SQLite ≥ 10,000 acked msg/s",
            format!("{:.0}/s", self.sqlite_max.unwrap_or(0.0)),
            self.sqlite_max.map(|m| m / 10_000.0),
            1.0,
            false,
        );
        let (storm, storm_floor) = self.storm.unwrap_or((f64::NAN, f64::NAN));
        row(
            "4d",
            "reconnect storm (60,000 over 4 nodes): reconnect + sync p99 ≤ 3 s",
            format!("{storm:.0} ms (the floor's {storm_floor:.0} ms)"),
            self.storm.map(|_| storm / 3_000.0),
            1.0,
            true,
        );
        let (room_pct, room_p99, room_cpu) = self.room.unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        row(
            "6a",
            "10,000-member room over 4 nodes at 10 msg/s: 100 % delivered",
            format!("{room_pct:.2} %"),
            self.room.map(|_| room_pct / 100.0),
            1.0,
            false,
        );
        row("6b", "… p99 ≤ 1.5 × floor", format!("{room_p99:.2}× floor"), self.room.map(|_| room_p99), 1.5, true);
        row(
            "6c",
            "… server CPU per delivery ≤ 1.3 × floor",
            format!("{room_cpu:.2}× floor"),
            self.room.map(|_| room_cpu),
            1.3,
            true,
        );
        let (n, rate, cpu20k) = self.big.unwrap_or((0, f64::NAN, f64::NAN));
        row(
            "5a",
            "100,000 connections over 6 nodes: connect rate ≥ 5,000/s",
            format!("{n} connected at {rate:.0}/s"),
            self.big.map(|_| rate / 5_000.0),
            1.0,
            false,
        );
        row(
            "5b",
            "… idle CPU ≤ 10 % of a core per 20,000 connections",
            format!("{cpu20k:.2} % per 20,000"),
            self.big.map(|_| cpu20k / 10.0),
            1.0,
            true,
        );
        out.push_str("\nRatios are figure / (floor, peer or limit); \"met\" compares them with the target.\n\n");
        out
    }
}

impl Results {
    fn push(&mut self, section: u8, what: &str, summary: Option<Summary>, extra: Value) {
        self.rows.push(Row { section, what: what.to_string(), summary, extra });
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() { format!("{:.2}×", a / b) } else { "–".into() }
}

pub(crate) async fn scenario(args: RunArgs, label: &str) -> anyhow::Result<Summary> {
    eprintln!("── {label}");
    let s = run::run(&args).await.with_context(|| label.to_string())?;
    eprint!("{}", s.table());
    Ok(s)
}

pub async fn run(args: &SuiteArgs) -> anyhow::Result<bool> {
    let started = Instant::now();
    let machine = CpuTimes::now();
    let env = Env::new(args.natter_bin.as_ref(), &args.postgres, &args.nats)?;
    let want = |n: u8| args.only.is_empty() || args.only.contains(&n);
    let q = args.quick;
    let mut results = Results { rows: Vec::new(), md: String::new(), t: Targets::default() };
    let date = today();
    results.md.push_str(&format!(
        "# Natter load-test suite, {date}\n\nOne run of `natter-loadtest suite{}` on this machine ({} cores). Every row shows how busy the whole machine was during it (all cores, from /proc/stat): a busy machine means noisy figures. Ratios compare with the floor (a minimal tokio-tungstenite server with no auth and no storage) or with pgbench, measured in the same run.\n\n",
        if q { " --quick" } else { "" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    let mut ok = true;

    if want(1) {
        let n = if q { 1_000 } else { 10_000 };
        results.md.push_str(&format!("## 1. Idle memory per connection ({n} connections)\n\n| server | connected | RSS before → after (MiB) | KiB per connection | vs floor | connects/s | connect p99 ms | machine busy |\n|---|---|---|---|---|---|---|---|\n"));
        let mut floor_kib = 0.0;
        for which in ["floor", "embedded", "cluster-1"] {
            let d = match which {
                "floor" => floor()?,
                "embedded" => embedded(&env)?,
                _ => cluster(&env, 1)?,
            };
            let mut a = base_args(&d, Scenario::Connect);
            a.users = n;
            a.duration = 2.0;
            let s = scenario(a, &format!("1. idle {n}: {}", d.name)).await?;
            ok &= s.passed;
            if which == "floor" {
                floor_kib = s.rss_per_connection_kib;
                results.t.floor_kib = Some(s.rss_per_connection_kib);
            }
            if which == "cluster-1" {
                results.t.natter_kib = Some(s.rss_per_connection_kib);
            }
            let f = s.servers.first().cloned().unwrap_or_default();
            results.md.push_str(&format!(
                "| {} | {} | {:.1} → {:.1} | {:.2} | {} | {:.0} | {:.1} | {:.0}% |\n",
                d.name,
                s.counts.connected,
                f.rss_baseline_kib as f64 / 1024.0,
                f.rss_loaded_kib as f64 / 1024.0,
                s.rss_per_connection_kib,
                ratio(s.rss_per_connection_kib, floor_kib),
                s.connect_rate_per_s,
                s.connect.p99_ms,
                s.machine_busy_pct
            ));
            results.push(1, &format!("idle {n}: {}", d.name), Some(s), Value::Null);
        }
        results.md.push('\n');
    }

    if want(2) {
        let members = if q { 100 } else { 1_000 };
        let repeat = args.repeat.unwrap_or(if q { 1 } else { 5 }).max(1);
        results.md.push_str(&format!(
            "## 2. One group of {members} members, one sender\n\n{repeat} interleaved run(s) per row (floor, embedded, one node, three nodes, floor, …): median (min–max); ratios are each run's figure over the floor's of the same round.\n\n| server | msg/s | delivered | p50 ms | p99 ms | p99 vs floor | server CPU µs/delivery | vs floor | machine busy |\n|---|---|---|---|---|---|---|---|---|\n"
        ));
        let deployments = [floor()?, embedded(&env)?, cluster(&env, 1)?, cluster(&env, 3)?];
        for rate in [50.0, 100.0] {
            // runs[deployment][round]
            let mut runs: Vec<Vec<Summary>> = vec![Vec::new(); deployments.len()];
            for round in 0..repeat {
                for (i, d) in deployments.iter().enumerate() {
                    let mut a = base_args(d, Scenario::Group);
                    a.group_size = members;
                    a.rate = rate;
                    a.duration = if q { 3.0 } else { 8.0 };
                    let label = format!("2. group {members} @ {rate}/s: {} (run {}/{repeat})", d.name, round + 1);
                    let s = scenario(a, &label).await?;
                    ok &= s.passed;
                    results.push(2, &label[3..], Some(s.clone()), Value::Null);
                    runs[i].push(s);
                }
            }
            let floor_runs = &runs[0];
            for (i, d) in deployments.iter().enumerate() {
                let mine = &runs[i];
                let p99 = Spread::of(&mine.iter().map(|s| s.delivery.p99_ms).collect::<Vec<_>>());
                let p50 = Spread::of(&mine.iter().map(|s| s.delivery.p50_ms).collect::<Vec<_>>());
                let cpu = Spread::of(&mine.iter().map(|s| s.cpu_us_per_delivery).collect::<Vec<_>>());
                let busy = Spread::of(&mine.iter().map(|s| s.machine_busy_traffic_pct).collect::<Vec<_>>());
                let per_round = |f: fn(&Summary) -> f64| {
                    mine.iter()
                        .zip(floor_runs)
                        .map(|(m, fl)| if f(fl) > 0.0 { f(m) / f(fl) } else { f64::NAN })
                        .collect::<Vec<_>>()
                };
                let p99_ratio = Spread::of(&per_round(|s| s.delivery.p99_ms));
                let cpu_ratio = Spread::of(&per_round(|s| s.cpu_us_per_delivery));
                let delivered: u64 = mine.iter().map(|s| s.counts.delivered).sum();
                let expected: u64 = mine.iter().map(|s| s.counts.expected).sum();
                let pct = if expected > 0 { 100.0 * delivered as f64 / expected as f64 } else { 0.0 };
                if rate >= 100.0 {
                    match i {
                        0 => {
                            results.t.floor_p99 = Some(p99.median);
                            results.t.floor_cpu = Some(cpu.median);
                        }
                        1 => results.t.embedded_ratio = Some(p99_ratio.median),
                        2 => {
                            results.t.one_node = Some((p99.median, cpu.median, pct));
                            results.t.one_node_ratio = Some(p99_ratio.median);
                        }
                        3 => results.t.three_nodes_p99 = Some(p99.median),
                        _ => {}
                    }
                } else if i == 2 {
                    results.t.half_rate_ratio = Some(p99_ratio.median);
                }
                results.md.push_str(&format!(
                    "| {} | {rate:.0} | {delivered}/{expected} ({pct:.2}%) | {} | {} | {}× | {} | {}× | {}% |\n",
                    d.name,
                    p50.show(2),
                    p99.show(2),
                    p99_ratio.show(2),
                    cpu.show(2),
                    cpu_ratio.show(2),
                    busy.show(0),
                ));
            }
        }
        results.md.push('\n');
    }

    if want(3) {
        ok &= dm_throughput(&env, q, args.repeat, &mut results).await?;
    }

    if want(4) {
        let n = if q { 4_000 } else { 60_000 };
        let repeat = args.repeat.unwrap_or(if q { 1 } else { 5 }).max(1);
        results.md.push_str(&format!(
            "## 4. {n} idle authenticated connections over 4 processes, then a reconnect storm\n\nEveryone closes and reconnects at once, then asks `sync`. {repeat} interleaved run(s) per row (floor, natter, floor, …): median (min–max). The floor is four floor processes (no auth, no storage, a `sync` answered empty), so its figures are what this machine's harness and kernel allow at all.\n\n| server | phase | connections | per second | p50 ms | p99 ms | sync p99 ms | max ms | failed | attempts retried | refused for room | node RSS growth KiB/conn | machine busy |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        ));
        let (runs, names) = against_floor(&env, 4, 4, repeat, &mut results, &mut ok, |d, round| {
            let mut a = base_args(d, Scenario::Reconnect);
            a.users = n;
            a.procs = 4;
            a.source_ips = "16".into();
            a.connect_concurrency = 128;
            (a, format!("4. {n} connections over 4 processes, reconnect storm: {} (run {round}/{repeat})", d.name))
        })
        .await?;
        for (i, mine) in runs.iter().enumerate() {
            let of = |f: fn(&Summary) -> f64| Spread::of(&mine.iter().map(f).collect::<Vec<_>>());
            let sum = |f: fn(&Summary) -> u64| mine.iter().map(f).sum::<u64>();
            let connect = [
                names[i].clone(),
                "connect".into(),
                of(|s| s.counts.connected as f64).show(0),
                of(|s| s.connect_rate_per_s).show(0),
                of(|s| s.connect.p50_ms).show(0),
                of(|s| s.connect.p99_ms).show(0),
                "–".into(),
                of(|s| s.connect.max_ms).show(0),
                sum(|s| s.counts.connect_failed).to_string(),
                "–".into(),
                "–".into(),
                of(|s| s.rss_per_connection_kib).show(2),
                format!("{}%", of(|s| s.machine_busy_pct).show(0)),
            ];
            let storm = [
                names[i].clone(),
                "reconnect + sync".into(),
                of(|s| s.reconnect.count as f64).show(0),
                of(|s| s.reconnect_rate_per_s).show(0),
                of(|s| s.reconnect.p50_ms).show(0),
                of(|s| s.reconnect.p99_ms).show(0),
                of(|s| s.sync.p99_ms).show(0),
                of(|s| s.reconnect.max_ms).show(0),
                sum(|s| s.counts.connect_failed).to_string(),
                sum(|s| s.counts.connect_retries).to_string(),
                sum(|s| s.counts.connect_backpressure).to_string(),
                "–".into(),
                format!("{}%", of(|s| s.machine_busy_traffic_pct).show(0)),
            ];
            for row in [connect, storm] {
                results.md.push_str(&format!("| {} |\n", row.join(" | ")));
            }
        }
        let storm_p99 = |r: &[Summary]| {
            Spread::of(&r.iter().map(|s| s.reconnect.p99_ms.max(s.sync.p99_ms)).collect::<Vec<_>>()).median
        };
        results.t.storm = Some((storm_p99(&runs[1]), storm_p99(&runs[0])));
        let mut causes = [0u64; crate::stats::FailCause::COUNT];
        for s in &runs[1] {
            for (all, n) in causes.iter_mut().zip(s.counts.connect_fail_causes) {
                *all += n;
            }
        }
        results.md.push_str(&format!(
            "\nNatter's failed connect attempts by cause, all runs (first connects and the storms): {}.\n\n",
            crate::stats::FailCause::describe(&causes)
        ));
    }

    if want(5) {
        let n = if q { 6_000 } else { 100_000 };
        let repeat = args.repeat.unwrap_or(if q { 1 } else { 5 }).max(1);
        let (settle, hold) = if q { (3.0, 5.0) } else { (20.0, 30.0) };
        results.md.push_str(&format!("## 5. {n} idle authenticated connections over 6 nodes\n\n{repeat} interleaved run(s) (floor, natter, floor, …): median (min–max). The floor is six floor processes; its connect rate is what this machine's harness and kernel allow at all. Idle CPU is measured over a {hold:.0} s hold that starts {settle:.0} s after the last connection (when the connects' presence writes have drained), so it spans a whole heartbeat interval.\n\n| server | connected | failed | per second | p50 ms | p99 ms | node RSS growth KiB/conn | idle CPU, % of a core per 20,000 | machine busy |\n|---|---|---|---|---|---|---|---|---|\n"));
        let (runs, names) = against_floor(&env, 5, 6, repeat, &mut results, &mut ok, |d, round| {
            let mut a = base_args(d, Scenario::Connect);
            a.users = n;
            a.procs = 6;
            a.source_ips = "16".into();
            a.connect_concurrency = 128;
            // Idle means after the connects' own work (each user's presence transaction) has
            // drained, and over more than one heartbeat interval (25 s), so every socket is
            // pinged. The floor has no idle work: only its connects are compared.
            (a.settle, a.duration) = if d.creds.is_none() { (1.0, 2.0) } else { (settle, hold) };
            (a, format!("5. {n} connections over 6 processes: {} (run {round}/{repeat})", d.name))
        })
        .await?;
        // The hold phase is the "traffic" phase of a connect run: no messages, only heartbeats.
        let per_20k = |s: &Summary| s.server_cpu_pct_of_core * 20_000.0 / (s.counts.connected.max(1) as f64);
        for (i, mine) in runs.iter().enumerate() {
            let of = |f: &dyn Fn(&Summary) -> f64| Spread::of(&mine.iter().map(f).collect::<Vec<_>>());
            results.md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {}% |\n",
                names[i],
                of(&|s| s.counts.connected as f64).show(0),
                mine.iter().map(|s| s.counts.connect_failed).sum::<u64>(),
                of(&|s| s.connect_rate_per_s).show(0),
                of(&|s| s.connect.p50_ms).show(2),
                of(&|s| s.connect.p99_ms).show(2),
                of(&|s| s.rss_per_connection_kib).show(2),
                if i == 0 { "–".into() } else { of(&per_20k).show(2) },
                of(&|s| s.machine_busy_pct).show(0),
            ));
        }
        results.md.push('\n');
        let natter = &runs[1];
        let connected = natter.iter().map(|s| s.counts.connected).min().unwrap_or(0);
        let rate = Spread::of(&natter.iter().map(|s| s.connect_rate_per_s).collect::<Vec<_>>()).median;
        let idle = Spread::of(&natter.iter().map(per_20k).collect::<Vec<_>>()).median;
        results.t.big = Some((connected, rate, idle));
    }
    if want(6) {
        ok &= room(&env, q, args.repeat, &mut results).await?;
    }
    results.md.push_str(&results.t.table());

    results.md.push_str(&format!(
        "Suite time {:.0} s; machine busy {:.0}% over the whole suite.\n",
        started.elapsed().as_secs_f64(),
        CpuTimes::now().busy_pct_since(&machine)
    ));
    std::fs::create_dir_all(&args.out_dir)?;
    let stem = if q { format!("{date}-quick") } else { date.clone() };
    let md_path = args.out_dir.join(format!("{stem}.md"));
    let json_path = args.out_dir.join(format!("{stem}.json"));
    std::fs::write(&md_path, &results.md)?;
    std::fs::write(&json_path, serde_json::to_vec_pretty(&results.rows)?)?;
    println!("{}", results.md);
    println!("wrote {} and {}", md_path.display(), json_path.display());
    Ok(ok)
}

/// Runs `repeat` rounds of (`processes` floor processes, then a cluster of as many nodes), each
/// deployment fresh per run (a run leaves presence and sessions the next must not inherit);
/// `args` makes a run's arguments and label; its rows go to `section`. The floor's runs and natter's, with their names.
async fn against_floor(
    env: &Env,
    section: u8,
    processes: usize,
    repeat: usize,
    results: &mut Results,
    ok: &mut bool,
    args: impl Fn(&Deployment, usize) -> (RunArgs, String),
) -> anyhow::Result<([Vec<Summary>; 2], [String; 2])> {
    let mut runs: [Vec<Summary>; 2] = [Vec::new(), Vec::new()];
    let mut names = [String::new(), String::new()];
    for round in 1..=repeat {
        for (i, runs) in runs.iter_mut().enumerate() {
            let d = if i == 0 { floor_of(processes)? } else { cluster(env, processes)? };
            names[i] = d.name.clone();
            let (a, label) = args(&d, round);
            let s = scenario(a, &label).await?;
            *ok &= s.passed;
            results.push(section, &label[3..], Some(s.clone()), Value::Null);
            runs.push(s);
        }
    }
    Ok((runs, names))
}

/// Section 6: one room of 10,000 members spread over 4 nodes, one sender at 10 msg/s (100,000
/// deliveries a second), interleaved with the floor holding the same 10,000 connections.
async fn room(env: &Env, q: bool, repeat: Option<usize>, results: &mut Results) -> anyhow::Result<bool> {
    let members = if q { 1_000 } else { 10_000 };
    let rate = 10.0;
    let repeat = repeat.unwrap_or(if q { 1 } else { 5 }).max(1);
    let mut ok = true;
    results.md.push_str(&format!(
        "## 6. A room of {members} members over 4 nodes, one sender at {rate:.0} msg/s\n\n{repeat} interleaved run(s) per row (floor, natter, floor, …): median (min–max); ratios are each run's figure over the floor's of the same round. The floor is one process holding every connection.\n\n| server | delivered | deliveries/s | p50 ms | p99 ms | p99 vs floor | server CPU µs/delivery | vs floor | machine busy |\n|---|---|---|---|---|---|---|---|---|\n"
    ));
    let deployments = [floor()?, cluster(env, 4)?];
    let mut runs: Vec<Vec<Summary>> = vec![Vec::new(); deployments.len()];
    for round in 0..repeat {
        for (i, d) in deployments.iter().enumerate() {
            let mut a = base_args(d, Scenario::Group);
            a.group_size = members;
            a.rate = rate;
            a.procs = 4;
            a.duration = if q { 3.0 } else { 10.0 };
            let label = format!("6. room of {members} @ {rate}/s: {} (run {}/{repeat})", d.name, round + 1);
            let s = scenario(a, &label).await?;
            ok &= s.passed;
            results.push(6, &label[3..], Some(s.clone()), Value::Null);
            runs[i].push(s);
        }
    }
    for (i, d) in deployments.iter().enumerate() {
        let mine = &runs[i];
        let of = |f: fn(&Summary) -> f64| Spread::of(&mine.iter().map(f).collect::<Vec<_>>());
        let per_round = |f: fn(&Summary) -> f64| {
            Spread::of(
                &mine
                    .iter()
                    .zip(&runs[0])
                    .map(|(m, fl)| if f(fl) > 0.0 { f(m) / f(fl) } else { f64::NAN })
                    .collect::<Vec<_>>(),
            )
        };
        let delivered: u64 = mine.iter().map(|s| s.counts.delivered).sum();
        let expected: u64 = mine.iter().map(|s| s.counts.expected).sum();
        let pct = if expected > 0 { 100.0 * delivered as f64 / expected as f64 } else { 0.0 };
        let p99_ratio = per_round(|s| s.delivery.p99_ms);
        let cpu_ratio = per_round(|s| s.cpu_us_per_delivery);
        if i == 1 {
            results.t.room = Some((pct, p99_ratio.median, cpu_ratio.median));
        }
        results.md.push_str(&format!(
            "| {} | {delivered}/{expected} ({pct:.2}%) | {} | {} | {} | {}× | {} | {}× | {}% |\n",
            d.name,
            of(|s| s.delivered_per_s).show(0),
            of(|s| s.delivery.p50_ms).show(2),
            of(|s| s.delivery.p99_ms).show(2),
            p99_ratio.show(2),
            of(|s| s.cpu_us_per_delivery).show(2),
            cpu_ratio.show(2),
            of(|s| s.machine_busy_traffic_pct).show(0),
        ));
    }
    results.md.push('\n');
    Ok(ok)
}

/// Section 3: DM throughput on PostgreSQL to saturation, beside pgbench running the naive
/// per-message SQL on the same server.
async fn dm_throughput(env: &Env, q: bool, repeat: Option<usize>, results: &mut Results) -> anyhow::Result<bool> {
    let pairs = if q { 20 } else { 100 };
    let secs = if q { 3.0 } else { 8.0 };
    let repeat = repeat.unwrap_or(if q { 1 } else { 5 }).max(1);
    results.md.push_str(&format!("## 3. DM throughput on PostgreSQL ({pairs} pairs, one cluster node)\n\n{repeat} interleaved round(s) (pgbench, natter saturated, natter at half its maximum, embedded SQLite saturated, pgbench, …): median (min–max); the ratio is each round's figure over that round's pgbench.\n\n| what | offered msg/s | acked msg/s | vs pgbench | ack p50 ms | ack p99 ms | lost | machine busy |\n|---|---|---|---|---|---|---|---|\n"));
    let mut ok = true;
    let (mut pgs, mut maxes, mut halves, mut lites) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=repeat {
        let pg = pgbench(env, pairs, secs)?;
        // A fresh node and database per round: a round's backlog must not slow the next.
        let d = cluster(env, 1)?;
        // Saturation: offer three times what pgbench managed; what is acked per second is the
        // maximum.
        let max =
            saturate(&d, pairs, (pg.tps * 3.0).max(1000.0), q, &format!("3. DM saturation (round {round}/{repeat})"))
                .await?;
        ok &= max.counts.lost == 0;
        results.push(
            3,
            &format!("DM saturation (round {round}/{repeat})"),
            Some(max.clone()),
            serde_json::json!({"pgbench_tps": pg.tps, "pgbench_clients": pg.clients}),
        );
        let mut a = base_args(&d, Scenario::Dm);
        a.pairs = pairs;
        a.rate = (max.acked_per_s / 2.0).max(1.0);
        a.duration = secs;
        let half = scenario(a, &format!("3. DM at half the maximum (round {round}/{repeat})")).await?;
        ok &= half.passed;
        results.push(3, &format!("DM at half the maximum (round {round}/{repeat})"), Some(half.clone()), Value::Null);
        drop(d);
        // Embedded: the same saturation against SQLite.
        let e = embedded(env)?;
        let offered = if q { 5_000.0 } else { 15_000.0 };
        let lite =
            saturate(&e, pairs, offered, q, &format!("3. DM saturation, embedded SQLite (round {round}/{repeat})"))
                .await?;
        ok &= lite.counts.lost == 0;
        results.push(
            3,
            &format!("DM saturation, embedded SQLite (round {round}/{repeat})"),
            Some(lite.clone()),
            Value::Null,
        );
        pgs.push(pg);
        maxes.push(max);
        halves.push(half);
        lites.push(lite);
    }
    let spread = |v: Vec<f64>| Spread::of(&v);
    let pg_tps = spread(pgs.iter().map(|p| p.tps).collect());
    results.md.push_str(&format!(
        "| pgbench, one transaction per message ({} clients) | – | {} | 1.00× | {} | – | – | {}% |\n",
        pgs.first().map_or(0, |p| p.clients),
        pg_tps.show(0),
        spread(pgs.iter().map(|p| p.latency_ms).collect()).show(2),
        spread(pgs.iter().map(|p| p.busy).collect()).show(0),
    ));
    let mut line = |what: &str, runs: &[Summary], vs_pgbench: bool| {
        let of = |f: fn(&Summary) -> f64| spread(runs.iter().map(f).collect());
        let vs = if vs_pgbench {
            format!("{}×", spread(runs.iter().zip(&pgs).map(|(s, p)| s.acked_per_s / p.tps).collect()).show(2))
        } else {
            "–".into()
        };
        results.md.push_str(&format!(
            "| {what} | {} | {} | {vs} | {} | {} | {} | {}% |\n",
            of(|s| s.sent_per_s).show(0),
            of(|s| s.acked_per_s).show(0),
            of(|s| s.ack.p50_ms).show(2),
            of(|s| s.ack.p99_ms).show(2),
            runs.iter().map(|s| s.counts.lost).sum::<u64>(),
            of(|s| s.machine_busy_traffic_pct).show(0),
        ));
    };
    line("natter, saturated", &maxes, true);
    line("natter, 50% of maximum", &halves, true);
    line("natter embedded (SQLite), saturated", &lites, false);
    results.md.push('\n');
    results.t.pgbench_tps = Some(pg_tps.median);
    results.t.pg_max = Some(spread(maxes.iter().map(|s| s.acked_per_s).collect()).median);
    results.t.pg_ratio = Some(spread(maxes.iter().zip(&pgs).map(|(s, p)| s.acked_per_s / p.tps).collect()).median);
    results.t.pg_half_p99 = Some(spread(halves.iter().map(|s| s.ack.p99_ms).collect()).median);
    results.t.sqlite_max = Some(spread(lites.iter().map(|s| s.acked_per_s).collect()).median);
    Ok(ok)
}

/// DMs offered at `rate` (more than `d` can take): what it acks per second is its maximum.
/// Short, because the backlog of an open model drains at the server's pace.
async fn saturate(d: &Deployment, pairs: usize, rate: f64, q: bool, label: &str) -> anyhow::Result<Summary> {
    let mut a = base_args(d, Scenario::Dm);
    a.pairs = pairs;
    a.rate = rate;
    a.duration = if q { 2.0 } else { 4.0 };
    a.drain = 30.0;
    scenario(a, label).await
}

struct PgBench {
    tps: f64,
    latency_ms: f64,
    clients: usize,
    busy: f64,
}

/// The SQL one DM costs Natter, as one transaction per message (what a naive server does).
fn pgbench_script() -> &'static str {
    "\\set pair random(1, :pairs)\n\
     \\set n random(1, 2000000000)\n\
     BEGIN;\n\
     UPDATE conversations SET last_seq = last_seq + 1 WHERE app_id = 'bench' AND id = 'dm_' || :pair RETURNING last_seq AS seq \\gset\n\
     SELECT id, seq, created_at FROM messages WHERE app_id = 'bench' AND conversation_id = 'dm_' || :pair AND sender_key = :pair AND client_msg_id = 'c' || :client_id || '-' || :n;\n\
     INSERT INTO messages (app_id, conversation_id, seq, id, sender_key, recipient_key, client_msg_id, kind, content, meta, created_at) \
     VALUES ('bench', 'dm_' || :pair, :seq, md5(random()::text), :pair, :pair + 1000000, 'c' || :client_id || '-' || :n, NULL, repeat('x', 64), NULL, (extract(epoch from now()) * 1000)::bigint);\n\
     END;\n"
}

fn pgbench(env: &Env, pairs: usize, secs: f64) -> anyhow::Result<PgBench> {
    let name = format!("natter_pgbench_{}", unique());
    psql(&env.postgres, "postgres", &format!("CREATE DATABASE {name}"))?;
    let db = format!("{}/{name}", env.postgres);
    let result = (|| {
        // The same schema Natter runs on.
        let out = Command::new(&env.natter)
            .env("NATTER_DATABASE__URL", &db)
            .env_remove("DATABASE_URL")
            .env("NATTER_LOG__LEVEL", "warn")
            .arg("migrate")
            .output()?;
        if !out.status.success() {
            bail!("natter migrate: {}", String::from_utf8_lossy(&out.stderr));
        }
        psql(
            &env.postgres,
            &name,
            &format!(
                "INSERT INTO conversations (app_id, id, kind, created_by, last_seq, created_at) \
                 SELECT 'bench', 'dm_' || i, 'direct', i, 0, 0 FROM generate_series(1, {pairs}) i"
            ),
        )?;
        let script = std::env::temp_dir().join(format!("{name}.sql"));
        std::fs::write(&script, pgbench_script())?;
        // As many clients as Natter's pool has connections.
        let clients = 16;
        let before = CpuTimes::now();
        let out = Command::new("pgbench")
            .args(["-n", "-c", &clients.to_string(), "-j", "2", "-T", &format!("{}", secs.ceil() as u64)])
            .args(["-D", &format!("pairs={pairs}"), "-f"])
            .arg(&script)
            .arg(&db)
            .output()
            .context("running pgbench")?;
        let busy = CpuTimes::now().busy_pct_since(&before);
        let _ = std::fs::remove_file(&script);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            bail!("pgbench: {}{}", text, String::from_utf8_lossy(&out.stderr));
        }
        let tps = pick(&text, "tps = ").context("pgbench printed no tps")?;
        let latency_ms = pick(&text, "latency average = ").unwrap_or(0.0);
        eprintln!("── 3. pgbench: {tps:.0} tps, latency average {latency_ms:.2} ms ({clients} clients)");
        Ok(PgBench { tps, latency_ms, clients, busy })
    })();
    let _ = psql(&env.postgres, "postgres", &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    result
}

fn pick(text: &str, after: &str) -> Option<f64> {
    let rest = &text[text.find(after)? + after.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

fn today() -> String {
    // Civil date from unix days (Howard Hinnant's algorithm): no date crate for one string.
    let days =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_output_is_read() {
        let text = "latency average = 1.234 ms\ninitial connection time = 3.1 ms\ntps = 812.5 (without initial connection time)\n";
        assert_eq!(pick(text, "tps = "), Some(812.5));
        assert_eq!(pick(text, "latency average = "), Some(1.234));
        assert_eq!(pick(text, "nothing"), None);
    }

    #[test]
    fn a_spread_is_the_median_and_the_extremes() {
        let s = Spread::of(&[3.0, 1.0, 2.0, f64::NAN, 10.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert_eq!(Spread::of(&[4.0]).show(1), "4.0");
        assert_eq!(Spread::of(&[1.0, 2.0, 9.0]).show(1), "2.0 (1.0–9.0)");
        assert!(Spread::of(&[]).median.is_nan());
    }

    #[test]
    fn today_is_a_date() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }
}
