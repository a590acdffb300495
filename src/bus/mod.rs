//! Fan-out between nodes.
//!
//! Every payload is an [`Envelope`] header line followed by a ready-to-send client frame, encoded
//! once by the publisher and shared (as `Bytes`) by every recipient on every node. The Router
//! subscribes a subject when its first local interest appears and unsubscribes after the last.

pub mod local;
pub mod nats;
pub mod security;
pub mod subscriber;

use actix::{Message, Recipient};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// The servers of `nats.url`: one URL, or several separated by commas (a cluster's seed list).
pub fn server_urls(url: &str) -> Vec<&str> {
    url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
}

/// A payload that arrived on a subscribed subject.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct BusDelivery {
    pub subject: String,
    pub payload: Bytes,
}

/// The bus as the rest of the node sees it.
pub trait Bus: Send + Sync + 'static {
    /// Publishes to every node subscribed to `subject` (this one included).
    fn publish(&self, subject: String, payload: Bytes) -> BoxFuture<'static, anyhow::Result<()>>;
    fn subscribe(&self, subject: &str);
    fn unsubscribe(&self, subject: &str);
    /// Where deliveries go; set once, by the Router at start.
    fn attach(&self, sink: Recipient<BusDelivery>);
    /// For `/readyz`.
    fn is_connected(&self) -> bool;
    /// Resolves once every subscription made so far is in force: a message published after it
    /// reaches them. Sessions wait for it before their first reply, so nothing sent to a client
    /// that has seen its connection answered can pass it by.
    fn synced(&self) -> BoxFuture<'static, ()>;
}

/// Subject names (design §7): `<prefix>.<app>.user.<key>`, `.group.<id>`, `.control`, and
/// `.presence.<key>` (a user's presence transitions, subscribed where someone watches them).
/// Users are addressed by internal key: public ids may contain dots and may change.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_string() }
    }

    pub fn user(&self, app: &str, user: i64) -> String {
        format!("{}.{app}.user.{user}", self.prefix)
    }

    pub fn group(&self, app: &str, group: &str) -> String {
        format!("{}.{app}.group.{group}", self.prefix)
    }

    /// A user's presence transitions, for the nodes where someone watches them.
    pub fn presence(&self, app: &str, user: i64) -> String {
        format!("{}.{app}.presence.{user}", self.prefix)
    }

    pub fn control(&self, app: &str) -> String {
        format!("{}.{app}.control", self.prefix)
    }
}

/// Which session of which node caused a payload, so it is not echoed back to that session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub node: String,
    pub session: u64,
}

/// The header of every bus payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Envelope {
    /// A stored message; the frame is its push.
    Message {
        conv: String,
        seq: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<Origin>,
        /// When it was published (unix ms), for `natter_delivery_duration_seconds`.
        #[serde(default)]
        at: i64,
        /// Its sender's key (0: the app): everyone else who receives it has one more unread.
        #[serde(default)]
        sender: i64,
    },
    /// An event (typing, read, a message's change) for the subject's sessions.
    Event {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<Origin>,
        /// The event may change its recipients' unread count in this conversation (a recall, a
        /// deletion for everyone).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unread_in: Option<String>,
    },
    /// Group membership changed: routers update their maps, then deliver the frame to the
    /// group's local members and to the removed users.
    Membership { group: String, added: Vec<i64>, removed: Vec<i64> },
    /// Close a user's sockets (all, or one device session's) with a close code.
    Kick {
        user: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        code: u16,
    },
    /// A user came online or went offline; the frame goes to their watchers.
    Presence { user: i64, online: bool },
    /// A user's public id changed; their live sessions adopt it.
    Renamed { user: i64, id: String },
    /// `user` blocked `target`: their sessions stop watching the target's presence.
    Unwatch { user: i64, target: i64 },
}

/// Header line, newline, frame. An envelope that cannot be encoded (its fields are strings and
/// numbers, so only a bug could cause it) is an error, never an empty header.
pub fn encode(envelope: &Envelope, frame: &[u8]) -> Result<Bytes, serde_json::Error> {
    let header = serde_json::to_vec(envelope)?;
    let mut out = BytesMut::with_capacity(header.len() + 1 + frame.len());
    out.put_slice(&header);
    out.put_u8(b'\n');
    out.put_slice(frame);
    Ok(out.freeze())
}

/// Splits a payload into its envelope and its frame (a zero-copy slice).
pub fn decode(payload: &Bytes) -> anyhow::Result<(Envelope, Bytes)> {
    let split =
        payload.iter().position(|b| *b == b'\n').ok_or_else(|| anyhow::anyhow!("bus payload without header"))?;
    let envelope = serde_json::from_slice(&payload[..split])?;
    Ok((envelope, payload.slice(split + 1..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_with_their_frame() {
        let envelope = Envelope::Message {
            conv: "dm_1_2".into(),
            seq: 7,
            origin: Some(Origin { node: "n1".into(), session: 3 }),
            at: 1,
            sender: 42,
        };
        let frame = br#"{"type":"message","data":{"content":"a\nb"}}"#;
        let bytes = encode(&envelope, frame).unwrap();
        let (back, body) = decode(&bytes).unwrap();
        assert_eq!(back, envelope);
        assert_eq!(&body[..], frame);
    }

    #[test]
    fn garbage_payloads_are_rejected() {
        assert!(decode(&Bytes::from_static(b"no newline")).is_err());
        assert!(decode(&Bytes::from_static(b"{\"k\":\"nope\"}\n{}")).is_err());
    }

    #[test]
    fn subjects_follow_the_design() {
        let s = Subjects::new("natter");
        assert_eq!(s.user("default", 5), "natter.default.user.5");
        assert_eq!(s.group("default", "g1"), "natter.default.group.g1");
        assert_eq!(s.control("default"), "natter.default.control");
    }
}
