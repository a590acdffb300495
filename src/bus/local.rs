//! The in-process bus of an embedded node: a publish goes straight to this node's Router when it
//! holds the subject.

use std::{
    collections::HashSet,
    sync::{Mutex, OnceLock},
};

use actix::Recipient;
use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::{Bus, BusDelivery};

#[derive(Default)]
pub struct LocalBus {
    subscribed: Mutex<HashSet<String>>,
    sink: OnceLock<Recipient<BusDelivery>>,
}

impl LocalBus {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Bus for LocalBus {
    fn publish(&self, subject: String, payload: Bytes) -> BoxFuture<'static, anyhow::Result<()>> {
        let wanted = self.subscribed.lock().map(|s| s.contains(&subject)).unwrap_or(false);
        if wanted && let Some(sink) = self.sink.get() {
            sink.do_send(BusDelivery { subject, payload });
        }
        Box::pin(async { Ok(()) })
    }

    fn subscribe(&self, subject: &str) {
        if let Ok(mut s) = self.subscribed.lock() {
            s.insert(subject.to_string());
        }
    }

    fn unsubscribe(&self, subject: &str) {
        if let Ok(mut s) = self.subscribed.lock() {
            s.remove(subject);
        }
    }

    fn attach(&self, sink: Recipient<BusDelivery>) {
        let _ = self.sink.set(sink);
    }

    fn is_connected(&self) -> bool {
        true
    }

    fn synced(&self) -> BoxFuture<'static, ()> {
        // Subscriptions here take effect as they are made.
        Box::pin(std::future::ready(()))
    }
}
