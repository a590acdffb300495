//! Rate limits kept by one connection: a token bucket for its frames. Limits that must hold
//! across the cluster (guest sign-ups, logins) are counted in the store (`store::limits`).

use std::time::Instant;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
