//! Group commit, the one loop every batched write or read of the node runs: message appends
//! (`store::batch`), connect-time reads (`store::subjects`) and presence transitions
//! (`presence`).
//!
//! Requests queue; a batch is whatever queued while the previous batches were being served, so
//! at low load every request is its own batch (no added latency) and under load batches grow
//! until one round trip serves many requests. At most `lanes` batches are in flight at once, each
//! at most `max` long; `ends_batch` lets a caller close a batch early (presence keeps a user's
//! reports in order that way). Batches in flight are driven by the loop's own task: stopping
//! the task stops them, and nothing of a batch runs on another task.
//!
//! Where the loop runs is the caller's policy, documented there: the message writer on a thread
//! and runtime of its own, connect reads on the runtime of the first connection to ask, presence
//! on the node's arbiter.

use std::future::Future;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

/// How a loop gathers its batches.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Batches served at once.
    pub lanes: usize,
    /// Requests in one batch at most.
    pub max: usize,
}

/// Serves `rx` in batches until every sender is gone and the batches in flight are done.
pub async fn serve<T, W, Fut>(
    mut rx: mpsc::UnboundedReceiver<T>,
    policy: Policy,
    mut ends_batch: impl FnMut(&[T], &T) -> bool,
    mut write: W,
) where
    W: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = ()>,
{
    let lanes = policy.lanes.max(1);
    let max = policy.max.max(1);
    let mut in_flight = FuturesUnordered::new();
    let mut carried: Option<T> = None;
    loop {
        while in_flight.len() >= lanes {
            in_flight.next().await;
        }
        let first = match carried.take() {
            Some(item) => Some(item),
            None => loop {
                tokio::select! {
                    item = rx.recv() => break item,
                    Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                }
            },
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(next) if ends_batch(&batch, &next) => {
                    carried = Some(next);
                    break;
                }
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        in_flight.push(write(batch));
    }
    while in_flight.next().await.is_some() {}
}

/// For loops whose batches may hold anything that queued.
pub fn never<T>(_: &[T], _: &T) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::{Semaphore, mpsc};

    use super::{Policy, never, serve};

    #[tokio::test]
    async fn what_queued_while_a_batch_was_served_forms_the_next_batch() {
        let (tx, rx) = mpsc::unbounded_channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Semaphore::new(0));
        let (record, hold) = (seen.clone(), gate.clone());
        let served = tokio::spawn(serve(rx, Policy { lanes: 1, max: 3 }, never, move |batch: Vec<u32>| {
            let (record, hold) = (record.clone(), hold.clone());
            async move {
                record.lock().map(|mut s| s.push(batch)).ok();
                hold.acquire().await.map(|p| p.forget()).ok();
            }
        }));
        tx.send(1).ok();
        // The first batch is held open while four more queue: they make a full batch of three
        // and a batch of one.
        wait_for(&seen, 1).await;
        for n in 2..=5 {
            tx.send(n).ok();
        }
        gate.add_permits(3);
        wait_for(&seen, 3).await;
        drop(tx);
        served.await.ok();
        assert_eq!(*seen.lock().unwrap(), vec![vec![1], vec![2, 3, 4], vec![5]]);
    }

    #[tokio::test]
    async fn a_batch_ends_where_the_caller_says_and_the_rest_opens_the_next() {
        let (tx, rx) = mpsc::unbounded_channel();
        for n in [1, 2, 1, 3] {
            tx.send(n).ok();
        }
        drop(tx);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let repeats = |batch: &[u32], next: &u32| batch.contains(next);
        serve(rx, Policy { lanes: 2, max: 10 }, repeats, move |batch: Vec<u32>| {
            record.lock().map(|mut s| s.push(batch)).ok();
            async {}
        })
        .await;
        assert_eq!(*seen.lock().unwrap(), vec![vec![1, 2], vec![1, 3]]);
    }

    #[tokio::test]
    async fn no_more_batches_than_lanes_are_in_flight() {
        let (tx, rx) = mpsc::unbounded_channel();
        let busy = Arc::new(Mutex::new((0_usize, 0_usize)));
        let gate = Arc::new(Semaphore::new(0));
        let (track, hold) = (busy.clone(), gate.clone());
        let served = tokio::spawn(serve(rx, Policy { lanes: 2, max: 1 }, never, move |_batch: Vec<u32>| {
            let (track, hold) = (track.clone(), hold.clone());
            async move {
                if let Ok(mut b) = track.lock() {
                    b.0 += 1;
                    b.1 = b.1.max(b.0);
                }
                hold.acquire().await.map(|p| p.forget()).ok();
                track.lock().map(|mut b| b.0 -= 1).ok();
            }
        }));
        for n in 0..20 {
            tx.send(n).ok();
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while busy.lock().unwrap().1 < 2 {
            assert!(tokio::time::Instant::now() < deadline, "two batches never ran at once");
            tokio::task::yield_now().await;
        }
        // The loop runs whenever this task yields: a third lane would have opened by now.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(busy.lock().unwrap().1, 2);
        gate.add_permits(20);
        drop(tx);
        served.await.ok();
        assert_eq!(busy.lock().unwrap().0, 0);
    }

    async fn wait_for(seen: &Mutex<Vec<Vec<u32>>>, batches: usize) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while seen.lock().map(|s| s.len()).unwrap_or(0) < batches {
            assert!(tokio::time::Instant::now() < deadline, "only {:?} were served", seen.lock().unwrap());
            tokio::task::yield_now().await;
        }
    }
}
