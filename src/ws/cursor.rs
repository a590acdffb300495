//! A session's delivery cursor: per conversation, the highest seq written to the client, and the
//! one decision of what to do with a message that arrives: write it, drop it (already written,
//! or the session's own, answered by its reply), or first fetch the seqs it skipped.
//!
//! Plain data, no I/O: the session actor asks it and acts.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

/// What to do with a pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Already written (or passed): nothing to do.
    Drop,
    /// The next in order: write it (unless it is the session's own) and advance.
    Write,
    /// It skips ahead: fetch the seqs after `after` up to it from the store first.
    Repair { after: i64 },
}

#[derive(Default)]
pub struct Cursor {
    delivered: HashMap<Arc<str>, i64>,
    /// The `client_msg_id` of the send in flight (its reply has not been written yet).
    in_flight: Option<String>,
    /// Seqs this session sent that pushes have not yet passed: gap repair must not hand the
    /// client back what its own reply carries.
    own: HashMap<Arc<str>, BTreeSet<i64>>,
}

impl Cursor {
    /// Where a push of `seq` stands. A conversation without a baseline began after this session
    /// did (a new DM, a group joined since): it starts at 0, and repair reads only what the
    /// member may see.
    pub fn next(&self, conv: &str, seq: i64) -> Next {
        let last = self.last(conv);
        if seq <= last {
            Next::Drop
        } else if seq == last + 1 {
            Next::Write
        } else {
            Next::Repair { after: last }
        }
    }

    /// The highest seq written in a conversation (0 for one not seen yet).
    pub fn last(&self, conv: &str) -> i64 {
        self.delivered.get(conv).copied().unwrap_or(0)
    }

    /// Whether a seq was already written.
    pub fn has(&self, conv: &str, seq: i64) -> bool {
        self.delivered.get(conv).is_some_and(|last| seq <= *last)
    }

    /// The highest seq written to the client moves to `seq` (never back).
    pub fn advance(&mut self, conv: &str, seq: i64) {
        match self.delivered.get_mut(conv) {
            Some(last) if *last >= seq => {}
            Some(last) => *last = seq,
            None => {
                self.delivered.insert(Arc::from(conv), seq);
            }
        }
        if let Some(own) = self.own.get_mut(conv) {
            own.retain(|s| *s > seq);
            if own.is_empty() {
                self.own.remove(conv);
            }
        }
    }

    /// A send of this session is in flight (`Some`) or answered (`None`).
    pub fn sending(&mut self, client_msg_id: Option<String>) {
        self.in_flight = client_msg_id;
    }

    pub fn is_sending(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The session's send was stored at `seq` (its reply carries it).
    pub fn sent(&mut self, conv: &str, seq: i64) {
        if self.has(conv, seq) {
            return;
        }
        self.own.entry(Arc::from(conv)).or_default().insert(seq);
    }

    /// The one decision of whether a message is the session's own, which the client learns of
    /// from its reply and must not be handed again: a live push this very session sent, or a
    /// message read back from the store that this user sent and that is either the send in
    /// flight or one whose reply the session already wrote. The user's other sessions are not
    /// this one: they get the message like everyone else (the user's other devices see it).
    pub fn is_own(&self, sender: Sender<'_>, conv: &str, seq: i64) -> bool {
        match sender {
            Sender::ThisSession => true,
            Sender::ThisUser { client_msg_id } => {
                self.in_flight.as_deref() == Some(client_msg_id) || self.own.get(conv).is_some_and(|s| s.contains(&seq))
            }
            Sender::Other => false,
        }
    }
}

/// Who sent a message, as far as the session can tell.
#[derive(Debug, Clone, Copy)]
pub enum Sender<'a> {
    /// A live push whose origin is this session.
    ThisSession,
    /// Read back from the store: this user sent it, under this client id.
    ThisUser { client_msg_id: &'a str },
    /// Someone else, or this user's other sessions.
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_are_written_in_order_dropped_when_seen_and_repaired_when_ahead() {
        let mut c = Cursor::default();
        c.advance("g", 4);
        assert_eq!(c.next("g", 4), Next::Drop);
        assert_eq!(c.next("g", 5), Next::Write);
        assert_eq!(c.next("g", 8), Next::Repair { after: 4 });
        assert_eq!(c.next("new", 1), Next::Write, "a conversation without a baseline starts at 0");
        assert_eq!(c.next("new", 3), Next::Repair { after: 0 });
        c.advance("g", 2);
        assert_eq!(c.next("g", 5), Next::Write, "the cursor never moves back");
    }

    #[test]
    fn the_sessions_own_messages_are_recognised_in_flight_and_after_their_reply() {
        let mut c = Cursor::default();
        c.advance("d", 1);
        c.sending(Some("m1".into()));
        let mine = |id| Sender::ThisUser { client_msg_id: id };
        assert!(c.is_own(Sender::ThisSession, "d", 9), "a live push this session sent");
        assert!(!c.is_own(Sender::Other, "d", 2), "another user's (or session's) message");
        assert!(!c.is_own(mine("m0"), "d", 2), "this user's, sent elsewhere");
        assert!(c.is_own(mine("m1"), "d", 2), "in flight");
        c.sending(None);
        c.sent("d", 2);
        assert!(c.is_own(mine("other-id"), "d", 2), "answered by its reply");
        c.advance("d", 2);
        assert!(!c.is_own(mine("other-id"), "d", 2), "forgotten once passed");
        c.sent("d", 1);
        assert!(!c.is_own(mine("x"), "d", 1), "a seq already passed is not remembered");
    }
}
