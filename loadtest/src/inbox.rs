//! The conversation list of a busy user: one user in `conversations` direct conversations (each
//! with a few messages, some unread, some replies and mentions), provisioned through the server
//! API; then `GET /v1/conversations` (the first page, and the whole list page by page) is timed
//! from `concurrency` clients. The figure is the request latency.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::plan::{AppCredentials, ServerApi};

#[derive(clap::Args)]
pub struct InboxArgs {
    /// The node, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    #[arg(long, env = "LOADTEST_APP_KEY")]
    pub app_key: String,
    #[arg(long, env = "LOADTEST_APP_SECRET")]
    pub app_secret: String,
    /// Direct conversations of the measured user.
    #[arg(long, default_value_t = 1000)]
    pub conversations: usize,
    /// Timed requests in all.
    #[arg(long, default_value_t = 400)]
    pub requests: usize,
    /// Clients requesting at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Conversations per page (the server's default is 50).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

#[derive(Debug, serde::Serialize)]
pub struct Inbox {
    pub conversations: usize,
    pub provision_s: f64,
    pub first_page_requests: u64,
    pub first_page_p50_ms: f64,
    pub first_page_p99_ms: f64,
    pub first_page_max_ms: f64,
    /// The whole list, page by page: how long a client takes to read all of it.
    pub whole_list_pages: usize,
    pub whole_list_ms: f64,
    pub failures: u64,
}

pub async fn run(args: &InboxArgs) -> anyhow::Result<Inbox> {
    let base = args.url.trim_end_matches('/').to_string();
    let api = ServerApi::new(
        base.clone(),
        AppCredentials { key: args.app_key.clone(), secret: args.app_secret.clone() },
        None,
    )?;
    let tag = format!("{:x}", rand::random::<u32>());
    let me = format!("inbox-{tag}");
    let started = Instant::now();
    api.call("POST", "/v1/server/users", &json!({"id": me})).await?;
    let token = api.call("POST", "/v1/server/users/token", &json!({"user_id": me})).await?["token"]
        .as_str()
        .context("no token")?
        .to_string();

    // Peers write to the user; the user answers every other one (so half are read, by sending).
    let peers: Vec<usize> = (0..args.conversations).collect();
    for chunk in peers.chunks(32) {
        let mut jobs = Vec::new();
        for &n in chunk {
            let (api, me, peer) = (&api, me.clone(), format!("inbox-{tag}-p{n}"));
            jobs.push(async move {
                api.call("POST", "/v1/server/users", &json!({"id": peer})).await?;
                for i in 0..3 {
                    let mut body = json!({"from": peer, "recipient": me, "content": format!("message {i} from {peer}"),
                        "client_msg_id": format!("p{i}")});
                    if i == 2 {
                        body["reply_to"] = json!(1);
                        body["mentions"] = json!([me]);
                    }
                    api.call("POST", "/v1/server/messages", &body).await?;
                }
                if n % 2 == 0 {
                    let body = json!({"from": me, "recipient": peer, "content": "answer", "client_msg_id": "me-1"});
                    api.call("POST", "/v1/server/messages", &body).await?;
                }
                anyhow::Ok(())
            });
        }
        for r in futures_util::future::join_all(jobs).await {
            r?;
        }
    }
    let provision_s = started.elapsed().as_secs_f64();

    // Bounded: every request gives up after 30 s, and the run after `requests` of them.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency + 2)
        .timeout(Duration::from_secs(30))
        .build()?;
    let first_page = format!("{base}/v1/conversations?limit={}", args.limit);
    // Warm the connections and the database's caches once.
    http.get(&first_page).bearer_auth(&token).send().await?.error_for_status()?;

    let per_client = args.requests.div_ceil(args.concurrency.max(1));
    let mut clients = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (http, url, token) = (http.clone(), first_page.clone(), token.clone());
        clients.push(tokio::spawn(async move {
            let mut took = Vec::with_capacity(per_client);
            let mut failures = 0u64;
            for _ in 0..per_client {
                let t = Instant::now();
                match http.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        took.push(t.elapsed());
                    }
                    _ => failures += 1,
                }
            }
            (took, failures)
        }));
    }
    let mut latencies = crate::stats::histogram()?;
    let mut failures = 0;
    for c in clients {
        let (took, failed) = c.await?;
        failures += failed;
        for d in took {
            latencies.record(d.as_micros().max(1) as u64)?;
        }
    }

    // The whole list, as a client that reads every page.
    let t = Instant::now();
    let (mut pages, mut seen) = (0, 0);
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/conversations?limit={}", args.limit);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: serde_json::Value =
            http.get(&url).bearer_auth(&token).send().await?.error_for_status()?.json().await?;
        pages += 1;
        seen += page["data"].as_array().map_or(0, Vec::len);
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        anyhow::ensure!(pages <= args.conversations + 1, "the list never ended");
    }
    anyhow::ensure!(seen == args.conversations, "the list held {seen} conversations, not {}", args.conversations);
    let whole = t.elapsed();

    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Inbox {
        conversations: args.conversations,
        provision_s,
        first_page_requests: latencies.len(),
        first_page_p50_ms: ms(latencies.value_at_quantile(0.5)),
        first_page_p99_ms: ms(latencies.value_at_quantile(0.99)),
        first_page_max_ms: ms(latencies.max()),
        whole_list_pages: pages,
        whole_list_ms: whole.as_secs_f64() * 1000.0,
        failures,
    })
}
