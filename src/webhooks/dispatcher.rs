//! The webhook dispatcher: one actor per node that claims due outbox rows and delivers them.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use actix::{Actor, ActorFutureExt, AsyncContext, Context, WrapFuture};

use super::{Outcome, attempt, backoff, target::Clients};
use crate::{
    config::WebhooksConfig,
    domain::AppId,
    store::{Store, apps::AppRecord, outbox::OutboxRow},
};

pub struct Dispatcher {
    node_id: Arc<str>,
    store: Store,
    clients: Clients,
    config: Arc<WebhooksConfig>,
    /// Deliveries under way. Each runs as its own task, so one slow endpoint never holds up the
    /// others; new events are claimed only while there is room.
    in_flight: Arc<AtomicUsize>,
    claiming: bool,
}

impl Dispatcher {
    pub fn new(node_id: &str, store: Store, clients: Clients, config: WebhooksConfig) -> Self {
        Self {
            node_id: Arc::from(node_id),
            store,
            clients,
            config: Arc::new(config),
            in_flight: Arc::new(AtomicUsize::new(0)),
            claiming: false,
        }
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(std::time::Duration::from_millis(self.config.poll_ms), |act, ctx| {
            let room = act.config.batch.saturating_sub(act.in_flight.load(Ordering::Relaxed));
            if act.claiming || room == 0 {
                return;
            }
            act.claiming = true;
            let (node, store, clients, config, in_flight) = (
                act.node_id.clone(),
                act.store.clone(),
                act.clients.clone(),
                act.config.clone(),
                act.in_flight.clone(),
            );
            // Detached, so a stopping actor never drops a claim mid-transaction.
            let claim =
                actix_rt::spawn(async move { claim_and_start(&node, store, clients, config, in_flight, room).await });
            ctx.spawn(claim.into_actor(act).map(|_, act, _| act.claiming = false));
        });
        let store = self.store.clone();
        ctx.run_interval(std::time::Duration::from_secs(5), move |_, _| {
            let store = store.clone();
            actix_rt::spawn(async move {
                if let Ok(counts) = store.webhook_counts().await {
                    for (status, n) in counts {
                        metrics::gauge!("natter_webhook_outbox", "status" => status).set(n as f64);
                    }
                }
            });
        });
    }
}

/// Claims up to `room` due events and starts a delivery task for each.
async fn claim_and_start(
    node: &str,
    store: Store,
    clients: Clients,
    config: Arc<WebhooksConfig>,
    in_flight: Arc<AtomicUsize>,
    room: usize,
) {
    let now = crate::domain::now_millis();
    let rows = match store.claim_webhooks(node, now, config.claim_ms as i64, room as i64).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "claiming webhook events failed");
            return;
        }
    };
    let mut apps: HashMap<String, Option<Arc<AppRecord>>> = HashMap::new();
    for row in rows {
        if !apps.contains_key(&row.app_id) {
            let app = match AppId::parse(row.app_id.clone()) {
                Ok(id) => store.app(&id).await.ok().flatten().map(Arc::new),
                Err(_) => None,
            };
            apps.insert(row.app_id.clone(), app);
        }
        let app = apps.get(&row.app_id).cloned().flatten();
        let (store, clients, config, in_flight) = (store.clone(), clients.clone(), config.clone(), in_flight.clone());
        in_flight.fetch_add(1, Ordering::Relaxed);
        actix_rt::spawn(async move {
            deliver(&store, &clients, &config, &row, app.as_deref()).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn deliver(store: &Store, clients: &Clients, config: &WebhooksConfig, row: &OutboxRow, app: Option<&AppRecord>) {
    let attempts = row.attempts + 1;
    let result = |r: &'static str| {
        metrics::counter!("natter_webhook_deliveries_total", "event" => row.event.clone(), "result" => r).increment(1);
    };
    let Some(app) = app.filter(|a| !a.settings.webhook_url.is_empty()) else {
        result("dead");
        let _ = store.webhook_dead(&row.id, row.attempts, "webhooks are off for this app").await;
        return;
    };
    if store.endpoint_disabled(&row.app_id, &app.settings.webhook_url).await.unwrap_or(false) {
        result("dead");
        let _ = store.webhook_dead(&row.id, row.attempts, "endpoint disabled after 410 Gone").await;
        return;
    }
    let started = Instant::now();
    let outcome = attempt(clients, &app.settings, config, (&row.id, &row.event), &row.payload).await;
    metrics::histogram!("natter_webhook_duration_seconds").record(started.elapsed().as_secs_f64());
    let stored = match outcome {
        Outcome::Delivered => {
            result("delivered");
            store.webhook_delivered(&row.id, attempts).await
        }
        Outcome::Skipped => {
            result("skipped");
            store.webhook_delivered(&row.id, attempts).await
        }
        Outcome::Retry(why) => match backoff(&config.retry_schedule_ms, attempts as usize) {
            Some(delay) => {
                result("retry");
                let at = crate::domain::now_millis() + delay.as_millis() as i64;
                store.webhook_retry_later(&row.id, attempts, at, &why).await
            }
            None => {
                result("dead");
                tracing::warn!(event = %row.id, error = %why, "webhook retries exhausted; dead-lettered");
                store.webhook_dead(&row.id, attempts, &why).await
            }
        },
        Outcome::Fail(why) => {
            result("dead");
            tracing::warn!(event = %row.id, error = %why, "webhook failed for good; dead-lettered");
            store.webhook_dead(&row.id, attempts, &why).await
        }
        Outcome::Gone => {
            result("gone");
            tracing::warn!(app = %row.app_id, "webhook endpoint answered 410 Gone; disabled");
            let _ = store.disable_endpoint(&row.app_id, &app.settings.webhook_url, "410 Gone").await;
            store.webhook_dead(&row.id, attempts, "410 Gone").await
        }
    };
    if let Err(e) = stored {
        // The claim expires and another attempt follows; delivery stays at-least-once.
        tracing::warn!(event = %row.id, error = %e, "recording a webhook outcome failed");
    }
}
