//! Rate limits: a token bucket for one connection's frames and a fixed-window counter per key
//! (guest sign-ups per client IP).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate: f64::from(rate.max(1)), burst, tokens: burst, last: Instant::now() }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self) -> bool {
        self.try_take_at(Instant::now())
    }

    fn try_take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Seconds until the next token, for retry hints.
    pub fn retry_after_secs(&self) -> u64 {
        (((1.0 - self.tokens).max(0.0) / self.rate).ceil() as u64).max(1)
    }
}

/// Counts events per key in fixed windows; memory is bounded by pruning expired windows.
pub struct WindowLimiter {
    window: Duration,
    counts: Mutex<HashMap<String, (Instant, u32)>>,
}

impl WindowLimiter {
    pub fn new(window: Duration) -> Self {
        Self { window, counts: Mutex::new(HashMap::new()) }
    }

    /// Counts one event for `key`; false when `limit` events already happened in this window.
    pub fn allow(&self, key: &str, limit: u32) -> bool {
        let now = Instant::now();
        let Ok(mut counts) = self.counts.lock() else {
            return false;
        };
        if counts.len() > 100_000 {
            let window = self.window;
            counts.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = counts.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= limit {
            return false;
        }
        entry.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(10, 3);
        b.last = start;
        assert!(b.try_take_at(start) && b.try_take_at(start) && b.try_take_at(start));
        assert!(!b.try_take_at(start));
        assert!(b.try_take_at(start + Duration::from_millis(110)));
        assert!(!b.try_take_at(start + Duration::from_millis(111)));
    }

    #[test]
    fn a_window_counts_per_key() {
        let l = WindowLimiter::new(Duration::from_secs(60));
        assert!(l.allow("a", 2) && l.allow("a", 2));
        assert!(!l.allow("a", 2));
        assert!(l.allow("b", 2));
    }
}
