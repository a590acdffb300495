//! What a result was measured with: the harness and server versions, the commit, the machine
//! and the run's configuration, so a figure can be compared only with its like.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Stamp {
    pub harness_version: String,
    /// `git rev-parse HEAD` of the working directory, with `-dirty` when it has changes.
    pub commit: Option<String>,
    /// What each sampled server reported (`natter_build_info`), when sampled over HTTP.
    pub server_versions: Vec<String>,
    pub machine: Machine,
    /// The run's settings (secrets left out).
    pub config: serde_json::Value,
    /// Unix seconds at the start of the run.
    pub started_at: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Machine {
    pub hostname: String,
    pub cpu_model: String,
    pub cores: usize,
    pub memory_kib: u64,
    pub kernel: String,
}

impl Machine {
    pub fn here() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        Machine {
            hostname: read("/proc/sys/kernel/hostname"),
            cpu_model: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default(),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_kib: meminfo
                .lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or(0),
            kernel: read("/proc/sys/kernel/osrelease"),
        }
    }
}

/// The commit the working directory is at, if it is a git checkout.
pub fn commit() -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "HEAD"]).filter(|h| !h.is_empty())?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_describes_itself() {
        let m = Machine::here();
        assert!(m.cores > 0 && m.memory_kib > 0, "{m:?}");
    }
}
