//! The NATS bus of a cluster node: publishing on async-nats, subscriptions on the lean
//! [`Subscriber`] connection (async-nats subscriptions where it cannot serve the URL). Both
//! reconnect by themselves and re-subscribe what they had; deliveries missed meanwhile are
//! repaired by sessions (gap repair, `sync`).

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
};

use actix::Recipient;
use anyhow::Context as _;
use bytes::Bytes;
use futures_util::{StreamExt, future::BoxFuture};
use tokio::task::JoinHandle;

use super::{
    Bus, BusDelivery,
    security::Security,
    server_urls,
    subscriber::{Subscriber, Target},
};
use crate::config::NatsConfig;

pub struct NatsBus {
    client: async_nats::Client,
    subscriber: Option<Subscriber>,
    subscriptions: Mutex<HashMap<String, JoinHandle<()>>>,
    sink: std::sync::Arc<OnceLock<Recipient<BusDelivery>>>,
}

impl NatsBus {
    pub async fn connect(config: &NatsConfig, node_id: &str) -> anyhow::Result<Self> {
        let url = config.url.expose();
        let security = Security::from_config(config)?;
        let mut options = async_nats::ConnectOptions::new();
        if security.tls_required {
            options = options.require_tls(true);
        }
        if !config.tls_ca_file.is_empty() {
            options = options.add_root_certificates(config.tls_ca_file.clone().into());
        }
        if !config.tls_cert_file.is_empty() {
            options =
                options.add_client_certificate(config.tls_cert_file.clone().into(), config.tls_key_file.clone().into());
        }
        if !config.credentials_file.is_empty() {
            options = options.credentials_file(&config.credentials_file).await.context("nats.credentials_file")?;
        } else if !config.nkey_seed_file.is_empty() {
            let seed = std::fs::read_to_string(&config.nkey_seed_file).context("nats.nkey_seed_file")?;
            options = options.nkey(seed.trim().to_string());
        }
        let client = options
            .name(format!("natter-{node_id}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("nats connected"),
                    async_nats::Event::Disconnected => {
                        metrics::counter!("natter_bus_connection_errors_total", "connection" => "publisher")
                            .increment(1);
                        tracing::warn!("nats disconnected; reconnecting")
                    }
                    other => tracing::debug!(event = %other, "nats event"),
                }
            })
            .connect(server_urls(url))
            .await
            .context("connecting to NATS (nats.url)")?;
        let sink: std::sync::Arc<OnceLock<Recipient<BusDelivery>>> = Default::default();
        let subscriber = match Target::from_url(url, format!("natter-{node_id}-sub"), security)? {
            Some(target) => match Subscriber::start(target, sink.clone()).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "lean NATS subscriber unavailable; subscribing through async-nats");
                    None
                }
            },
            None => None,
        };
        Ok(Self { client, subscriber, subscriptions: Mutex::new(HashMap::new()), sink })
    }
}

impl Bus for NatsBus {
    fn publish(&self, subject: String, payload: Bytes) -> BoxFuture<'static, anyhow::Result<()>> {
        let client = self.client.clone();
        Box::pin(async move { client.publish(subject, payload).await.context("nats publish") })
    }

    fn subscribe(&self, subject: &str) {
        if let Some(s) = &self.subscriber {
            return s.subscribe(subject);
        }
        let Ok(mut subs) = self.subscriptions.lock() else {
            return;
        };
        if subs.contains_key(subject) {
            return;
        }
        let client = self.client.clone();
        let sink = self.sink.clone();
        let name = subject.to_string();
        let task = tokio::spawn(async move {
            let mut subscriber = match client.subscribe(name.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(subject = %name, error = %e, "nats subscribe failed");
                    return;
                }
            };
            while let Some(msg) = subscriber.next().await {
                if let Some(sink) = sink.get() {
                    sink.do_send(BusDelivery { subject: msg.subject.to_string(), payload: msg.payload });
                }
            }
        });
        subs.insert(subject.to_string(), task);
    }

    fn unsubscribe(&self, subject: &str) {
        if let Some(s) = &self.subscriber {
            return s.unsubscribe(subject);
        }
        // Aborting the task drops the subscriber, which unsubscribes from the server.
        if let Ok(mut subs) = self.subscriptions.lock()
            && let Some(task) = subs.remove(subject)
        {
            task.abort();
        }
    }

    fn attach(&self, sink: Recipient<BusDelivery>) {
        let _ = self.sink.set(sink);
    }

    fn synced(&self) -> BoxFuture<'static, ()> {
        match &self.subscriber {
            Some(s) => Box::pin(s.synced()),
            // async-nats subscribes from a task of its own and offers no such round trip:
            // the fallback keeps the older, weaker promise (sessions repair with `sync`).
            None => Box::pin(std::future::ready(())),
        }
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
            && self.subscriber.as_ref().is_none_or(Subscriber::is_connected)
    }
}
