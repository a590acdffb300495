//! Starting `natter serve` as a child process and learning the address it bound: the one way the
//! cluster tests, the load-test harness and its tests start a node (bound to port 0, the address
//! is only known once the node logs it).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// Spawns `cmd` (a configured `natter serve`; its logs are switched to JSON on stderr) and waits
/// up to `within` for the address it announces. Log lines at ERROR are echoed to this process's
/// stderr under `label`; the rest is read and dropped, so the child never blocks on a full pipe.
/// A child that announces nothing in time is killed.
pub fn serve(cmd: &mut Command, label: &str, within: Duration) -> anyhow::Result<(Child, SocketAddr)> {
    let mut child = cmd
        .env("NATTER_LOG__FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting natter")?;
    let Some(stderr) = child.stderr.take() else {
        let _ = child.kill();
        bail!("natter's stderr was not captured");
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let label = label.to_string();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = tx.as_ref().and(announced(&line)) {
                let _ = tx.take().map(|tx| tx.send(addr));
            } else if line.contains("\"ERROR\"") {
                eprintln!("{label}: {line}");
            }
        }
    });
    match rx.recv_timeout(within) {
        Ok(addr) => Ok((child, addr)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("natter did not report its address within {within:?}")
        }
    }
}

/// The address in a JSON log line that carries one (the node's "listening" line).
fn announced(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v.get("addr")?.as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::announced;

    #[test]
    fn the_address_is_read_from_the_listening_line_only() {
        let line = r#"{"level":"INFO","fields":{"message":"listening"},"addr":"127.0.0.1:4100"}"#;
        assert_eq!(announced(line), "127.0.0.1:4100".parse().ok());
        assert_eq!(announced(r#"{"level":"INFO","fields":{"message":"migrated"}}"#), None);
        assert_eq!(announced("not json"), None);
    }
}
