//! Fan-out: every payload this node puts on the bus is built and published here, with one
//! policy. Senders hand a payload over and go on: the reply to a committed message never waits
//! for the bus (a stalled NATS used to add up to its 500 ms publish timeout to an ack). One
//! publisher task per node publishes in the order payloads were handed over, each bounded by the
//! timeout and timed on `natter_bus_publish_duration_seconds`. A failed, late or (with the queue
//! full) dropped publish loses nothing durable: sessions repair gaps from the store, and
//! clients `sync` after reconnecting.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::{
    bus::{Bus, Envelope, Origin, Subjects, encode},
    domain::UserKey,
};

/// Payloads waiting to be published; past it a payload is dropped (and counted): the bus has
/// been away for a while, and an unbounded queue would hold every message sent meanwhile.
const QUEUE: usize = 65_536;

/// Longest a publish may take before it counts as failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);

/// Who hears a conversation's traffic.
#[derive(Debug, Clone, Copy)]
pub enum Audience<'a> {
    /// Both users of a direct conversation (every device of each).
    Direct(UserKey, UserKey),
    /// Every member of a group.
    Group(&'a str),
    /// Every device of one user.
    User(UserKey),
}

#[derive(Clone)]
pub struct Fanout {
    tx: mpsc::Sender<(String, Bytes)>,
    subjects: Subjects,
}

/// Where a stored message landed and who sent it.
pub struct Sent<'a> {
    pub conv: &'a str,
    pub seq: i64,
    pub sender: UserKey,
    /// The session that sent it: its reply answers it, so it gets no echo.
    pub origin: Option<Origin>,
}

impl Fanout {
    /// Starts the publisher on the current runtime.
    pub fn start(bus: Arc<dyn Bus>, subjects: Subjects) -> Self {
        let (tx, mut rx) = mpsc::channel::<(String, Bytes)>(QUEUE);
        actix_rt::spawn(async move {
            while let Some((subject, payload)) = rx.recv().await {
                let started = std::time::Instant::now();
                match tokio::time::timeout(PUBLISH_TIMEOUT, bus.publish(subject, payload)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        metrics::counter!("natter_bus_publish_errors_total", "reason" => "error").increment(1);
                        tracing::warn!(error = %e, "bus publish failed; receivers will catch up from the store")
                    }
                    Err(_) => {
                        metrics::counter!("natter_bus_publish_errors_total", "reason" => "timeout").increment(1);
                        tracing::warn!("bus publish timed out; receivers will catch up from the store")
                    }
                }
                metrics::histogram!("natter_bus_publish_duration_seconds").record(started.elapsed().as_secs_f64());
            }
        });
        Fanout { tx, subjects }
    }

    fn send(&self, subject: String, payload: Bytes) {
        if self.tx.try_send((subject, payload)).is_err() {
            metrics::counter!("natter_bus_publish_dropped_total").increment(1);
        }
    }

    /// The payload of an envelope and its frame; one that cannot be encoded is reported and not
    /// sent (receivers repair from the store).
    fn payload(envelope: &Envelope, frame: &[u8]) -> Option<Bytes> {
        match encode(envelope, frame) {
            Ok(payload) => Some(payload),
            Err(e) => {
                tracing::error!(error = %e, "bus envelope could not be encoded; not published");
                metrics::counter!("natter_bus_publish_dropped_total").increment(1);
                None
            }
        }
    }

    fn to_audience(&self, app: &str, audience: Audience<'_>, payload: Bytes) {
        match audience {
            Audience::Group(group) => self.send(self.subjects.group(app, group), payload),
            Audience::User(user) => self.send(self.subjects.user(app, user.0), payload),
            Audience::Direct(a, b) => {
                self.send(self.subjects.user(app, a.0), payload.clone());
                self.send(self.subjects.user(app, b.0), payload);
            }
        }
    }

    /// A stored message's push frame to everyone in its conversation.
    pub fn message(&self, app: &str, audience: Audience<'_>, sent: Sent<'_>, frame: &[u8]) {
        let at = crate::domain::now_millis();
        let Sent { conv, seq, sender, origin } = sent;
        let envelope = Envelope::Message { conv: conv.to_string(), seq, origin, at, sender: sender.0 };
        if let Some(payload) = Self::payload(&envelope, frame) {
            self.to_audience(app, audience, payload);
        }
    }

    /// An event frame (read marker, typing) to everyone in a conversation but `origin`.
    pub fn event(&self, app: &str, audience: Audience<'_>, origin: Option<Origin>, frame: &[u8]) {
        if let Some(payload) = Self::payload(&Envelope::Event { origin, unread_in: None }, frame) {
            self.to_audience(app, audience, payload);
        }
    }

    /// An event that may change its recipients' unread count in `conv` (a message removed):
    /// each node recounts for its local recipients (`hub::router`, `inbox::push_unread`).
    pub fn removal(&self, app: &str, audience: Audience<'_>, conv: &str, frame: &[u8]) {
        let envelope = Envelope::Event { origin: None, unread_in: Some(conv.to_string()) };
        if let Some(payload) = Self::payload(&envelope, frame) {
            self.to_audience(app, audience, payload);
        }
    }

    /// A change every node of the app must apply (membership, kicks, renames), with its frame.
    pub fn control(&self, app: &str, envelope: &Envelope, frame: &[u8]) {
        if let Some(payload) = Self::payload(envelope, frame) {
            self.send(self.subjects.control(app), payload);
        }
    }

    /// A user's presence transition, to the nodes where someone watches them.
    pub fn presence(&self, app: &str, user: UserKey, online: bool, frame: &[u8]) {
        if let Some(payload) = Self::payload(&Envelope::Presence { user: user.0, online }, frame) {
            self.send(self.subjects.presence(app, user.0), payload);
        }
    }
}
