//! The node-local hub: which sessions of this node belong to which users, groups and presence
//! watches, the Router actor that hands each bus delivery to them, and [`admission`]: how many
//! connections the node holds and is starting, and whether it takes one more.
//!
//! The split follows actix's chat server and Centrifuge's hub/node: the [`registry`] is plain
//! data with unit tests (maps, reference counts, which subjects the node needs); the [`router`]
//! actor owns it, applies its subscription changes to the bus and addresses sessions only through
//! the [`SessionHandle`] they register with, so nothing here knows the WebSocket session type.

pub mod admission;
pub mod registry;
pub mod router;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use actix::{Message, Recipient};
use bytestring::ByteString;

use crate::error::CloseCode;

/// A frame the Router hands a session.
pub enum Push {
    /// A stored message; `origin` is the session that sent it when that session is on this
    /// node (the recipient's cursor decides what that means for it).
    Message {
        conv: Arc<str>,
        seq: i64,
        origin: Option<u64>,
        frame: ByteString,
    },
    Event {
        frame: ByteString,
    },
    /// A user's fresh unread counts: written with the session's next frame, or shortly.
    Unread {
        frame: ByteString,
    },
}

impl Push {
    /// Bytes the push will put on the wire.
    pub fn len(&self) -> usize {
        match self {
            Push::Message { frame, .. } | Push::Event { frame } | Push::Unread { frame } => frame.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the hub tells a session.
#[derive(Message)]
#[rtype(result = "()")]
pub enum ToSession {
    Push(Push),
    /// Close the connection with this code.
    Close {
        code: CloseCode,
        reason: String,
    },
    /// The user's public id changed (server API change-id).
    Renamed {
        id: String,
    },
    /// The user was added to this conversation and the node now hears it: read from the store
    /// what was sent since they joined, which may have been published before the node was
    /// subscribed (a group's first message, sent right after it was created, used to be lost
    /// until the next one).
    CatchUp {
        conv: Arc<str>,
    },
}

/// How the hub reaches a session: its mailbox, and the bytes handed to it that its socket has not
/// written yet (the slow-consumer check reads it).
#[derive(Clone)]
pub struct SessionHandle {
    pub mailbox: Recipient<ToSession>,
    pub queued: Arc<AtomicUsize>,
}

impl SessionHandle {
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.mailbox.do_send(ToSession::Close { code, reason: reason.to_string() });
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}
