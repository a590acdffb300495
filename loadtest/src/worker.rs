//! A worker process: holds its share of the plan's connections (every `count`-th user), runs the
//! send schedules of its senders, and talks to the coordinator in JSON lines (events on stdout,
//! commands on stdin).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::conn::{AckedSeqs, Command, Connection, connect, unix_micros};
use crate::plan::{Plan, Scenario};
use crate::stats::{Counts, Kind, Recorder, WireHists, bump};

/// Worker → coordinator.
#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Tick {
        counts: Counts,
        window: WireHists,
    },
    Ready {
        counts: Counts,
        window: WireHists,
    },
    /// Sending is over and every reply is in (or timed out): the highest acked seq per
    /// conversation (plan index, server id, seq).
    SentDone {
        counts: Counts,
        acked: Vec<(usize, String, u64)>,
    },
    Final {
        counts: Counts,
        hists: WireHists,
    },
    Failed {
        error: String,
    },
}

/// Coordinator → worker.
#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Order {
    /// Start traffic at this unix time (ms), the same instant for every worker.
    Go { at_unix_ms: u64 },
    /// Account for these conversations' messages (after the drain).
    Check { convs: Vec<(usize, String, u64)> },
}

fn emit(event: &Event) {
    if let Ok(line) = serde_json::to_string(event) {
        println!("{line}");
    }
}

/// How long a worker waits for its last replies, and for the final check.
const REPLY_GRACE: Duration = Duration::from_secs(15);
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn run(plan_path: &str, index: usize, count: usize) -> anyhow::Result<()> {
    let mut plan: Plan =
        serde_json::from_slice(&std::fs::read(plan_path).with_context(|| format!("reading {plan_path}"))?)
            .context("plan file")?;
    if plan.targets.iter().any(|t| t.starts_with("wss://")) {
        plan.tls = Some(crate::tls::client_config(plan.tls_ca.as_deref())?);
    }
    let plan = Arc::new(plan);
    let rec = Arc::new(Recorder::new()?);
    let acked: AckedSeqs = Arc::default();
    let ticker = tokio::spawn(tick(rec.clone()));
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let result = drive(&plan, &rec, &acked, index, count, &mut stdin).await;
    ticker.abort();
    if let Err(e) = &result {
        emit(&Event::Failed { error: format!("{e:#}") });
    }
    result
}

async fn tick(rec: Arc<Recorder>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.tick().await;
    loop {
        every.tick().await;
        match rec.take_window() {
            Ok(window) => emit(&Event::Tick { counts: rec.counts(), window }),
            Err(e) => emit(&Event::Failed { error: format!("{e:#}") }),
        }
    }
}

async fn read_order(stdin: &mut tokio::io::Lines<BufReader<tokio::io::Stdin>>) -> anyhow::Result<Order> {
    let line = stdin.next_line().await?.context("the coordinator went away")?;
    serde_json::from_str(&line).with_context(|| format!("bad order {line:?}"))
}

async fn drive(
    plan: &Arc<Plan>,
    rec: &Arc<Recorder>,
    acked: &AckedSeqs,
    index: usize,
    count: usize,
    stdin: &mut tokio::io::Lines<BufReader<tokio::io::Stdin>>,
) -> anyhow::Result<()> {
    let mine: Vec<usize> = (0..plan.users.len()).filter(|u| u % count == index).collect();
    let connections = connect_all(plan, rec, acked, &mine, count).await;
    emit(&Event::Ready { counts: rec.counts(), window: rec.take_window()? });

    let Order::Go { at_unix_ms } = read_order(stdin).await? else { anyhow::bail!("expected go") };
    let start = Instant::now() + Duration::from_micros((at_unix_ms * 1000).saturating_sub(unix_micros()));
    tokio::time::sleep_until(start.into()).await;
    let duration = Duration::from_secs_f64(plan.duration_secs);

    match plan.scenario {
        Scenario::Connect => tokio::time::sleep_until((start + duration).into()).await,
        Scenario::Reconnect => {
            rec.restart_total(Kind::Connect)?;
            let waits: Vec<oneshot::Receiver<()>> = connections
                .iter()
                .filter_map(|(_, tx)| {
                    let (done, wait) = oneshot::channel();
                    tx.send(Command::Reconnect { done }).ok().map(|_| wait)
                })
                .collect();
            let _ = tokio::time::timeout(CHECK_TIMEOUT, futures_util::future::join_all(waits)).await;
        }
        Scenario::Dm | Scenario::Group | Scenario::Mixed => {
            send_schedules(plan, rec, &connections, at_unix_ms * 1000, start, duration).await;
            let deadline = Instant::now() + REPLY_GRACE;
            while Instant::now() < deadline {
                let c = rec.counts();
                if c.acked + c.ack_errors >= c.sent {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let c = rec.counts();
            // Replies that never came are errors, not silently dropped.
            bump(&rec.ack_errors, c.sent.saturating_sub(c.acked + c.ack_errors));
            let seqs: Vec<(usize, String, u64)> = match acked.lock() {
                Ok(m) => m.iter().map(|(k, (id, seq))| (*k, id.clone(), *seq)).collect(),
                Err(_) => Vec::new(),
            };
            emit(&Event::SentDone { counts: rec.counts(), acked: seqs });
            let Order::Check { convs } = read_order(stdin).await? else { anyhow::bail!("expected check") };
            let convs = Arc::new(convs);
            let waits: Vec<oneshot::Receiver<()>> = connections
                .iter()
                .filter_map(|(_, tx)| {
                    let (done, wait) = oneshot::channel();
                    tx.send(Command::Check { convs: convs.clone(), done }).ok().map(|_| wait)
                })
                .collect();
            if tokio::time::timeout(CHECK_TIMEOUT, futures_util::future::join_all(waits)).await.is_err() {
                bump(&rec.errors, 1);
            }
        }
    }
    emit(&Event::Final { counts: rec.counts(), hists: rec.totals()? });
    for (_, tx) in &connections {
        let _ = tx.send(Command::Close);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// Opens this worker's connections, at most `connect_concurrency` at a time and at this worker's
/// share of the plan's connect rate.
async fn connect_all(
    plan: &Arc<Plan>,
    rec: &Arc<Recorder>,
    acked: &AckedSeqs,
    mine: &[usize],
    count: usize,
) -> Vec<(usize, mpsc::UnboundedSender<Command>)> {
    let rate = plan.connect_rate / count as f64;
    let began = Instant::now();
    let attempts = futures_util::stream::iter(mine.iter().enumerate().map(|(n, user)| {
        let (plan, rec, acked) = (plan.clone(), rec.clone(), acked.clone());
        let user = *user;
        async move {
            if rate > 0.0 {
                tokio::time::sleep_until((began + Duration::from_secs_f64(n as f64 / rate)).into()).await;
            }
            bump(&rec.connect_attempts, 1);
            let started = Instant::now();
            match connect(&plan.url_of(user), plan.source_of(user), plan.tls.as_ref()).await {
                Ok(ws) => {
                    rec.record(Kind::Connect, started.elapsed().as_micros() as u64);
                    bump(&rec.connected, 1);
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(Connection::new(user, plan, rec, acked, ws).run(rx));
                    Some((user, tx))
                }
                Err(e) => {
                    if rec.connect_failed.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                        eprintln!("worker: first connect failure: {e}");
                    }
                    let _ = rec.failed_because(e.cause);
                    bump(&rec.connect_failed, 1);
                    None
                }
            }
        }
    }));
    attempts.buffer_unordered(plan.connect_concurrency.max(1)).filter_map(|c| async move { c }).collect().await
}

/// The open model: every sender's messages leave at their scheduled instants whether or not
/// earlier ones were answered, and latency is measured from that instant.
async fn send_schedules(
    plan: &Arc<Plan>,
    rec: &Arc<Recorder>,
    connections: &[(usize, mpsc::UnboundedSender<Command>)],
    start_us: u64,
    start: Instant,
    duration: Duration,
) {
    let by_user: std::collections::HashMap<usize, &mpsc::UnboundedSender<Command>> =
        connections.iter().map(|(u, tx)| (*u, tx)).collect();
    let mut tasks = Vec::new();
    for s in &plan.senders {
        let Some(tx) = by_user.get(&s.user) else { continue };
        if s.rate <= 0.0 {
            continue;
        }
        let (tx, conv, rate, phase, rec) = ((*tx).clone(), s.conv, s.rate, s.phase, rec.clone());
        tasks.push(tokio::spawn(async move {
            let mut k = 0u64;
            loop {
                let offset = Duration::from_secs_f64((phase + k as f64) / rate);
                if offset >= duration {
                    break;
                }
                tokio::time::sleep_until((start + offset).into()).await;
                let intended_us = start_us + offset.as_micros() as u64;
                // Counted here, not when the connection writes it, so that the wait for
                // replies cannot end while a message is still queued in the client.
                bump(&rec.sent, 1);
                if tx.send(Command::Send { conv, intended_us }).is_err() {
                    bump(&rec.ack_errors, 1);
                    break;
                }
                k += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
