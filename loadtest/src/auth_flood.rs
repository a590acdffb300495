//! Logins during a registration flood: `flood` connections register accounts back to back (each
//! costs an argon2id hash) while one client logs in to an existing account at a steady pace. The
//! figure is the login latency; registrations the server refused (429) and failed are counted.
//! Run it against a node whose app allows the registrations (`registrations_per_hour`), so the
//! password hasher, not the per-IP limit, is what the flood meets.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::json;

#[derive(clap::Args)]
pub struct AuthFloodArgs {
    /// The node, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    /// Connections registering at once.
    #[arg(long, default_value_t = 100)]
    pub flood: usize,
    /// Seconds the flood lasts.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// How long a flooding connection waits after a 429 before its next try, in milliseconds
    /// (0: a hostile flood that ignores "retry in 1 s"; 1000: one that honours it).
    #[arg(long, default_value_t = 0)]
    pub backoff_ms: u64,
    /// Pause between two logins of the measuring client, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub login_every_ms: u64,
}

/// Outcome of one run.
#[derive(Debug, serde::Serialize)]
pub struct AuthFlood {
    pub logins: u64,
    pub login_failures: u64,
    /// Failed logins by HTTP status (0: no answer).
    pub login_failure_statuses: std::collections::BTreeMap<u16, u64>,
    pub login_p50_ms: f64,
    pub login_p99_ms: f64,
    pub login_max_ms: f64,
    pub registrations: u64,
    pub registrations_refused_429: u64,
    pub registrations_failed: u64,
}

pub async fn run(args: &AuthFloodArgs) -> anyhow::Result<AuthFlood> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.flood + 4).build()?;
    let base = args.url.trim_end_matches('/').to_string();
    let tag = format!("{:x}", rand::random::<u32>());
    let email = format!("flood-login-{tag}@example.com");
    let password = "flood measuring password";
    let res = http
        .post(format!("{base}/v1/auth/register"))
        .json(&json!({"email": email, "password": password, "first_name": "L", "last_name": "M"}))
        .send()
        .await
        .context("registering the measuring account")?;
    anyhow::ensure!(res.status().as_u16() == 201, "registering the measuring account: {}", res.status());

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, refused, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut flooders = Vec::new();
    let backoff = Duration::from_millis(args.backoff_ms);
    for c in 0..args.flood {
        let (http, base, stop) = (http.clone(), base.clone(), stop.clone());
        let (ok, refused, failed, tag) = (ok.clone(), refused.clone(), failed.clone(), tag.clone());
        flooders.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = json!({
                    "email": format!("flood-{tag}-{c}-{i}@example.com"),
                    "password": "flood password one",
                    "first_name": "F",
                    "last_name": "L",
                });
                match http.post(format!("{base}/v1/auth/register")).json(&body).send().await {
                    Ok(r) if r.status().as_u16() == 201 => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) if r.status().as_u16() == 429 => {
                        tokio::time::sleep(backoff).await;
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    let mut latencies = crate::stats::histogram()?;
    let (mut logins, mut login_failures) = (0u64, 0u64);
    let mut login_failure_statuses = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    // Let the flood fill the queues before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while Instant::now() < deadline {
        let started = Instant::now();
        let res = http
            .post(format!("{base}/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await;
        let took = started.elapsed();
        match res {
            Ok(r) if r.status().is_success() => {
                logins += 1;
                latencies.record(took.as_micros() as u64)?;
            }
            other => {
                login_failures += 1;
                let status = other.map_or(0, |r| r.status().as_u16());
                *login_failure_statuses.entry(status).or_insert(0) += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(args.login_every_ms)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        let _ = f.await;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(AuthFlood {
        logins,
        login_failures,
        login_failure_statuses,
        login_p50_ms: ms(latencies.value_at_quantile(0.5)),
        login_p99_ms: ms(latencies.value_at_quantile(0.99)),
        login_max_ms: ms(latencies.max()),
        registrations: ok.load(Ordering::Relaxed),
        registrations_refused_429: refused.load(Ordering::Relaxed),
        registrations_failed: failed.load(Ordering::Relaxed),
    })
}
