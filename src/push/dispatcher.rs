//! The push dispatcher: one actor per node that claims due push jobs and sends each, straight to
//! the device or through the app's `push.needed` webhook.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use actix::{Actor, ActorFutureExt, AsyncContext, Context, WrapFuture};
use serde::Serialize;

use super::{Message, Notice, Outcome, apns, collapse_key, fcm, notice::Nothing, webpush};
use crate::{
    config::{AppSettings, PushConfig},
    domain::{AppId, UserKey},
    store::{
        Store,
        devices::{Device, Platform},
        outbox::Hooks,
        push::PushJob,
    },
    webhooks::target::Clients,
};

/// What every delivery of the node shares: HTTP clients, providers' access tokens, and the
/// finisher.
struct Senders {
    clients: Clients,
    fcm: fcm::Tokens,
    apns: apns::Tokens,
    config: PushConfig,
    /// Apps' VAPID keys, parsed once (deriving the public key is a scalar multiplication), by
    /// app and private key.
    vapid: std::sync::Mutex<std::collections::HashMap<String, (String, Arc<webpush::Vapid>)>>,
    /// Finished jobs, deleted in batches: one statement (and on SQLite one pass of the write
    /// gate) per batch instead of a write transaction per push.
    finished: tokio::sync::mpsc::UnboundedSender<i64>,
}

/// Deletes finished jobs in batches until the dispatcher is gone. A failed delete leaves the
/// jobs claimed; their claims expire and they are sent again (at least once).
async fn finish(store: Store, rx: tokio::sync::mpsc::UnboundedReceiver<i64>) {
    let policy = crate::batching::Policy { lanes: 1, max: 1000 };
    crate::batching::serve(rx, policy, crate::batching::never, |ids| {
        let store = store.clone();
        async move {
            if let Err(e) = store.pushes_finished(&ids).await {
                tracing::warn!(error = %e, jobs = ids.len(), "recording finished pushes failed; they will be sent again");
            }
        }
    })
    .await;
}

pub struct Dispatcher {
    node_id: Arc<str>,
    store: Store,
    senders: Arc<Senders>,
    in_flight: Arc<AtomicUsize>,
    claiming: bool,
}

impl Dispatcher {
    /// Starts the finisher on the current runtime (the node's arbiter).
    pub fn new(node_id: &str, store: Store, clients: Clients, config: PushConfig) -> Self {
        let (finished, rx) = tokio::sync::mpsc::unbounded_channel();
        actix_rt::spawn(finish(store.clone(), rx));
        let senders = Senders {
            clients,
            fcm: fcm::Tokens::default(),
            apns: apns::Tokens::default(),
            config,
            vapid: Default::default(),
            finished,
        };
        Self {
            node_id: Arc::from(node_id),
            store,
            senders: Arc::new(senders),
            in_flight: Arc::new(AtomicUsize::new(0)),
            claiming: false,
        }
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(Duration::from_millis(self.senders.config.poll_ms), |act, ctx| {
            let room = act.senders.config.batch.saturating_sub(act.in_flight.load(Ordering::Relaxed));
            if act.claiming || room == 0 {
                return;
            }
            act.claiming = true;
            let (node, store, senders, in_flight) =
                (act.node_id.clone(), act.store.clone(), act.senders.clone(), act.in_flight.clone());
            // Detached, so a stopping actor never drops a claim mid-transaction.
            let claim = actix_rt::spawn(async move { claim_and_start(&node, store, senders, in_flight, room).await });
            ctx.spawn(claim.into_actor(act).map(|_, act, _| act.claiming = false));
        });
        let store = self.store.clone();
        ctx.run_interval(Duration::from_secs(5), move |_, _| {
            let store = store.clone();
            actix_rt::spawn(async move {
                if let Ok(counts) = store.push_counts().await {
                    for status in ["pending", "sending", "dead"] {
                        let n = counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
                        metrics::gauge!("natter_push_outbox", "status" => status).set(n as f64);
                    }
                }
            });
        });
    }
}

async fn claim_and_start(node: &str, store: Store, senders: Arc<Senders>, in_flight: Arc<AtomicUsize>, room: usize) {
    let now = crate::domain::now_millis();
    let jobs = match store.claim_pushes(node, now, senders.config.claim_ms as i64, room as i64).await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::warn!(error = %e, "claiming push jobs failed");
            return;
        }
    };
    let mut claimed = match Claimed::read(&store, &jobs).await {
        Ok(c) => c,
        Err(e) => {
            // The claims expire and the jobs are taken again.
            tracing::warn!(error = %e, jobs = jobs.len(), "reading claimed pushes' devices, presence and badges failed");
            return;
        }
    };
    for job in jobs {
        let (store, senders, in_flight) = (store.clone(), senders.clone(), in_flight.clone());
        let device = claimed.devices.remove(&job.device_id);
        let online = claimed.online.contains(&(job.app_id.clone(), job.user_key));
        let badge = claimed.badges.get(&(job.app_id.clone(), job.user_key)).copied().unwrap_or(0);
        in_flight.fetch_add(1, Ordering::Relaxed);
        actix_rt::spawn(async move {
            if let Err(e) = deliver(&store, &senders, &job, device, online, badge).await {
                // The claim expires and another attempt follows; nothing is lost.
                tracing::warn!(job = job.id, error = %e, "recording a push outcome failed");
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

impl Senders {
    fn finished(&self, id: i64) -> Result<(), sqlx::Error> {
        self.finished.send(id).map_err(|_| sqlx::Error::PoolClosed)
    }

    /// The app's VAPID key, parsed at its first push (and again when the app changes it).
    fn vapid(&self, app: &str, private: &str) -> Result<Arc<webpush::Vapid>, super::PushError> {
        if let Ok(cache) = self.vapid.lock()
            && let Some((key, vapid)) = cache.get(app)
            && key == private
        {
            return Ok(vapid.clone());
        }
        let vapid = Arc::new(webpush::Vapid::from_private(private)?);
        if let Ok(mut cache) = self.vapid.lock() {
            cache.insert(app.to_string(), (private.to_string(), vapid.clone()));
        }
        Ok(vapid)
    }
}

fn count(platform: &str, result: &'static str) {
    metrics::counter!("natter_push_deliveries_total", "platform" => platform.to_string(), "result" => result)
        .increment(1);
}

/// The `push.needed` webhook event: the notice, whom and which device it is for.
#[derive(Serialize)]
struct PushNeeded<'a> {
    recipient: &'a str,
    device: DeviceOut<'a>,
    #[serde(flatten)]
    notice: &'a Notice,
}

#[derive(Serialize)]
struct DeviceOut<'a> {
    id: &'a str,
    platform: Platform,
    token: &'a str,
    /// A Web Push subscription's keys, for apps that encrypt with their own library.
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<Keys<'a>>,
}

#[derive(Serialize)]
struct Keys<'a> {
    p256dh: &'a str,
    auth: &'a str,
}

/// What a claim's pushes read once for all of them, a statement each: their devices, which of
/// their users are online, and their badges (reading them one push at a time was six round trips
/// a push).
struct Claimed {
    devices: HashMap<String, Device>,
    online: HashSet<(String, UserKey)>,
    /// Users with nothing unread are absent (badge 0).
    badges: HashMap<(String, UserKey), i64>,
}

impl Claimed {
    async fn read(store: &Store, jobs: &[PushJob]) -> Result<Claimed, sqlx::Error> {
        let ids: Vec<&str> = jobs.iter().map(|j| j.device_id.as_str()).collect();
        let devices = store.devices_by_id(&ids).await?.into_iter().map(|d| (d.id.clone(), d)).collect();
        let mut by_app: HashMap<&str, Vec<UserKey>> = HashMap::new();
        for job in jobs {
            let users = by_app.entry(job.app_id.as_str()).or_default();
            if !users.contains(&job.user_key) {
                users.push(job.user_key);
            }
        }
        let (mut online, mut badges) = (HashSet::new(), HashMap::new());
        for (app, users) in by_app {
            // An app id that no longer parses has no pushes to send; `deliver` says so per job.
            let Ok(id) = AppId::parse(app.to_string()) else { continue };
            for user in store.online_among(&id, &users).await? {
                online.insert((app.to_string(), user));
            }
            for (user, badge) in super::notice::badges(store, &id, &users).await? {
                badges.insert((app.to_string(), user), badge);
            }
        }
        Ok(Claimed { devices, online, badges })
    }
}

async fn deliver(
    store: &Store,
    senders: &Senders,
    job: &PushJob,
    device: Option<Device>,
    online: bool,
    badge: i64,
) -> Result<(), sqlx::Error> {
    let Some(device) = device else {
        count("unknown", "device_removed");
        return senders.finished(job.id);
    };
    let platform = device.platform.as_str();
    let app = match AppId::parse(job.app_id.clone()) {
        Ok(id) => store.app(&id).await.ok().flatten(),
        Err(_) => None,
    };
    let Some(app) = app else {
        count(platform, "dead");
        return store.push_dead(job.id, job.attempts, "the app no longer exists").await;
    };
    // Online again since the message was stored: it reached them live.
    if online {
        count(platform, "online");
        return senders.finished(job.id);
    }
    let notice = match Notice::build(store, &app.id, &app.settings, job, badge).await? {
        Ok(n) => n,
        Err(Nothing::NotReadable) => {
            count(platform, "not_readable");
            return senders.finished(job.id);
        }
    };
    let message = Message {
        payload: &notice,
        collapse_key: collapse_key(&job.app_id, &job.conversation_id),
        ttl_secs: senders.config.ttl_secs,
        timeout: Duration::from_millis(senders.config.timeout_ms),
    };
    let started = Instant::now();
    let outcome = match send(senders, &app.settings, &device, &message).await {
        Some(outcome) => outcome,
        None if Hooks::of(&app.settings).wants("push.needed") => {
            let Some(recipient) = store.user_by_key(&app.id, job.user_key).await?.map(|u| u.id) else {
                count(platform, "not_readable");
                return senders.finished(job.id);
            };
            let keys = device.keys.as_ref().map(|k| Keys { p256dh: &k.p256dh, auth: &k.auth });
            let event = PushNeeded {
                recipient: &recipient,
                device: DeviceOut { id: &device.id, platform: device.platform, token: &device.token, keys },
                notice: &notice,
            };
            count(platform, "webhook");
            return store.push_to_webhook(job.id, &job.app_id, &event).await;
        }
        None => {
            count(platform, "no_sender");
            return senders.finished(job.id);
        }
    };
    metrics::histogram!("natter_push_duration_seconds", "platform" => platform).record(started.elapsed().as_secs_f64());
    record(store, senders, job, &device, outcome).await
}

/// Sends with the app's own credentials for the device's platform; None when the app has none
/// (the job goes to its webhook, if any).
async fn send(senders: &Senders, settings: &AppSettings, device: &Device, message: &Message<'_>) -> Option<Outcome> {
    let clients = &senders.clients;
    let private = settings.allow_private_targets;
    Some(match device.platform {
        Platform::Webpush => {
            if settings.vapid_private_key.is_empty() {
                return None;
            }
            let vapid = match senders.vapid(&device.app_id, settings.vapid_private_key.expose()) {
                Ok(v) => v,
                Err(e) => return Some(Outcome::Fail(e.to_string())),
            };
            let Some(keys) = &device.keys else { return Some(Outcome::Gone("subscription without keys".into())) };
            let subscriber = match webpush::Subscriber::parse(keys) {
                Ok(s) => s,
                Err(e) => return Some(Outcome::Gone(e.to_string())),
            };
            match clients.for_url(&device.token, private) {
                Ok((client, url)) => {
                    webpush::send(client, url, &vapid, &settings.vapid_subject, &subscriber, message).await
                }
                Err(e) => Outcome::Fail(e.to_string()),
            }
        }
        Platform::Fcm => {
            if settings.fcm_service_account.is_empty() {
                return None;
            }
            let account = match fcm::ServiceAccount::parse(settings.fcm_service_account.expose()) {
                Ok(a) => a,
                Err(e) => return Some(Outcome::Fail(e.to_string())),
            };
            // The token endpoint and the send endpoint are both checked against the app's rules.
            if let Err(e) = clients.for_url(&account.token_uri, private) {
                return Some(Outcome::Fail(format!("token_uri: {e}")));
            }
            match clients.for_url(&settings.fcm_endpoint, private) {
                Ok((client, _)) => {
                    fcm::send(client, &settings.fcm_endpoint, &account, &senders.fcm, &device.token, message).await
                }
                Err(e) => Outcome::Fail(format!("fcm_endpoint: {e}")),
            }
        }
        Platform::Apns => {
            if settings.apns_key.is_empty() {
                return None;
            }
            let credentials = match apns::Credentials::parse(
                settings.apns_key.expose(),
                &settings.apns_key_id,
                &settings.apns_team_id,
                &settings.apns_topic,
            ) {
                Ok(c) => c,
                Err(e) => return Some(Outcome::Fail(e.to_string())),
            };
            match clients.for_url_http2(&settings.apns_endpoint, private) {
                Ok((client, _)) => {
                    apns::send(client, &settings.apns_endpoint, &credentials, &senders.apns, &device.token, message)
                        .await
                }
                Err(e) => Outcome::Fail(format!("apns_endpoint: {e}")),
            }
        }
    })
}

async fn record(
    store: &Store,
    senders: &Senders,
    job: &PushJob,
    device: &Device,
    outcome: Outcome,
) -> Result<(), sqlx::Error> {
    let platform = device.platform.as_str();
    let attempts = job.attempts + 1;
    match outcome {
        Outcome::Delivered => {
            count(platform, "delivered");
            senders.finished(job.id)
        }
        Outcome::Gone(why) => {
            count(platform, "gone");
            tracing::info!(device = %device.id, platform, reason = %why, "push provider says the device is gone; removed");
            if store.remove_gone_device(&device.id, device.created_at).await? {
                metrics::counter!("natter_push_devices_removed_total", "reason" => "gone").increment(1);
            }
            senders.finished(job.id)
        }
        Outcome::Retry(why, after) => {
            match crate::webhooks::backoff(&senders.config.retry_schedule_ms, attempts as usize) {
                Some(delay) => {
                    count(platform, "retry");
                    let delay = after.map_or(delay, |a| a.max(delay));
                    let at = crate::domain::now_millis() + delay.as_millis() as i64;
                    store.push_retry_later(job.id, attempts, at, &why).await
                }
                None => {
                    count(platform, "dead");
                    tracing::warn!(job = job.id, platform, error = %why, "push retries exhausted; dead-lettered");
                    store.push_dead(job.id, attempts, &why).await
                }
            }
        }
        Outcome::Fail(why) => {
            count(platform, "dead");
            tracing::warn!(job = job.id, platform, error = %why, "push refused for good; dead-lettered");
            store.push_dead(job.id, attempts, &why).await
        }
    }
}
