//! The run's summary: the JSON written with `--out`, the aligned table, and the thresholds that
//! decide the exit code.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::plan::Scenario;
use crate::procfs::ServerFigures;
use crate::stats::{Counts, Latency};

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Summary {
    pub scenario: Scenario,
    pub floor: bool,
    pub targets: Vec<String>,
    pub procs: usize,
    pub users: usize,
    pub duration_s: f64,
    pub counts: Counts,
    pub connect: Latency,
    pub ack: Latency,
    pub delivery: Latency,
    pub sync: Latency,
    /// The reconnect storm's handshakes (reconnect scenario).
    pub reconnect: Latency,
    pub reconnect_rate_per_s: f64,
    /// From the first connection attempt to the last worker ready.
    pub connect_elapsed_s: f64,
    pub connect_rate_per_s: f64,
    /// From the start of traffic to the end of the drain.
    pub traffic_elapsed_s: f64,
    pub sent_per_s: f64,
    pub acked_per_s: f64,
    pub delivered_per_s: f64,
    /// Live deliveries / expected deliveries, in percent.
    pub delivered_pct: f64,
    pub servers: Vec<ServerFigures>,
    /// (loaded RSS − baseline RSS) of every server / connections held.
    pub rss_per_connection_kib: f64,
    /// Server CPU during traffic, per live delivery (µs).
    pub cpu_us_per_delivery: f64,
    /// Server CPU during traffic as a share of one core, in percent.
    pub server_cpu_pct_of_core: f64,
    /// How busy the whole machine was (all cores) over the run and during traffic.
    pub machine_busy_pct: f64,
    pub machine_busy_traffic_pct: f64,
    pub thresholds: Vec<ThresholdResult>,
    pub passed: bool,
    pub failures: Vec<String>,
    /// Versions, commit, machine and configuration of the run.
    #[serde(default)]
    pub stamp: crate::stamp::Stamp,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ThresholdResult {
    pub expr: String,
    pub value: f64,
    pub ok: bool,
}

impl Summary {
    /// Every figure a threshold can name.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        for (name, l) in [
            ("connect", &self.connect),
            ("ack", &self.ack),
            ("delivery", &self.delivery),
            ("sync", &self.sync),
            ("reconnect", &self.reconnect),
        ] {
            for (p, v) in [
                ("min", l.min_ms),
                ("p50", l.p50_ms),
                ("p90", l.p90_ms),
                ("p99", l.p99_ms),
                ("p999", l.p999_ms),
                ("max", l.max_ms),
            ] {
                m.insert(format!("{name}_{p}_ms"), v);
            }
            m.insert(format!("{name}_count"), l.count as f64);
        }
        let c = &self.counts;
        for (k, v) in [
            ("connected", c.connected),
            ("connect_failed", c.connect_failed),
            ("connect_retries", c.connect_retries),
            ("connect_backpressure", c.connect_backpressure),
            ("disconnected", c.disconnected),
            ("sent", c.sent),
            ("acked", c.acked),
            ("ack_errors", c.ack_errors),
            ("expected", c.expected),
            ("delivered", c.delivered),
            ("duplicated", c.duplicated),
            ("out_of_order", c.out_of_order),
            ("recovered", c.recovered),
            ("lost", c.lost),
            ("errors", c.errors),
        ] {
            m.insert(k.to_string(), v as f64);
        }
        for (cause, n) in crate::stats::FailCause::ALL.iter().zip(c.connect_fail_causes) {
            m.insert(format!("connect_fail_{}", cause.name()), n as f64);
        }
        for (k, v) in [
            ("connect_rate", self.connect_rate_per_s),
            ("reconnect_rate", self.reconnect_rate_per_s),
            ("sent_per_s", self.sent_per_s),
            ("acked_per_s", self.acked_per_s),
            ("delivered_per_s", self.delivered_per_s),
            ("delivered_pct", self.delivered_pct),
            ("rss_per_connection_kib", self.rss_per_connection_kib),
            ("cpu_us_per_delivery", self.cpu_us_per_delivery),
            ("server_cpu_pct_of_core", self.server_cpu_pct_of_core),
            ("machine_busy_pct", self.machine_busy_pct),
        ] {
            m.insert(k.to_string(), v);
        }
        m
    }

    /// Applies the thresholds and the rule that nothing acked may be lost.
    pub fn judge(&mut self, thresholds: &[Threshold]) {
        let metrics = self.metrics();
        self.failures.clear();
        self.thresholds = thresholds
            .iter()
            .map(|t| {
                let value = metrics.get(&t.metric).copied().unwrap_or(f64::NAN);
                let ok = t.holds(value);
                if !ok {
                    self.failures.push(format!("threshold {} failed: {} = {value}", t.expr, t.metric));
                }
                ThresholdResult { expr: t.expr.clone(), value, ok }
            })
            .collect();
        if self.counts.lost > 0 {
            self.failures.push(format!("{} acked deliveries were lost", self.counts.lost));
        }
        self.passed = self.failures.is_empty();
    }

    pub fn table(&self) -> String {
        let c = &self.counts;
        let mut out = String::new();
        let target = if self.floor { "floor" } else { "natter" };
        out.push_str(&format!(
            "{:?} against {target} ({} target(s), {} proc(s), {} users, {:.1} s); machine busy {:.0}% (traffic {:.0}%)\n",
            self.scenario,
            self.targets.len(),
            self.procs,
            self.users,
            self.duration_s,
            self.machine_busy_pct,
            self.machine_busy_traffic_pct
        ));
        out.push_str(&format!(
            "{:<10} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "latency", "count", "rate/s", "min ms", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        ));
        for (name, l, rate) in [
            ("connect", &self.connect, self.connect_rate_per_s),
            ("ack", &self.ack, self.acked_per_s),
            ("delivery", &self.delivery, self.delivered_per_s),
            ("sync", &self.sync, 0.0),
            ("reconnect", &self.reconnect, self.reconnect_rate_per_s),
        ] {
            if l.count == 0 {
                continue;
            }
            out.push_str(&format!(
                "{name:<10} {:>9} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
                l.count, rate, l.min_ms, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            ));
        }
        out.push_str(&format!(
            "connections: {} ok, {} failed ({} retries, {} refused for room), {} dropped | sent {} acked {} ack errors {} | expected {} delivered {} ({:.2}%) recovered by sync {} lost {} duplicated {} out of order {} | errors {}\n",
            c.connected, c.connect_failed, c.connect_retries, c.connect_backpressure, c.disconnected, c.sent, c.acked, c.ack_errors, c.expected, c.delivered,
            self.delivered_pct, c.recovered, c.lost, c.duplicated, c.out_of_order, c.errors
        ));
        out.push_str(&format!(
            "failed connect attempts by cause: {}\n",
            crate::stats::FailCause::describe(&c.connect_fail_causes)
        ));
        for s in &self.servers {
            out.push_str(&format!(
                "server pid {}: RSS {} → {} KiB loaded (max {}), CPU {:.2} s in traffic, {:.2} s in all\n",
                s.pid, s.rss_baseline_kib, s.rss_loaded_kib, s.rss_max_kib, s.cpu_traffic_s, s.cpu_total_s
            ));
        }
        if !self.servers.is_empty() {
            out.push_str(&format!(
                "per connection {:.2} KiB | server CPU {:.1}% of a core in traffic, {:.2} µs per delivery\n",
                self.rss_per_connection_kib, self.server_cpu_pct_of_core, self.cpu_us_per_delivery
            ));
        }
        for t in &self.thresholds {
            out.push_str(&format!(
                "threshold {:<28} value {:>10.3}  {}\n",
                t.expr,
                t.value,
                if t.ok { "ok" } else { "FAILED" }
            ));
        }
        out.push_str(if self.passed { "result: PASS\n" } else { "result: FAIL\n" });
        for f in &self.failures {
            out.push_str(&format!("  {f}\n"));
        }
        out
    }
}

#[derive(Clone, Debug)]
pub struct Threshold {
    pub expr: String,
    pub metric: String,
    op: Op,
    limit: f64,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

impl Threshold {
    /// `delivery_p99_ms<25`, `lost==0`, `delivered_pct>=99.9`.
    pub fn parse(expr: &str) -> anyhow::Result<Threshold> {
        let ops = [("<=", Op::Le), (">=", Op::Ge), ("==", Op::Eq), ("<", Op::Lt), (">", Op::Gt)];
        for (token, op) in ops {
            if let Some((metric, limit)) = expr.split_once(token) {
                let metric = metric.trim().to_string();
                if metric.is_empty() || !metric.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    bail!("threshold {expr:?}: {metric:?} is not a metric name");
                }
                let limit: f64 =
                    limit.trim().parse().with_context(|| format!("threshold {expr:?}: {limit:?} is not a number"))?;
                return Ok(Threshold { expr: expr.to_string(), metric, op, limit });
            }
        }
        bail!("threshold {expr:?}: expected METRIC<VALUE (or <=, >, >=, ==)")
    }

    fn holds(&self, v: f64) -> bool {
        match self.op {
            Op::Lt => v < self.limit,
            Op::Le => v <= self.limit,
            Op::Gt => v > self.limit,
            Op::Ge => v >= self.limit,
            Op::Eq => (v - self.limit).abs() < 1e-9,
        }
    }

    /// Refuses names no summary has, before the run rather than after it.
    pub fn check_known(&self, known: &BTreeMap<String, f64>) -> anyhow::Result<()> {
        if known.contains_key(&self.metric) {
            Ok(())
        } else {
            let names: Vec<&str> = known.keys().map(String::as_str).collect();
            bail!("threshold {:?}: unknown metric {:?}; known: {}", self.expr, self.metric, names.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_and_compare() {
        let t = Threshold::parse("delivery_p99_ms<25").unwrap();
        assert!(t.holds(24.9) && !t.holds(25.0));
        assert!(Threshold::parse("lost == 0").unwrap().holds(0.0));
        assert!(Threshold::parse("delivered_pct>=99.5").unwrap().holds(99.5));
        assert!(Threshold::parse("p99 ms<3").is_err());
        assert!(Threshold::parse("lost<x").is_err());
        assert!(Threshold::parse("lost").is_err());
    }
}
