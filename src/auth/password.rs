//! argon2id password hashing, off the async threads and with bounded concurrency: each hash holds
//! 19 MiB, so an unbounded login flood would exhaust memory.
//!
//! Hashes (registration, upgrade) and verifications (login) share the slots but queue separately,
//! each queue bounded: past it a caller is refused with 429 at once instead of waiting. A freed
//! slot goes to a waiting login first: existing users are the ones kept waiting, and a login
//! then waits for at most one hash in progress, whatever floods the other queue. With one
//! unbounded FIFO queue a flood of 100 registering connections held logins for ~1.0-1.4 s each
//! (`natter-loadtest auth-flood`, release build); with bounded FIFO queues of 16, 0.4-0.7 s.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordVerifier, Version,
    password_hash::{PasswordHasher as _, SaltString, rand_core::OsRng},
};
use tokio::sync::oneshot;

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
    slots: Arc<Slots>,
    /// Verified against when the account does not exist, so unknown emails take as long.
    dummy_hash: Arc<str>,
}

/// The hashing slots and who waits for them, per kind.
struct Slots {
    state: Mutex<SlotState>,
    max_waiting: usize,
}

struct SlotState {
    free: usize,
    /// Indexed by `Work`; a slot is handed over through the sender.
    waiting: [VecDeque<oneshot::Sender<Slot>>; 2],
}

/// The refusal of work whose queue is full (429, counted per kind).
fn busy(work: Work) -> ApiError {
    metrics::counter!("natter_password_queue_refusals_total", "work" => work.label()).increment(1);
    ApiError::new(ErrorCode::RateLimited, "the server is busy checking passwords; retry in 1 s")
}

/// A held slot; dropping it hands the slot to the next waiter (logins first). A slot handed to a
/// waiter that has gone travels back here when its channel is dropped.
struct Slot(Option<Arc<Slots>>);

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(slots) = self.0.take() else { return };
        let Ok(mut state) = slots.state.lock() else { return };
        for work in [Work::Verify, Work::Hash] {
            while let Some(next) = state.waiting[work as usize].pop_front() {
                match next.send(Slot(Some(slots.clone()))) {
                    Ok(()) => return,
                    // The waiter gave up (its request was cancelled): try the next one.
                    Err(mut unsent) => drop(unsent.0.take()),
                }
            }
        }
        state.free += 1;
    }
}

impl Slots {
    /// A slot now, a place in this kind's queue, or 429 when the queue is full.
    async fn take(self: &Arc<Self>, work: Work) -> ApiResult<Slot> {
        let rx = {
            let mut state = self.state.lock().map_err(|_| ApiError::internal("password slots poisoned"))?;
            if state.free > 0 && state.waiting.iter().all(VecDeque::is_empty) {
                state.free -= 1;
                return Ok(Slot(Some(self.clone())));
            }
            let queue = &mut state.waiting[work as usize];
            queue.retain(|w| !w.is_closed());
            if queue.len() >= self.max_waiting {
                metrics::counter!("natter_password_queue_refusals_total", "work" => work.label()).increment(1);
                return Err(ApiError::new(
                    ErrorCode::RateLimited,
                    "the server is busy checking passwords; retry in 1 s",
                ));
            }
            let (tx, rx) = oneshot::channel();
            queue.push_back(tx);
            rx
        };
        rx.await.map_err(|_| ApiError::internal("password slot lost"))
    }
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

impl PasswordHasher {
    /// `concurrency` hashes at once; at most `max_waiting` callers of each kind wait for one.
    pub fn new(concurrency: usize, max_waiting: usize) -> anyhow::Result<Self> {
        let dummy = hash_blocking("natter-dummy-password-for-timing")
            .map_err(|e| anyhow::anyhow!("argon2 self-test failed: {e}"))?;
        let state = SlotState { free: concurrency.max(1), waiting: [VecDeque::new(), VecDeque::new()] };
        Ok(Self { slots: Arc::new(Slots { state: Mutex::new(state), max_waiting }), dummy_hash: dummy.into() })
    }

    /// 429 now if a hash would be refused (its queue is full): registrations ask before they
    /// parse or write anything, so a flood is turned away cheaply.
    pub fn admit_hash(&self) -> ApiResult<()> {
        let full = self.slots.state.lock().map_or(true, |s| {
            s.free == 0
                && s.waiting[Work::Hash as usize].iter().filter(|w| !w.is_closed()).count() >= self.slots.max_waiting
        });
        if full { Err(busy(Work::Hash)) } else { Ok(()) }
    }

    pub async fn hash(&self, password: &Password) -> ApiResult<String> {
        let _slot = self.slots.take(Work::Hash).await?;
        let password = password.expose().to_string();
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .map_err(ApiError::caused_by)?
            .map_err(ApiError::caused_by)
    }

    /// Checks a password against a stored hash; with no hash it still does the work and fails.
    pub async fn verify(&self, password: &Password, hash: Option<&str>) -> ApiResult<bool> {
        let _slot = self.slots.take(Work::Verify).await?;
        let password = password.expose().to_string();
        let (hash, real) = match hash {
            Some(h) => (h.to_string(), true),
            None => (self.dummy_hash.to_string(), false),
        };
        let ok = tokio::task::spawn_blocking(move || verify_blocking(&password, &hash))
            .await
            .map_err(ApiError::caused_by)?;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_freed_slot_goes_to_a_waiting_login_before_waiting_hashes() {
        let hasher = PasswordHasher::new(1, 8).unwrap();
        let pw = Password::parse("correct horse battery").unwrap();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let busy = hasher.slots.take(Work::Hash).await.unwrap();
        for i in 0..3 {
            let (hasher, pw, done) = (hasher.clone(), pw.clone(), done_tx.clone());
            tokio::spawn(async move {
                hasher.hash(&pw).await.unwrap();
                done.send(format!("hash {i}")).unwrap();
            });
        }
        let (login_hasher, login_pw, done) = (hasher.clone(), pw.clone(), done_tx.clone());
        // Queued after the three hashes.
        let waited = async {
            loop {
                let queued = hasher.slots.state.lock().unwrap().waiting[Work::Hash as usize].len();
                if queued == 3 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), waited).await.unwrap();
        tokio::spawn(async move {
            login_hasher.verify(&login_pw, None).await.unwrap();
            done.send("login".to_string()).unwrap();
        });
        let login_queued = async {
            while hasher.slots.state.lock().unwrap().waiting[Work::Verify as usize].len() != 1 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), login_queued).await.unwrap();
        drop(busy);
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), done_rx.recv()).await.unwrap().unwrap();
        assert_eq!(first, "login");
    }
}
