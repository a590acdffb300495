//! Cluster-wide presence.
//!
//! The Router reports each user's first and last local session here. Reports are applied to the
//! store in order per user (sharded by user, so one user's connect can never overtake their
//! disconnect), and a transition the store confirms is published once on the app's control
//! subject, where every node's Router hands it to local watchers. A lease keeper renews this
//! node's lease and reaps nodes that died without a goodbye.

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::{
    bus::{Bus, Envelope, Subjects, encode},
    chat::event_frame,
    domain::{AppId, UserKey, now_millis},
    store::{Store, outbox::Hooks, users::UserRecord},
};

const SHARDS: usize = 8;

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
    bus: Arc<dyn Bus>,
    subjects: Subjects,
}

impl Publisher {
    async fn transition(&self, app: &str, user: UserKey, id: &str, online: bool, at: i64) {
        #[derive(Serialize)]
        struct PresenceEvent<'a> {
            user: &'a str,
            status: &'static str,
            last_seen: i64,
        }
        let status = if online { "online" } else { "offline" };
        let frame = event_frame("presence", &PresenceEvent { user: id, status, last_seen: at });
        let payload = encode(&Envelope::Presence { user: user.0, online }, &frame);
        if let Err(e) = self.bus.publish(self.subjects.control(app), payload).await {
            tracing::warn!(error = %e, "presence publish failed");
        }
        metrics::counter!("natter_presence_transitions_total", "status" => status).increment(1);
    }
}

impl Presence {
    /// Starts the shard workers on the current runtime.
    pub fn start(store: Store, bus: Arc<dyn Bus>, subjects: Subjects, node_id: String) -> Self {
        let publisher = Arc::new(Publisher { bus, subjects });
        let mut shards = Vec::with_capacity(SHARDS);
        let mut tasks = Vec::with_capacity(SHARDS + 1);
        for _ in 0..SHARDS {
            let (tx, mut rx) = mpsc::unbounded_channel::<Op>();
            let (store, publisher, node_id) = (store.clone(), publisher.clone(), node_id.clone());
            tasks.push(actix_rt::spawn(async move {
                while let Some(op) = rx.recv().await {
                    match op {
                        Op::Flush(done) => {
                            let _ = done.send(());
                        }
                        Op::Report { app, user, id, online } => {
                            let now = now_millis();
                            let hooks = match store.app(&app).await {
                                Ok(Some(record)) => Hooks::of(&record.settings),
                                _ => Hooks::default(),
                            };
                            let result = if online {
                                store.presence_up(&app, user, &node_id, &hooks).await
                            } else {
                                store.presence_down(&app, user, &node_id, now, &hooks).await
                            };
                            match result {
                                Ok(true) => publisher.transition(app.as_str(), user, &id, online, now).await,
                                Ok(false) => {}
                                Err(e) => tracing::warn!(error = %e, "presence update failed"),
                            }
                        }
                    }
                }
            }));
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
    pub fn keep_lease(&self, store: Store, bus: Arc<dyn Bus>, subjects: Subjects, node_id: String, lease: Duration) {
        let publisher = Publisher { bus, subjects };
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
                            publisher.transition(&d.app_id, d.user, &d.public_id, false, now).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reaping dead nodes failed"),
                }
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
