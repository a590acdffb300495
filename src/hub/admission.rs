//! Admission at the door: a node takes a connection only while it has room, and says so when it
//! has none. Two bounds: sockets open on the node (`ws.max_connections`, file descriptors and
//! memory), and sessions starting at once (`ws.max_starting`: authenticated at the handshake,
//! their conversations read and their subscriptions not yet in force; the work a reconnect
//! storm piles up). Past either, the handshake answers 503 `unavailable` with `Retry-After`, so
//! clients back off on the server's word instead of timing out in a queue.
//!
//! A socket that opens without a token waits for its `login` frame doing no work; it counts as
//! open, not as starting, so idle sockets cannot hold the door shut for others.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use crate::error::{ApiError, ErrorCode};

/// The node's counts and bounds (0 = no bound).
#[derive(Debug, Default)]
pub struct Admission {
    open: AtomicUsize,
    starting: AtomicUsize,
    max_open: usize,
    max_starting: usize,
}

/// A connection let in: open while held, starting until [`Ticket::started`].
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    starting: bool,
}

/// Why a connection was not let in, and when to try again (seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Full {
    pub what: &'static str,
    pub retry_after_secs: u64,
}

impl Full {
    pub fn error(&self) -> ApiError {
        ApiError::new(ErrorCode::Unavailable, format!("{}; retry in {} s", self.what, self.retry_after_secs))
    }
}

impl Admission {
    pub fn new(max_open: usize, max_starting: usize) -> Arc<Self> {
        Arc::new(Admission { max_open, max_starting, ..Admission::default() })
    }

    /// Lets a connection in (counted as open and starting), or says why not.
    pub fn admit(self: &Arc<Self>) -> Result<Ticket, Full> {
        if !take(&self.open, self.max_open) {
            metrics::counter!("natter_ws_connects_total", "result" => "node_full").increment(1);
            // Sockets free up as people leave, not within a second: a longer wait.
            return Err(Full { what: "this node holds all the connections it may", retry_after_secs: 5 });
        }
        if !take(&self.starting, self.max_starting) {
            self.open.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("natter_ws_connects_total", "result" => "busy").increment(1);
            return Err(Full { what: "this node is starting too many sessions at once", retry_after_secs: 1 });
        }
        metrics::gauge!("natter_ws_starting").increment(1.0);
        Ok(Ticket { admission: self.clone(), starting: true })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub fn starting(&self) -> usize {
        self.starting.load(Ordering::Acquire)
    }
}

/// One more under `max` (0: no bound), atomically.
fn take(count: &AtomicUsize, max: usize) -> bool {
    count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (max == 0 || n < max).then_some(n + 1)).is_ok()
}

impl Ticket {
    /// The session is up (or idle until a login): it no longer counts as starting.
    pub fn started(&mut self) {
        if std::mem::take(&mut self.starting) {
            self.admission.starting.fetch_sub(1, Ordering::AcqRel);
            metrics::gauge!("natter_ws_starting").decrement(1.0);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.started();
        self.admission.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_lets_in_up_to_its_bounds_and_counts_each_ticket_once() {
        let door = Admission::new(3, 2);
        let mut a = door.admit().unwrap();
        let b = door.admit().unwrap();
        assert_eq!(door.admit().unwrap_err().retry_after_secs, 1, "two starting already");
        a.started();
        a.started();
        assert_eq!((door.open(), door.starting()), (2, 1));
        let c = door.admit().unwrap();
        assert_eq!(door.admit().unwrap_err().retry_after_secs, 5, "three open already");
        drop(b);
        drop(c);
        assert_eq!((door.open(), door.starting()), (1, 0));
        drop(a);
        assert_eq!((door.open(), door.starting()), (0, 0));
    }

    #[test]
    fn no_bound_means_no_refusal() {
        let door = Admission::new(0, 0);
        let tickets: Vec<_> = (0..1000).map(|_| door.admit().unwrap()).collect();
        assert_eq!(door.open(), 1000);
        drop(tickets);
        assert_eq!(door.open(), 0);
    }
}
