//! Latency histograms and counters: recorded by connection tasks, shipped between processes as
//! base64 HDR histograms, merged by the coordinator.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, 1 µs to 10 minutes, 3 significant figures.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| anyhow::anyhow!("histogram: {e:?}"))
}

pub fn encode(h: &Histogram<u64>) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    V2Serializer::new().serialize(h, &mut buf).map_err(|e| anyhow::anyhow!("histogram encode: {e:?}"))?;
    Ok(STANDARD.encode(buf))
}

pub fn decode(s: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = STANDARD.decode(s).context("histogram base64")?;
    Deserializer::new().deserialize(&mut bytes.as_slice()).map_err(|e| anyhow::anyhow!("histogram decode: {e:?}"))
}

/// Which latency a sample belongs to.
#[derive(Clone, Copy)]
pub enum Kind {
    Connect,
    Ack,
    Delivery,
    Sync,
}

/// The four latency histograms.
pub struct Hists {
    pub connect: Histogram<u64>,
    pub ack: Histogram<u64>,
    pub delivery: Histogram<u64>,
    pub sync: Histogram<u64>,
}

impl Hists {
    pub fn new() -> anyhow::Result<Hists> {
        Ok(Hists { connect: histogram()?, ack: histogram()?, delivery: histogram()?, sync: histogram()? })
    }

    fn get(&mut self, kind: Kind) -> &mut Histogram<u64> {
        match kind {
            Kind::Connect => &mut self.connect,
            Kind::Ack => &mut self.ack,
            Kind::Delivery => &mut self.delivery,
            Kind::Sync => &mut self.sync,
        }
    }

    pub fn to_wire(&self) -> anyhow::Result<WireHists> {
        Ok(WireHists {
            connect: encode(&self.connect)?,
            ack: encode(&self.ack)?,
            delivery: encode(&self.delivery)?,
            sync: encode(&self.sync)?,
        })
    }

    pub fn add_wire(&mut self, wire: &WireHists) -> anyhow::Result<()> {
        for (kind, s) in [
            (Kind::Connect, &wire.connect),
            (Kind::Ack, &wire.ack),
            (Kind::Delivery, &wire.delivery),
            (Kind::Sync, &wire.sync),
        ] {
            let h = decode(s)?;
            self.get(kind).add(&h).map_err(|e| anyhow::anyhow!("histogram merge: {e:?}"))?;
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Clone, Default, Debug)]
pub struct WireHists {
    pub connect: String,
    pub ack: String,
    pub delivery: String,
    pub sync: String,
}

/// Cumulative counters of one worker process.
#[derive(Serialize, Deserialize, Clone, Copy, Default, Debug)]
pub struct Counts {
    pub connect_attempts: u64,
    pub connected: u64,
    pub connect_failed: u64,
    /// Reconnect attempts that failed and were tried again (after a capped, jittered backoff).
    #[serde(default)]
    pub connect_retries: u64,
    /// Connects the server refused for lack of room (503 with Retry-After), retried on its word.
    #[serde(default)]
    pub connect_backpressure: u64,
    /// Failed connect attempts (first connects and reconnects, retried or not) by cause, indexed
    /// by [`FailCause`].
    #[serde(default)]
    pub connect_fail_causes: [u64; FailCause::COUNT],
    pub disconnected: u64,
    pub sent: u64,
    pub acked: u64,
    pub ack_errors: u64,
    pub expected: u64,
    pub delivered: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub recovered: u64,
    pub lost: u64,
    pub syncs: u64,
    pub errors: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.connect_attempts += o.connect_attempts;
        self.connected += o.connected;
        self.connect_failed += o.connect_failed;
        self.connect_retries += o.connect_retries;
        self.connect_backpressure += o.connect_backpressure;
        for (mine, theirs) in self.connect_fail_causes.iter_mut().zip(o.connect_fail_causes) {
            *mine += theirs;
        }
        self.disconnected += o.disconnected;
        self.sent += o.sent;
        self.acked += o.acked;
        self.ack_errors += o.ack_errors;
        self.expected += o.expected;
        self.delivered += o.delivered;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.recovered += o.recovered;
        self.lost += o.lost;
        self.syncs += o.syncs;
        self.errors += o.errors;
    }
}

/// Live counters and histograms shared by a worker's tasks. Each histogram is recorded twice:
/// into the run's total and into the current one-second window for the progress line.
pub struct Recorder {
    pub connect_attempts: AtomicU64,
    pub connected: AtomicU64,
    pub connect_failed: AtomicU64,
    pub connect_retries: AtomicU64,
    pub connect_backpressure: AtomicU64,
    pub connect_fail_causes: [AtomicU64; FailCause::COUNT],
    pub disconnected: AtomicU64,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub ack_errors: AtomicU64,
    pub expected: AtomicU64,
    pub delivered: AtomicU64,
    pub duplicated: AtomicU64,
    pub out_of_order: AtomicU64,
    pub recovered: AtomicU64,
    pub lost: AtomicU64,
    pub syncs: AtomicU64,
    pub errors: AtomicU64,
    hists: Mutex<(Hists, Hists)>,
}

/// Why a connect attempt failed, as far as the client can tell: the first question about a
/// storm's failed connects is whether the server said anything at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailCause {
    /// The TCP connect was refused (RST to the SYN: nothing listening, or the listen queue full
    /// with `tcp_abort_on_overflow`).
    TcpRefused,
    /// The client had no local port to connect from (EADDRNOTAVAIL / EADDRINUSE): the
    /// harness's own limit, not the server's.
    TcpNoPort,
    /// The TCP connect timed out (SYNs unanswered).
    TcpTimeout,
    /// Any other error of the TCP connect.
    TcpOther,
    /// The connection was reset or closed during the HTTP upgrade, without an HTTP answer.
    HandshakeReset,
    /// The HTTP upgrade got no answer in time.
    HandshakeTimeout,
    /// The server answered the upgrade with an HTTP status other than 101 (503 with
    /// Retry-After is counted apart, as backpressure).
    HttpStatus,
    /// Anything else (TLS, protocol).
    Other,
}

impl FailCause {
    pub const COUNT: usize = 8;
    pub const ALL: [FailCause; FailCause::COUNT] = [
        FailCause::TcpRefused,
        FailCause::TcpNoPort,
        FailCause::TcpTimeout,
        FailCause::TcpOther,
        FailCause::HandshakeReset,
        FailCause::HandshakeTimeout,
        FailCause::HttpStatus,
        FailCause::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FailCause::TcpRefused => "tcp_refused",
            FailCause::TcpNoPort => "tcp_no_local_port",
            FailCause::TcpTimeout => "tcp_timeout",
            FailCause::TcpOther => "tcp_other",
            FailCause::HandshakeReset => "handshake_reset",
            FailCause::HandshakeTimeout => "handshake_timeout",
            FailCause::HttpStatus => "http_status",
            FailCause::Other => "other",
        }
    }

    /// Counts with their names, the non-zero ones only ("none" when all are).
    pub fn describe(counts: &[u64; FailCause::COUNT]) -> String {
        let parts: Vec<String> = FailCause::ALL
            .iter()
            .zip(counts)
            .filter(|(_, n)| **n > 0)
            .map(|(cause, n)| format!("{} {n}", cause.name()))
            .collect();
        if parts.is_empty() { "none".into() } else { parts.join(", ") }
    }
}

pub fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Recorder {
    pub fn new() -> anyhow::Result<Recorder> {
        let z = || AtomicU64::new(0);
        Ok(Recorder {
            connect_attempts: z(),
            connected: z(),
            connect_failed: z(),
            connect_retries: z(),
            connect_backpressure: z(),
            connect_fail_causes: std::array::from_fn(|_| z()),
            disconnected: z(),
            sent: z(),
            acked: z(),
            ack_errors: z(),
            expected: z(),
            delivered: z(),
            duplicated: z(),
            out_of_order: z(),
            recovered: z(),
            lost: z(),
            syncs: z(),
            errors: z(),
            hists: Mutex::new((Hists::new()?, Hists::new()?)),
        })
    }

    /// A failed connect attempt, counted by its cause; how many of that cause came before.
    pub fn failed_because(&self, cause: FailCause) -> u64 {
        self.connect_fail_causes[cause as usize].fetch_add(1, Ordering::Relaxed)
    }

    pub fn record(&self, kind: Kind, micros: u64) {
        let v = micros.max(1);
        if let Ok(mut g) = self.hists.lock() {
            let (total, window) = &mut *g;
            let _ = total.get(kind).record(v);
            let _ = window.get(kind).record(v);
        }
    }

    pub fn counts(&self) -> Counts {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            connect_attempts: l(&self.connect_attempts),
            connected: l(&self.connected),
            connect_failed: l(&self.connect_failed),
            connect_retries: l(&self.connect_retries),
            connect_backpressure: l(&self.connect_backpressure),
            connect_fail_causes: std::array::from_fn(|i| l(&self.connect_fail_causes[i])),
            disconnected: l(&self.disconnected),
            sent: l(&self.sent),
            acked: l(&self.acked),
            ack_errors: l(&self.ack_errors),
            expected: l(&self.expected),
            delivered: l(&self.delivered),
            duplicated: l(&self.duplicated),
            out_of_order: l(&self.out_of_order),
            recovered: l(&self.recovered),
            lost: l(&self.lost),
            syncs: l(&self.syncs),
            errors: l(&self.errors),
        }
    }

    /// The window's histograms (then reset) for a progress tick.
    pub fn take_window(&self) -> anyhow::Result<WireHists> {
        let mut g = self.hists.lock().map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?;
        let wire = g.1.to_wire()?;
        g.1 = Hists::new()?;
        Ok(wire)
    }

    /// Starts a histogram's run total afresh (the reconnect storm is reported apart from the
    /// first connections).
    pub fn restart_total(&self, kind: Kind) -> anyhow::Result<()> {
        let mut g = self.hists.lock().map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?;
        *g.0.get(kind) = histogram()?;
        Ok(())
    }

    pub fn totals(&self) -> anyhow::Result<WireHists> {
        let g = self.hists.lock().map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?;
        g.0.to_wire()
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Serialize, Deserialize, Clone, Default, Debug)]
pub struct Latency {
    pub count: u64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            min_ms: ms(h.min()),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_the_trip_between_processes_and_merge() {
        let r = Recorder::new().unwrap();
        for v in 1..=1000u64 {
            r.record(Kind::Delivery, v * 10);
        }
        let wire = r.totals().unwrap();
        let mut merged = Hists::new().unwrap();
        merged.add_wire(&wire).unwrap();
        merged.add_wire(&wire).unwrap();
        let l = Latency::of(&merged.delivery);
        assert_eq!(l.count, 2000);
        assert!((l.p50_ms - 5.0).abs() < 0.05, "{l:?}");
        assert!((l.max_ms - 10.0).abs() < 0.05, "{l:?}");
    }

    #[test]
    fn a_window_resets_after_it_is_taken() {
        let r = Recorder::new().unwrap();
        r.record(Kind::Ack, 500);
        let first = decode(&r.take_window().unwrap().ack).unwrap();
        let second = decode(&r.take_window().unwrap().ack).unwrap();
        assert_eq!((first.len(), second.len()), (1, 0));
        assert_eq!(decode(&r.totals().unwrap().ack).unwrap().len(), 1);
    }
}
