//! Cluster-wide presence.
//!
//! The Router reports each user's first and last local session here. Reports are applied to the
//! store in order per user (sharded by user, so one user's connect can never overtake their
//! disconnect), and a transition the store confirms is published once on the user's presence
//! subject, which only nodes with a local watcher of that user subscribe to (a control-subject
//! broadcast would cost every node every transition in a connect storm). A lease keeper renews this
//! node's lease and reaps nodes that died without a goodbye.

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::{
    batching,
    domain::{AppId, UserKey, now_millis},
    fanout::Fanout,
    store::{
        Store,
        outbox::Hooks,
        presence::{Change, MAX_CHANGES},
        users::UserRecord,
    },
    wire::{Encode, Object, event_frame},
};

const SHARDS: usize = 2;

/// A user's presence as the API shows it.
#[derive(Debug, Serialize)]
pub struct PresenceView {
    pub user: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<i64>,
}

/// Cluster-wide presence of these users.
pub async fn presence_of(store: &Store, app: &AppId, users: &[UserRecord]) -> Result<Vec<PresenceView>, sqlx::Error> {
    let keys: Vec<UserKey> = users.iter().map(|u| u.key).collect();
    let online = store.online_users(app, &keys).await?;
    Ok(users
        .iter()
        .map(|u| {
            let on = online.contains(&u.key);
            PresenceView {
                user: u.id.clone(),
                status: if on { "online" } else { "offline" },
                last_seen: if on { None } else { u.last_seen_at },
            }
        })
        .collect())
}

enum Op {
    Report { app: AppId, user: UserKey, id: String, online: bool },
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Presence {
    shards: Arc<Vec<mpsc::UnboundedSender<Op>>>,
    /// The shard workers and the lease keeper, stopped before the runtime goes away so that no
    /// pooled connection is dropped outside it.
    tasks: Arc<std::sync::Mutex<Vec<actix_rt::task::JoinHandle<()>>>>,
}

struct Publisher {
    fanout: Fanout,
}

impl Publisher {
    fn transition(&self, app: &str, user: UserKey, id: &str, online: bool, at: i64) {
        struct PresenceEvent<'a> {
            user: &'a str,
            status: &'static str,
            last_seen: i64,
        }
        impl Encode for PresenceEvent<'_> {
            fn encode(&self, o: &mut Object<'_>) {
                o.str("user", self.user).str("status", self.status).int("last_seen", self.last_seen);
            }
        }
        let status = if online { "online" } else { "offline" };
        let frame = event_frame("presence", &PresenceEvent { user: id, status, last_seen: at });
        self.fanout.presence(app, user, online, frame.as_bytes());
        metrics::counter!("natter_presence_transitions_total", "status" => status).increment(1);
    }
}

/// Applies one shard's reports in batches (see [`batching`]): one transaction and a few
/// statements per batch, so a connect storm costs round trips per batch, not per user. One lane:
/// a user's reports stay in order, and a user seen twice ends the batch (the second report opens
/// the next). A flush is answered once what queued before it is applied.
async fn shard_worker(rx: mpsc::UnboundedReceiver<Op>, store: Store, publisher: Arc<Publisher>, node_id: String) {
    let policy = batching::Policy { lanes: 1, max: MAX_CHANGES };
    let repeats = |batch: &[Op], next: &Op| match next {
        Op::Report { app, user, .. } => batch.iter().any(|op| op.is_report_of(app, *user)),
        Op::Flush(_) => false,
    };
    batching::serve(rx, policy, repeats, |ops| async {
        let mut batch = Vec::with_capacity(ops.len());
        let mut flushed = Vec::new();
        for op in ops {
            match op {
                Op::Report { app, user, id, online } => batch.push((Change { app, user, online }, id)),
                Op::Flush(done) => flushed.push(done),
            }
        }
        if !batch.is_empty() {
            apply(&store, &publisher, &node_id, batch).await;
        }
        for done in flushed {
            let _ = done.send(());
        }
    })
    .await;
}

impl Op {
    fn is_report_of(&self, of_app: &AppId, of_user: UserKey) -> bool {
        matches!(self, Op::Report { app, user, .. } if app == of_app && *user == of_user)
    }
}

async fn apply(store: &Store, publisher: &Publisher, node_id: &str, batch: Vec<(Change, String)>) {
    let now = now_millis();
    let mut hooks = HashMap::new();
    for (change, _) in &batch {
        if !hooks.contains_key(change.app.as_str()) {
            let h = match store.app(&change.app).await {
                Ok(Some(record)) => Hooks::of(&record.settings),
                _ => Hooks::default(),
            };
            hooks.insert(change.app.as_str().to_string(), h);
        }
    }
    let (changes, ids): (Vec<Change>, Vec<String>) = batch.into_iter().unzip();
    match store.apply_presence(node_id, now, &changes, &hooks).await {
        Ok(transitions) => {
            for ((change, id), transition) in changes.iter().zip(&ids).zip(transitions) {
                if transition {
                    publisher.transition(change.app.as_str(), change.user, id, change.online, now);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, changes = changes.len(), "presence update failed"),
    }
}

impl Presence {
    /// Starts the shard workers on the current runtime.
    pub fn start(store: Store, fanout: Fanout, node_id: String) -> Self {
        let publisher = Arc::new(Publisher { fanout });
        let mut shards = Vec::with_capacity(SHARDS);
        let mut tasks = Vec::with_capacity(SHARDS + 1);
        for _ in 0..SHARDS {
            let (tx, rx) = mpsc::unbounded_channel::<Op>();
            let (store, publisher, node_id) = (store.clone(), publisher.clone(), node_id.clone());
            tasks.push(actix_rt::spawn(shard_worker(rx, store, publisher, node_id)));
            shards.push(tx);
        }
        Presence { shards: Arc::new(shards), tasks: Arc::new(std::sync::Mutex::new(tasks)) }
    }

    /// Stops the workers and the lease keeper (after `flush`, at shutdown).
    pub async fn stop(&self) {
        let tasks: Vec<_> = self.tasks.lock().map(|mut t| t.drain(..).collect()).unwrap_or_default();
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }

    /// A user's first (online) or last (offline) session on this node.
    pub fn report(&self, app: AppId, user: UserKey, id: String, online: bool) {
        let shard = (user.0.unsigned_abs() as usize) % self.shards.len();
        let _ = self.shards[shard].send(Op::Report { app, user, id, online });
    }

    /// Waits until every report made so far is applied.
    pub async fn flush(&self) {
        let mut waits = Vec::new();
        for shard in self.shards.iter() {
            let (tx, rx) = oneshot::channel();
            if shard.send(Op::Flush(tx)).is_ok() {
                waits.push(rx);
            }
        }
        for w in waits {
            let _ = w.await;
        }
    }

    /// Renews this node's lease every third of its length and reaps dead nodes.
    pub fn keep_lease(&self, store: Store, fanout: Fanout, node_id: String, lease: Duration) {
        let publisher = Publisher { fanout };
        let lease_ms = lease.as_millis() as i64;
        let task = actix_rt::spawn(async move {
            let mut tick = actix_rt::time::interval(lease / 3);
            loop {
                tick.tick().await;
                match store.renew_lease(&node_id, lease_ms).await {
                    Ok(true) => {}
                    Ok(false) => tracing::info!(node = %node_id, "lease registered"),
                    Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
                }
                let now = now_millis();
                let hooks: HashMap<String, Hooks> = match store.apps().await {
                    Ok(apps) => apps.iter().map(|a| (a.id.to_string(), Hooks::of(&a.settings))).collect(),
                    Err(_) => HashMap::new(),
                };
                match store.reap_expired_nodes(now, &hooks).await {
                    Ok(departed) => {
                        for d in departed {
                            publisher.transition(&d.app_id, d.user, &d.public_id, false, now);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reaping dead nodes failed"),
                }
                store.refresh_presence_stats().await;
                // The same periodic upkeep forgets server-API nonces past their window and rate-limit
                // counters from long-ended windows.
                if let Err(e) = store.purge_nonces(now).await {
                    tracing::warn!(error = %e, "purging server-API nonces failed");
                }
                if let Err(e) = store.purge_rate_limits(now - 2 * 3600 * 1000).await {
                    tracing::warn!(error = %e, "purging rate-limit counters failed");
                }
            }
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }
}
