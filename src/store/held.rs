//! Connections kept out of the pool for the hottest reads.
//!
//! sqlx pings every connection it takes back (`return_to_pool`: a Sync round trip on
//! PostgreSQL), so each pooled read costs two round trips and two wakeups of its backend. In a
//! connect storm those pings were 17 % of a node's CPU and a similar share of PostgreSQL's.
//! A read that completes leaves its connection ready for the next statement, so the hot reads
//! hand theirs back here instead; only a read that failed or was cancelled goes through the
//! pool's release, whose ping is exactly the check such a connection needs.

use std::{
    ops::{Deref, DerefMut},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use sqlx::{Any, AnyConnection, AnyPool, pool::PoolConnection};

use super::IDLE_BEFORE_PING;

/// The idle held connections, most recently used last.
pub(super) struct Held {
    idle: Mutex<Vec<(PoolConnection<Any>, Instant)>>,
    /// At most this many wait here, so writers always find the rest of the pool.
    cap: usize,
    /// Set when the store closes: from then on every connection goes back to the pool.
    closed: AtomicBool,
}

impl Held {
    pub(super) fn new(max_connections: u32) -> Self {
        Held {
            idle: Mutex::new(Vec::new()),
            cap: (max_connections as usize / 4).max(1),
            closed: AtomicBool::new(false),
        }
    }

    /// A held connection, or a fresh one from the pool when none waits. One idle long enough to
    /// have missed a database restart goes back through the pool (which checks it) instead.
    pub(super) async fn take<'a>(&'a self, pool: &AnyPool) -> Result<Read<'a>, sqlx::Error> {
        loop {
            let popped = match self.idle.lock() {
                Ok(mut idle) => idle.pop(),
                Err(_) => None,
            };
            match popped {
                Some((conn, since)) if since.elapsed() < IDLE_BEFORE_PING => return Ok(Read { conn, home: self }),
                Some(stale) => drop(stale),
                None => break,
            }
        }
        let conn = pool.acquire().await?;
        Ok(Read { conn, home: self })
    }

    /// Lets go of every held connection, so that closing the pool does not wait for them.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    fn keep(&self, conn: PoolConnection<Any>) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.cap
        {
            idle.push((conn, Instant::now()));
        }
    }
}

/// A connection for one read. [`Read::finish`] keeps it for the next read when the read
/// succeeded; dropped otherwise (an error, or the caller cancelled), it returns to the pool,
/// which checks it.
pub struct Read<'a> {
    conn: PoolConnection<Any>,
    home: &'a Held,
}

impl Read<'_> {
    /// Passes the read's result through, keeping the connection when it succeeded.
    pub fn finish<T>(self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        let Read { conn, home } = self;
        if result.is_ok() {
            home.keep(conn);
        }
        result
    }
}

impl Deref for Read<'_> {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl DerefMut for Read<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}
