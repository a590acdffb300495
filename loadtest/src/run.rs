//! The coordinator of one scenario: provisions the plan, starts the worker processes, shows
//! progress every second, drains, merges what the workers measured and judges the run.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use crate::conn::unix_micros;
use crate::plan::{self, AppCredentials, Auth, Plan, Provisioner, Scenario, Shape};
use crate::procfs::{CpuTimes, ServerWatch, Source};
use crate::report::{Summary, Threshold};
use crate::stats::{Counts, Hists, Latency};
use crate::worker::{Event, Order};

#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct RunArgs {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Comma-separated WebSocket URLs; connections are spread over them.
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:8080/ws")]
    pub targets: Vec<String>,
    /// How users get tokens.
    #[arg(long, value_enum, default_value = "server-api")]
    pub auth: Auth,
    #[arg(long, env = "LOADTEST_APP_KEY")]
    pub app_key: Option<String>,
    #[arg(long, env = "LOADTEST_APP_SECRET", hide_env_values = true)]
    #[serde(skip)]
    pub app_secret: Option<String>,
    /// Connections (connect, reconnect).
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// DM pairs (dm, mixed): one user of each pair sends to the other.
    #[arg(long, default_value_t = 50)]
    pub pairs: usize,
    /// Groups (group, mixed).
    #[arg(long, default_value_t = 1)]
    pub groups: usize,
    /// Members per group.
    #[arg(long, default_value_t = 100)]
    pub group_size: usize,
    /// Group senders in all (each a member of one group).
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Messages per second over all senders (open model).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Mixed weights, e.g. `dm=70,group=30`.
    #[arg(long, default_value = "dm=50,group=50")]
    pub mix: String,
    /// Seconds of traffic (or of holding idle connections).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Bytes of message content.
    #[arg(long, default_value_t = 64)]
    pub message_bytes: usize,
    /// New connections per second over all workers; 0 = as fast as they complete.
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Connection attempts in flight per worker process.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Seconds between the last connection and the traffic (or hold) phase: work the servers
    /// still have queued from the connects (presence writes, subscriptions) lands here, not in
    /// the traffic figures. Server memory is read at its end.
    #[arg(long, default_value_t = 1.5)]
    pub settle: f64,
    /// Loopback source addresses to connect from: a count (`16` = 127.0.0.1..=127.0.0.16) or a
    /// comma-separated list.
    #[arg(long, default_value = "1")]
    pub source_ips: String,
    /// Worker processes (one holds at most ~19,900 sockets here).
    #[arg(long, default_value_t = 1)]
    pub procs: usize,
    /// Server processes to sample (RSS, CPU); repeatable.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Servers to sample through their Prometheus endpoint (the admin listener's `/metrics`,
    /// e.g. `http://10.0.0.5:9090/metrics`) when they are not local processes; repeatable.
    /// Memory is exact; CPU comes in whole seconds (an integer counter), so prefer
    /// `--server-pid` for runs of a few seconds.
    #[arg(long = "server-metrics")]
    pub server_metrics: Vec<String>,
    /// A PEM CA to trust for `wss://` targets and `https://` calls besides the system's roots
    /// (a test certificate, a private CA).
    #[arg(long)]
    pub tls_ca: Option<String>,
    /// e.g. `delivery_p99_ms<25`; repeatable; any failing threshold fails the run.
    #[arg(long = "threshold")]
    pub thresholds: Vec<String>,
    /// Write the JSON summary here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seconds to wait, after the last reply, for deliveries still in flight.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Prefix of user and group ids (default: a fresh one per run).
    #[arg(long)]
    pub run_id: Option<String>,
    /// No table on stdout (the JSON summary is still written).
    #[arg(long)]
    pub quiet: bool,
}

pub fn source_ips(spec: &str) -> anyhow::Result<Vec<IpAddr>> {
    if let Ok(n) = spec.trim().parse::<u8>() {
        if n == 0 {
            bail!("--source-ips: at least 1");
        }
        return Ok((1..=n).map(|i| IpAddr::from([127, 0, 0, i])).collect());
    }
    spec.split(',')
        .map(|s| s.trim().parse().with_context(|| format!("--source-ips: {s:?} is not an address")))
        .collect()
}

fn mix_weights(spec: &str) -> anyhow::Result<(f64, f64)> {
    let (mut dm, mut group) = (0.0, 0.0);
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').with_context(|| format!("--mix: {part:?} is not NAME=WEIGHT"))?;
        let v: f64 = v.trim().parse().with_context(|| format!("--mix: {v:?} is not a number"))?;
        match k.trim() {
            "dm" => dm = v,
            "group" => group = v,
            other => bail!("--mix: unknown kind {other:?} (dm, group)"),
        }
    }
    Ok((dm, group))
}

/// Progress output: an indicatif line on a terminal, a plain line a second otherwise (CI logs).
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new() -> Progress {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        });
        Progress { bar }
    }

    pub fn show(&self, line: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_message(line.to_string());
                bar.tick();
            }
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
}

async fn order(workers: &mut [Worker], o: &Order) -> anyhow::Result<()> {
    let line = format!("{}\n", serde_json::to_string(o)?);
    for w in workers.iter_mut() {
        w.stdin.write_all(line.as_bytes()).await.context("a worker went away")?;
        w.stdin.flush().await?;
    }
    Ok(())
}

/// What the coordinator knows of the workers at any moment.
struct Board {
    latest: Vec<Counts>,
    window: Hists,
    ready: usize,
    sent_done: usize,
    finals: usize,
    finished: Vec<bool>,
    /// Connect-phase histograms (the windows before every worker was ready).
    phase1: Hists,
    sent_done_at: Option<Instant>,
    acked_seqs: std::collections::HashMap<usize, (String, u64)>,
    totals: Hists,
    final_counts: Vec<Counts>,
}

impl Board {
    fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for w in &self.latest {
            c.add(w);
        }
        c
    }

    fn apply(&mut self, i: usize, event: Event) -> anyhow::Result<()> {
        match event {
            Event::Tick { counts, window } => {
                self.latest[i] = counts;
                self.window.add_wire(&window)?;
                if self.ready < self.latest.len() {
                    self.phase1.add_wire(&window)?;
                }
            }
            Event::Ready { counts, window } => {
                self.latest[i] = counts;
                self.window.add_wire(&window)?;
                self.phase1.add_wire(&window)?;
                self.ready += 1;
            }
            Event::SentDone { counts, acked } => {
                self.latest[i] = counts;
                self.sent_done += 1;
                self.sent_done_at = Some(Instant::now());
                for (conv, id, seq) in acked {
                    let e = self.acked_seqs.entry(conv).or_insert((id, 0));
                    e.1 = e.1.max(seq);
                }
            }
            Event::Final { counts, hists } => {
                self.latest[i] = counts;
                self.final_counts[i] = counts;
                self.totals.add_wire(&hists)?;
                self.finals += 1;
                self.finished[i] = true;
            }
            Event::Failed { error } => bail!("worker {i} failed: {error}"),
        }
        Ok(())
    }
}

struct Display {
    progress: Progress,
    began: Instant,
    last: Counts,
    last_at: Instant,
}

impl Display {
    fn line(&mut self, phase: &str, board: &mut Board, users: usize) -> anyhow::Result<Point> {
        let c = board.counts();
        let dt = self.last_at.elapsed().as_secs_f64().max(1e-3);
        let per = |now: u64, before: u64| (now.saturating_sub(before)) as f64 / dt;
        let (name, l) = if !board.window.delivery.is_empty() {
            ("delivery", Latency::of(&board.window.delivery))
        } else if !board.window.ack.is_empty() {
            ("ack", Latency::of(&board.window.ack))
        } else if !board.window.sync.is_empty() {
            ("sync", Latency::of(&board.window.sync))
        } else {
            ("connect", Latency::of(&board.window.connect))
        };
        let point = Point {
            t_s: self.began.elapsed().as_secs_f64(),
            phase: phase.to_string(),
            connected: c.connected.saturating_sub(c.disconnected),
            sent_per_s: per(c.sent, self.last.sent),
            acked_per_s: per(c.acked, self.last.acked),
            delivered_per_s: per(c.delivered, self.last.delivered),
            errors: c.errors + c.connect_failed + c.ack_errors,
            latency: name,
            p50_ms: l.p50_ms,
            p99_ms: l.p99_ms,
            server_rss_kib: Vec::new(),
            server_cpu_s: Vec::new(),
        };
        self.progress.show(&format!(
            "[{:>5.1}s] {phase:<8} connected {}/{users} | sent {:.0}/s acked {:.0}/s delivered {:.0}/s | errors {} | {name} p50 {:.2} ms p99 {:.2} ms",
            point.t_s,
            point.connected,
            point.sent_per_s,
            point.acked_per_s,
            point.delivered_per_s,
            point.errors,
            l.p50_ms,
            l.p99_ms
        ));
        board.window = Hists::new()?;
        self.last = c;
        self.last_at = Instant::now();
        Ok(point)
    }
}

/// Runs one scenario and returns its judged summary.
pub async fn run(args: &RunArgs) -> anyhow::Result<Summary> {
    if args.targets.is_empty() {
        bail!("--targets: at least one");
    }
    if args.procs == 0 {
        bail!("--procs: at least 1");
    }
    let thresholds: Vec<Threshold> = args.thresholds.iter().map(|t| Threshold::parse(t)).collect::<Result<_, _>>()?;
    let known = empty_summary(args).metrics();
    for t in &thresholds {
        t.check_known(&known)?;
    }
    let floor = args.auth == Auth::Floor;
    let run_id = args.run_id.clone().unwrap_or_else(|| format!("lt{}", hex::encode(rand::random::<[u8; 4]>())));
    let (dm_weight, group_weight) = mix_weights(&args.mix)?;
    let shape = Shape {
        scenario: args.scenario,
        users: args.users,
        pairs: args.pairs,
        groups: args.groups,
        group_size: args.group_size,
        senders: args.senders,
        rate: args.rate,
        dm_weight,
        group_weight,
    };
    let (mut users, convs, senders) = plan::shape(&shape, &run_id)?;
    let progress = Progress::new();
    let creds = match (&args.app_key, &args.app_secret) {
        (Some(key), Some(secret)) => Some(AppCredentials { key: key.clone(), secret: secret.clone() }),
        _ => None,
    };
    let provisioner = Provisioner::new(args.auth, plan::http_base(&args.targets[0])?, creds, args.tls_ca.as_deref())?;
    let total = users.len();
    let last_shown = std::sync::Mutex::new(Instant::now());
    provisioner
        .provision(&mut users, &convs, &|done| {
            if let Ok(mut last) = last_shown.lock()
                && (last.elapsed() >= Duration::from_secs(1) || done == total)
            {
                *last = Instant::now();
                progress.show(&format!("provisioning users {done}/{total}"));
            }
        })
        .await?;
    let plan = Plan {
        scenario: args.scenario,
        floor,
        targets: args.targets.clone(),
        source_ips: source_ips(&args.source_ips)?,
        users,
        convs,
        senders,
        duration_secs: args.duration,
        message_bytes: args.message_bytes.max(24),
        connect_rate: args.connect_rate,
        connect_concurrency: args.connect_concurrency,
        tls_ca: args.tls_ca.clone(),
        tls: None,
    };
    let plan_file = std::env::temp_dir().join(format!("natter-loadtest-{run_id}.json"));
    std::fs::write(&plan_file, serde_json::to_vec(&plan)?).context("writing the plan")?;
    let result = coordinate(args, &plan, &plan_file, progress, &thresholds).await;
    let _ = std::fs::remove_file(&plan_file);
    result
}

fn empty_summary(args: &RunArgs) -> Summary {
    Summary {
        scenario: args.scenario,
        floor: args.auth == Auth::Floor,
        targets: args.targets.clone(),
        procs: args.procs,
        users: 0,
        duration_s: args.duration,
        counts: Counts::default(),
        connect: Latency::default(),
        ack: Latency::default(),
        delivery: Latency::default(),
        sync: Latency::default(),
        reconnect: Latency::default(),
        reconnect_rate_per_s: 0.0,
        connect_elapsed_s: 0.0,
        connect_rate_per_s: 0.0,
        traffic_elapsed_s: 0.0,
        sent_per_s: 0.0,
        acked_per_s: 0.0,
        delivered_per_s: 0.0,
        delivered_pct: 0.0,
        servers: Vec::new(),
        rss_per_connection_kib: 0.0,
        cpu_us_per_delivery: 0.0,
        server_cpu_pct_of_core: 0.0,
        machine_busy_pct: 0.0,
        machine_busy_traffic_pct: 0.0,
        thresholds: Vec::new(),
        passed: false,
        failures: Vec::new(),
        stamp: crate::stamp::Stamp::default(),
    }
}

async fn coordinate(
    args: &RunArgs,
    plan: &Plan,
    plan_file: &std::path::Path,
    progress: Progress,
    thresholds: &[Threshold],
) -> anyhow::Result<Summary> {
    let exe = std::env::current_exe().context("locating natter-loadtest")?;
    let (events_tx, events) = mpsc::unbounded_channel::<(usize, anyhow::Result<Event>)>();
    let mut workers = Vec::new();
    let machine_start = CpuTimes::now();
    let sources = args
        .server_pids
        .iter()
        .map(|p| Source::Pid(*p))
        .chain(args.server_metrics.iter().map(|u| Source::Metrics(u.clone())))
        .collect();
    let watch = ServerWatch::start(sources);
    let started_at = unix_micros() / 1_000_000;
    for i in 0..args.procs {
        let mut child = tokio::process::Command::new(&exe)
            .arg("worker")
            .arg("--plan")
            .arg(plan_file)
            .arg("--index")
            .arg(i.to_string())
            .arg("--count")
            .arg(args.procs.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let tx = events_tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        let _ =
                            tx.send((i, serde_json::from_str(&line).with_context(|| format!("worker said {line:?}"))));
                    }
                    Ok(None) => {
                        let _ = tx.send((i, Err(anyhow::anyhow!("worker {i} exited"))));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send((i, Err(e.into())));
                        return;
                    }
                }
            }
        });
        workers.push(Worker { child, stdin });
    }
    drop(events_tx);
    let n = args.procs;
    let board = Board {
        latest: vec![Counts::default(); n],
        window: Hists::new()?,
        ready: 0,
        sent_done: 0,
        finals: 0,
        finished: vec![false; n],
        phase1: Hists::new()?,
        sent_done_at: None,
        acked_seqs: Default::default(),
        totals: Hists::new()?,
        final_counts: vec![Counts::default(); n],
    };
    let began = Instant::now();
    let users = plan.users.len();
    let mut live = Live {
        events,
        board,
        every: tokio::time::interval(Duration::from_secs(1)),
        display: Display { progress, began, last: Counts::default(), last_at: began },
        watch,
        users,
        series: Vec::new(),
    };

    // Phase 1: every worker connects its share.
    live.wait_until("connect", |b| b.ready == n).await?;
    let connect_elapsed = began.elapsed().as_secs_f64();
    // Let the servers settle before reading their memory.
    tokio::time::sleep(Duration::from_secs_f64(args.settle.max(0.0))).await;
    live.watch.loaded();
    let connected_at_load = live.board.counts().connected;

    // Phase 2: traffic from the same instant in every worker.
    let traffic_machine = CpuTimes::now();
    live.watch.traffic_started();
    let at_unix_ms = unix_micros() / 1000 + 300;
    order(&mut workers, &Order::Go { at_unix_ms }).await?;
    let traffic_began = Instant::now() + Duration::from_millis(300);
    let messaging = matches!(plan.scenario, Scenario::Dm | Scenario::Group | Scenario::Mixed);
    if messaging {
        live.wait_until("traffic", |b| b.sent_done == n).await?;
        // Drain: until every expected delivery arrived, nothing arrives for 2 s, or --drain.
        let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain);
        let mut last_delivered = live.board.counts().delivered;
        let mut quiet_since = Instant::now();
        while Instant::now() < drain_deadline {
            let c = live.board.counts();
            if c.delivered >= c.expected || quiet_since.elapsed() > Duration::from_secs(2) {
                break;
            }
            if c.delivered != last_delivered {
                last_delivered = c.delivered;
                quiet_since = Instant::now();
            }
            live.next("drain").await?;
        }
    }
    if !messaging {
        live.wait_until("hold", |b| b.finals == n).await?;
    }
    let traffic_elapsed = Instant::now().saturating_duration_since(traffic_began).as_secs_f64();
    live.watch.traffic_ended();
    let traffic_busy = CpuTimes::now().busy_pct_since(&traffic_machine);
    let live_delivered = live.board.counts().delivered;
    if messaging {
        let convs: Vec<(usize, String, u64)> =
            live.board.acked_seqs.iter().map(|(k, (id, seq))| (*k, id.clone(), *seq)).collect();
        order(&mut workers, &Order::Check { convs }).await?;
    }
    live.wait_until("check", |b| b.finals == n).await?;
    for w in &mut workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w.child.wait()).await;
    }
    let Live { board, display, watch, series, .. } = live;
    display.progress.finish();

    let mut counts = Counts::default();
    for c in &board.final_counts {
        counts.add(c);
    }
    let servers = watch.finish();
    let mut s = empty_summary(args);
    s.users = users;
    s.counts = counts;
    s.connect = Latency::of(&board.phase1.connect);
    if plan.scenario == Scenario::Reconnect {
        // The workers restart their connect histogram at the storm.
        s.reconnect = Latency::of(&board.totals.connect);
        s.reconnect_rate_per_s = s.reconnect.count as f64 / traffic_elapsed.max(1e-3);
    }
    s.ack = Latency::of(&board.totals.ack);
    s.delivery = Latency::of(&board.totals.delivery);
    s.sync = Latency::of(&board.totals.sync);
    s.connect_elapsed_s = connect_elapsed;
    s.connect_rate_per_s = if connect_elapsed > 0.0 { connected_at_load as f64 / connect_elapsed } else { 0.0 };
    s.traffic_elapsed_s = traffic_elapsed;
    let secs = args.duration.max(1e-3);
    s.sent_per_s = counts.sent as f64 / secs;
    // Over the time the acks took to arrive, which exceeds the schedule when the server lags.
    let ack_secs =
        board.sent_done_at.map_or(secs, |t| t.saturating_duration_since(traffic_began).as_secs_f64().max(secs));
    s.acked_per_s = counts.acked as f64 / ack_secs;
    s.delivered_per_s = live_delivered as f64 / ack_secs;
    s.delivered_pct = if counts.expected > 0 { 100.0 * counts.delivered as f64 / counts.expected as f64 } else { 0.0 };
    let rss_growth: i64 = servers.iter().map(|f| f.rss_loaded_kib as i64 - f.rss_baseline_kib as i64).sum();
    if connected_at_load > 0 && !servers.is_empty() {
        s.rss_per_connection_kib = rss_growth as f64 / connected_at_load as f64;
    }
    let cpu: f64 = servers.iter().map(|f| f.cpu_traffic_s).sum();
    if live_delivered > 0 {
        s.cpu_us_per_delivery = cpu * 1e6 / live_delivered as f64;
    }
    s.server_cpu_pct_of_core = if traffic_elapsed > 0.0 { 100.0 * cpu / traffic_elapsed } else { 0.0 };
    s.servers = servers;
    s.machine_busy_pct = CpuTimes::now().busy_pct_since(&machine_start);
    s.machine_busy_traffic_pct = traffic_busy;
    s.stamp = crate::stamp::Stamp {
        harness_version: env!("CARGO_PKG_VERSION").to_string(),
        commit: crate::stamp::commit(),
        server_versions: s.servers.iter().filter_map(|f| f.version.clone()).collect(),
        machine: crate::stamp::Machine::here(),
        config: serde_json::to_value(args)?,
        started_at,
    };
    s.judge(thresholds);
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_vec_pretty(&s)?).with_context(|| format!("writing {}", path.display()))?;
        let lines: Vec<String> = series.iter().map(serde_json::to_string).collect::<Result<_, _>>()?;
        let series_path = series_path(path);
        std::fs::write(&series_path, lines.join("\n") + "\n")
            .with_context(|| format!("writing {}", series_path.display()))?;
    }
    Ok(s)
}

/// Where the per-second series of a summary goes: beside it, `<name>.series.jsonl`.
pub fn series_path(summary: &std::path::Path) -> PathBuf {
    summary.with_extension("series.jsonl")
}

/// One second of a run, as the progress line shows it, with the servers' readings.
#[derive(serde::Serialize, Debug)]
pub struct Point {
    pub t_s: f64,
    pub phase: String,
    pub connected: u64,
    pub sent_per_s: f64,
    pub acked_per_s: f64,
    pub delivered_per_s: f64,
    pub errors: u64,
    /// The latency the line shows: delivery, else ack, else sync, else connect.
    pub latency: &'static str,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Resident memory and CPU seconds of each sampled server.
    pub server_rss_kib: Vec<u64>,
    pub server_cpu_s: Vec<f64>,
}

/// The coordinator's view while workers run: their events, the merged board, and the
/// once-a-second progress line and server sampling.
struct Live {
    events: mpsc::UnboundedReceiver<(usize, anyhow::Result<Event>)>,
    board: Board,
    every: tokio::time::Interval,
    display: Display,
    watch: ServerWatch,
    users: usize,
    /// One point a second, written beside the summary.
    series: Vec<Point>,
}

impl Live {
    /// Takes the next worker event, or draws the progress line when a second has passed.
    async fn next(&mut self, phase: &str) -> anyhow::Result<()> {
        tokio::select! {
            e = self.events.recv() => match e {
                Some((i, Ok(event))) => self.board.apply(i, event),
                // A worker exits once it has reported its final figures.
                Some((i, Err(_))) if self.board.finished.get(i).copied().unwrap_or(false) => Ok(()),
                Some((_, Err(e))) => Err(e),
                None => bail!("every worker exited"),
            },
            _ = self.every.tick() => {
                let servers = self.watch.tick();
                let mut point = self.display.line(phase, &mut self.board, self.users)?;
                point.server_rss_kib = servers.iter().map(|s| s.rss_kib).collect();
                point.server_cpu_s = servers.iter().map(|s| s.cpu_s).collect();
                self.series.push(point);
                Ok(())
            }
        }
    }

    async fn wait_until(&mut self, phase: &str, done: impl Fn(&Board) -> bool) -> anyhow::Result<()> {
        while !done(&self.board) {
            self.next(phase).await?;
        }
        Ok(())
    }
}
