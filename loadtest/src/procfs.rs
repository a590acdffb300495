//! What the kernel says about the machine and the servers under test: whole-machine busy share
//! (from /proc/stat), a process's resident memory and CPU time (from /proc/PID).

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
    pub pid: u32,
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

/// Samples the given processes through a run.
pub struct ServerWatch {
    pub figures: Vec<ServerFigures>,
    start_cpu: Vec<f64>,
    traffic_cpu: Vec<f64>,
}

impl ServerWatch {
    pub fn start(pids: &[u32]) -> ServerWatch {
        let samples: Vec<ProcSample> = pids.iter().map(|p| sample(*p)).collect();
        ServerWatch {
            figures: pids
                .iter()
                .zip(&samples)
                .map(|(pid, s)| ServerFigures {
                    pid: *pid,
                    rss_baseline_kib: s.rss_kib,
                    rss_max_kib: s.rss_kib,
                    ..ServerFigures::default()
                })
                .collect(),
            start_cpu: samples.iter().map(|s| s.cpu_s).collect(),
            traffic_cpu: samples.iter().map(|s| s.cpu_s).collect(),
        }
    }

    /// A periodic reading: keeps the maximum RSS.
    pub fn tick(&mut self) {
        for f in &mut self.figures {
            let s = sample(f.pid);
            f.rss_max_kib = f.rss_max_kib.max(s.rss_kib);
            f.rss_end_kib = s.rss_kib;
        }
    }

    pub fn loaded(&mut self) {
        for f in &mut self.figures {
            f.rss_loaded_kib = sample(f.pid).rss_kib;
        }
    }

    pub fn traffic_started(&mut self) {
        self.traffic_cpu = self.figures.iter().map(|f| sample(f.pid).cpu_s).collect();
    }

    pub fn traffic_ended(&mut self) {
        for (f, start) in self.figures.iter_mut().zip(&self.traffic_cpu) {
            f.cpu_traffic_s = (sample(f.pid).cpu_s - start).max(0.0);
        }
    }

    pub fn finish(mut self) -> Vec<ServerFigures> {
        self.tick();
        for (f, start) in self.figures.iter_mut().zip(&self.start_cpu) {
            f.cpu_total_s = (sample(f.pid).cpu_s - start).max(0.0);
        }
        self.figures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
