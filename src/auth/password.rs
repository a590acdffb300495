//! argon2id password hashing, off the async threads and with bounded concurrency: each hash holds
//! 19 MiB, so an unbounded login flood would exhaust memory.
//!
//! Hashes (registration, upgrade) and verifications (login) share the slots but queue separately,
//! each queue bounded: a flood of one kind is refused with 429 at once when its queue is full,
//! and the other kind waits behind at most that many. With one unbounded queue a registration
//! flood of 100 connections held logins for 1.4-2.6 s (27 ms alone).

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordVerifier, Version,
    password_hash::{PasswordHasher as _, SaltString, rand_core::OsRng},
};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::{
    domain::Password,
    error::{ApiError, ApiResult, ErrorCode},
};

/// The two kinds of work, queued separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Hash,
    Verify,
}

impl Work {
    fn label(self) -> &'static str {
        match self {
            Work::Hash => "hash",
            Work::Verify => "verify",
        }
    }
}

#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// Callers waiting for a slot, per kind of work.
    waiting: Arc<[AtomicUsize; 2]>,
    max_waiting: usize,
    /// Verified against when the account does not exist, so unknown emails take as long.
    dummy_hash: Arc<str>,
}

fn argon2() -> Argon2<'static> {
    // Design §3 parameters (OWASP's argon2id minimum): m = 19456 KiB, t = 2, p = 1.
    let params = Params::new(19_456, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_blocking(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon2().hash_password(password.as_bytes(), &salt)?.to_string())
}

fn verify_blocking(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Takes one off a queue's count when its waiter leaves (served or cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PasswordHasher {
    /// `concurrency` hashes at once; at most `max_waiting` callers of each kind wait for one.
    pub fn new(concurrency: usize, max_waiting: usize) -> anyhow::Result<Self> {
        let dummy = hash_blocking("natter-dummy-password-for-timing")
            .map_err(|e| anyhow::anyhow!("argon2 self-test failed: {e}"))?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]),
            max_waiting,
            dummy_hash: dummy.into(),
        })
    }

    /// A hashing slot, or 429 at once when this kind's queue is full.
    async fn slot(&self, work: Work) -> ApiResult<SemaphorePermit<'_>> {
        let queue = &self.waiting[work as usize];
        let ahead = queue.fetch_add(1, Ordering::AcqRel);
        let waiting = Waiting(queue);
        if ahead >= self.max_waiting {
            drop(waiting);
            metrics::counter!("natter_password_queue_refusals_total", "work" => work.label()).increment(1);
            return Err(ApiError::new(ErrorCode::RateLimited, "the server is busy checking passwords; retry in 1 s"));
        }
        let permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        drop(waiting);
        Ok(permit)
    }

    pub async fn hash(&self, password: &Password) -> ApiResult<String> {
        let _permit = self.slot(Work::Hash).await?;
        let password = password.expose().to_string();
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }

    /// Checks a password against a stored hash; with no hash it still does the work and fails.
    pub async fn verify(&self, password: &Password, hash: Option<&str>) -> ApiResult<bool> {
        let _permit = self.slot(Work::Verify).await?;
        let password = password.expose().to_string();
        let (hash, real) = match hash {
            Some(h) => (h.to_string(), true),
            None => (self.dummy_hash.to_string(), false),
        };
        let ok =
            tokio::task::spawn_blocking(move || verify_blocking(&password, &hash)).await.map_err(ApiError::internal)?;
        Ok(ok && real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hasher = PasswordHasher::new(2, 8).unwrap();
        let pw = Password::parse("correct horse battery").unwrap();
        let hash = hasher.hash(&pw).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(hasher.verify(&pw, Some(&hash)).await.unwrap());
        let wrong = Password::parse("wrong horse battery").unwrap();
        assert!(!hasher.verify(&wrong, Some(&hash)).await.unwrap());
        assert!(!hasher.verify(&pw, None).await.unwrap());
        assert!(!hasher.verify(&pw, Some("not a hash")).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_hashes_is_refused_at_once_past_its_queue_while_a_login_still_gets_its_turn() {
        let hasher = PasswordHasher::new(1, 2).unwrap();
        let pw = Password::parse("correct horse battery").unwrap();
        let flood: Vec<_> = (0..8)
            .map(|_| {
                let (hasher, pw) = (hasher.clone(), pw.clone());
                tokio::spawn(async move { hasher.hash(&pw).await })
            })
            .collect();
        let login = {
            let (hasher, pw) = (hasher.clone(), pw.clone());
            tokio::spawn(async move { hasher.verify(&pw, None).await })
        };
        let mut refused = 0;
        for f in flood {
            match f.await.unwrap() {
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.code, ErrorCode::RateLimited);
                    refused += 1;
                }
            }
        }
        // One hashing, two waiting: the other five are refused without waiting.
        assert!(refused >= 5, "{refused} refused");
        assert!(login.await.unwrap().is_ok(), "the login had a queue of its own");
    }
}
