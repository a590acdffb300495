//! What the machine and the servers under test say: whole-machine busy share (from /proc/stat),
//! and a server's resident memory and CPU time, from /proc/PID for a local process or from its
//! Prometheus endpoint (`natter_process_*`) for one elsewhere.

use serde::{Deserialize, Serialize};

/// Aggregate CPU jiffies of the machine.
#[derive(Clone, Copy, Default)]
pub struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    pub fn now() -> CpuTimes {
        let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return CpuTimes::default() };
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return CpuTimes::default() };
        let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        let total: u64 = v.iter().take(8).sum();
        // idle + iowait are not busy.
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        CpuTimes { busy: total.saturating_sub(idle), total }
    }

    /// Share of all cores that were busy since `earlier`, in percent.
    pub fn busy_pct_since(&self, earlier: &CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        100.0 * self.busy.saturating_sub(earlier.busy) as f64 / total as f64
    }
}

/// One reading of a process.
#[derive(Clone, Copy, Default, Debug)]
pub struct ProcSample {
    pub rss_kib: u64,
    /// user + system CPU seconds since the process started.
    pub cpu_s: f64,
}

pub fn sample(pid: u32) -> ProcSample {
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let cpu_s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The command name may hold spaces; fields are counted after its closing parenthesis.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = f.get(11)?.parse().ok()?;
            let stime: u64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) as f64 / ticks_per_second())
        })
        .unwrap_or(0.0);
    ProcSample { rss_kib, cpu_s }
}

fn ticks_per_second() -> f64 {
    // USER_HZ is 100 on every Linux architecture this runs on.
    100.0
}

/// A server process's figures over a run.
#[derive(Serialize, Deserialize, Clone, Default, Debug)]
pub struct ServerFigures {
    /// The local process sampled (0 when sampled through `metrics`).
    pub pid: u32,
    /// The Prometheus endpoint sampled, for a server that is not a local process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// The version the server reports (`natter_build_info`), when sampled through `metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Before any connection of this run.
    pub rss_baseline_kib: u64,
    /// Once every connection is established and has settled.
    pub rss_loaded_kib: u64,
    pub rss_max_kib: u64,
    pub rss_end_kib: u64,
    /// CPU seconds used between the start of traffic and the end of the drain.
    pub cpu_traffic_s: f64,
    /// CPU seconds used over the whole run.
    pub cpu_total_s: f64,
}

/// Where a server's figures come from.
#[derive(Clone, Debug)]
pub enum Source {
    Pid(u32),
    /// `http://host:port/metrics` (the admin listener).
    Metrics(String),
}

impl Source {
    pub fn sample(&self) -> ProcSample {
        match self {
            Source::Pid(pid) => sample(*pid),
            Source::Metrics(url) => scrape(url).map(|m| m.sample).unwrap_or_default(),
        }
    }
}

/// What a Prometheus endpoint says about its process.
pub struct Scraped {
    pub sample: ProcSample,
    pub version: Option<String>,
}

/// Reads `natter_process_resident_memory_bytes`, `natter_process_cpu_seconds_total` and the
/// version label of `natter_build_info` from a plain-HTTP Prometheus endpoint (2 s at most).
pub fn scrape(url: &str) -> anyhow::Result<Scraped> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("--server-metrics {url}: an http:// URL"))?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/metrics".to_string()), |(a, p)| (a, format!("/{p}")));
    let addr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("--server-metrics {url}: the host resolves to nothing"))?;
    let timeout = std::time::Duration::from_secs(2);
    let mut io = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    io.set_read_timeout(Some(timeout))?;
    write!(io, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")?;
    let mut text = String::new();
    io.read_to_string(&mut text)?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(parse_metrics(body))
}

fn parse_metrics(body: &str) -> Scraped {
    let value = |name: &str| {
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .next()
    };
    let rss = value("natter_process_resident_memory_bytes").unwrap_or(0.0);
    let cpu = value("natter_process_cpu_seconds_total").unwrap_or(0.0);
    let version = body
        .lines()
        .find(|l| l.starts_with("natter_build_info{"))
        .and_then(|l| l.split("version=\"").nth(1)?.split('"').next().map(str::to_string));
    Scraped { sample: ProcSample { rss_kib: (rss / 1024.0) as u64, cpu_s: cpu }, version }
}

/// Samples the given servers through a run.
pub struct ServerWatch {
    pub figures: Vec<ServerFigures>,
    sources: Vec<Source>,
    start_cpu: Vec<f64>,
    traffic_cpu: Vec<f64>,
}

impl ServerWatch {
    pub fn start(sources: Vec<Source>) -> ServerWatch {
        // One reading each: a metrics endpoint's also gives the version.
        let first: Vec<(ProcSample, Option<String>)> = sources
            .iter()
            .map(|source| match source {
                Source::Pid(pid) => (sample(*pid), None),
                Source::Metrics(url) => scrape(url).map_or((ProcSample::default(), None), |m| (m.sample, m.version)),
            })
            .collect();
        let samples: Vec<ProcSample> = first.iter().map(|(s, _)| *s).collect();
        ServerWatch {
            figures: sources
                .iter()
                .zip(first)
                .map(|(source, (s, version))| ServerFigures {
                    pid: if let Source::Pid(pid) = source { *pid } else { 0 },
                    metrics: if let Source::Metrics(url) = source { Some(url.clone()) } else { None },
                    version,
                    rss_baseline_kib: s.rss_kib,
                    rss_max_kib: s.rss_kib,
                    ..ServerFigures::default()
                })
                .collect(),
            start_cpu: samples.iter().map(|s| s.cpu_s).collect(),
            traffic_cpu: samples.iter().map(|s| s.cpu_s).collect(),
            sources,
        }
    }

    /// A periodic reading: keeps the maximum RSS; returns the readings.
    pub fn tick(&mut self) -> Vec<ProcSample> {
        let samples: Vec<ProcSample> = self.sources.iter().map(Source::sample).collect();
        for (f, s) in self.figures.iter_mut().zip(&samples) {
            f.rss_max_kib = f.rss_max_kib.max(s.rss_kib);
            f.rss_end_kib = s.rss_kib;
        }
        samples
    }

    pub fn loaded(&mut self) {
        for (f, source) in self.figures.iter_mut().zip(&self.sources) {
            f.rss_loaded_kib = source.sample().rss_kib;
        }
    }

    pub fn traffic_started(&mut self) {
        self.traffic_cpu = self.sources.iter().map(|s| s.sample().cpu_s).collect();
    }

    pub fn traffic_ended(&mut self) {
        for ((f, start), source) in self.figures.iter_mut().zip(&self.traffic_cpu).zip(&self.sources) {
            f.cpu_traffic_s = (source.sample().cpu_s - start).max(0.0);
        }
    }

    pub fn finish(mut self) -> Vec<ServerFigures> {
        self.tick();
        for ((f, start), source) in self.figures.iter_mut().zip(&self.start_cpu).zip(&self.sources) {
            f.cpu_total_s = (source.sample().cpu_s - start).max(0.0);
        }
        self.figures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prometheus_page_gives_memory_cpu_and_version() {
        let page = "# HELP natter_process_cpu_seconds_total x\n# TYPE natter_process_cpu_seconds_total counter\n\
                    natter_process_cpu_seconds_total 12.5\nnatter_process_resident_memory_bytes 20971520\n\
                    natter_process_resident_memory_bytes_other 1\nnatter_build_info{version=\"0.1.0\"} 1\n";
        let m = parse_metrics(page);
        assert_eq!((m.sample.rss_kib, m.sample.cpu_s, m.version.as_deref()), (20480, 12.5, Some("0.1.0")));
        assert_eq!(parse_metrics("").sample.rss_kib, 0);
    }

    #[test]
    fn this_process_has_memory_and_the_machine_has_cpu_counters() {
        let me = sample(std::process::id());
        assert!(me.rss_kib > 100, "{me:?}");
        let a = CpuTimes::now();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = CpuTimes::now();
        assert!(b.total > a.total);
        let busy = b.busy_pct_since(&a);
        assert!((0.0..=100.0).contains(&busy), "{busy}");
    }
}
