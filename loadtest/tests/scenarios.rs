//! Each scenario for a few seconds against a real server (the `natter` binary built beside this
//! one), read back from the JSON summary; and a threshold that cannot hold fails the run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_natter-loadtest")).parent().unwrap().to_path_buf()
}

fn natter_bin() -> PathBuf {
    let p = bin_dir().join("natter");
    assert!(p.exists(), "{} is missing: run the tests with `cargo test --workspace`", p.display());
    p
}

struct Server {
    child: Child,
    ws: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn natter(cmd: &mut Command, db: &str, nats: &str, prefix: &str) {
    cmd.env("NATTER_DATABASE__URL", db)
        .env("NATTER_NATS__URL", nats)
        .env("NATTER_NATS__PREFIX", prefix)
        .env("NATTER_HTTP__BIND", "127.0.0.1:0")
        .env("NATTER_HTTP__ADMIN_BIND", "127.0.0.1:0")
        .env("NATTER_HTTP__WORKERS", "1")
        .env("NATTER_DATABASE__MAX_CONNECTIONS", "8")
        .env("NATTER_LOG__FORMAT", "json")
        .env("NATTER_LOG__LEVEL", "warn,natter::server=info")
        .env("NATTER_WS__MESSAGES_PER_SECOND", "100000")
        .env("NATTER_WS__MESSAGE_BURST", "100000")
        .env_remove("DATABASE_URL")
        .env_remove("NATS_URL")
        .env_remove("NATTER_ENV");
}

/// The app's (key, secret), creating the store.
fn create_app(db: &str) -> (String, String) {
    let mut cmd = Command::new(natter_bin());
    natter(&mut cmd, db, "", "x");
    let out = cmd.args(["app", "create", "--id", "lt", "--name", "Load test", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (v["api_key"].as_str().unwrap().to_string(), v["api_secret"].as_str().unwrap().to_string())
}

fn start(db: &str, nats: &str, prefix: &str) -> Server {
    let mut cmd = Command::new(natter_bin());
    natter(&mut cmd, db, nats, prefix);
    cmd.arg("serve");
    let (child, addr) = natter::launch::serve(&mut cmd, "natter", Duration::from_secs(30)).expect("natter starts");
    Server { child, ws: format!("ws://{addr}/ws") }
}

fn start_floor() -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_natter-loadtest"))
        .args(["floor", "--bind", "127.0.0.1:0", "--announce"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    Server { ws: format!("ws://{}/ws", v["floor"].as_str().unwrap()), child }
}

/// Runs `natter-loadtest run …` (bounded in time) and returns its exit code and JSON summary.
fn loadtest(args: &[&str], creds: Option<&(String, String)>, servers: &[&Server]) -> (i32, Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("summary.json");
    let targets: Vec<&str> = servers.iter().map(|s| s.ws.as_str()).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_natter-loadtest"));
    cmd.arg("run").args(args).arg("--targets").arg(targets.join(",")).arg("--out").arg(&out).arg("--quiet");
    for s in servers {
        cmd.arg("--server-pid").arg(s.child.id().to_string());
    }
    match creds {
        Some((key, secret)) => cmd.env("LOADTEST_APP_KEY", key).env("LOADTEST_APP_SECRET", secret),
        None => cmd.args(["--auth", "floor"]),
    };
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let progress =
        std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<String>>());
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("natter-loadtest {args:?} did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let lines = progress.join().unwrap();
    let code = status.code().unwrap_or(-1);
    let summary = std::fs::read(&out).map(|b| serde_json::from_slice(&b).unwrap()).unwrap_or_else(|_| {
        panic!("no summary from {args:?} (exit {code}):\n{}", lines.join("\n"));
    });
    // The progress line appeared at least once a second.
    assert!(lines.iter().any(|l| l.contains("connected")), "no progress line: {lines:?}");
    (code, summary)
}

fn n(v: &Value, path: &str) -> u64 {
    path.split('.').fold(v, |v, k| &v[k]).as_u64().unwrap_or_else(|| panic!("{path} missing in {v}"))
}

fn embedded() -> (tempfile::TempDir, (String, String), Server) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/natter.db", dir.path().display());
    let creds = create_app(&db);
    let server = start(&db, "", "natter");
    (dir, creds, server)
}

#[test]
fn every_scenario_delivers_everything_it_acked_on_an_embedded_node() {
    let (_dir, creds, server) = embedded();

    let (code, s) = loadtest(
        &["group", "--group-size", "40", "--senders", "2", "--rate", "40", "--duration", "2"],
        Some(&creds),
        &[&server],
    );
    assert_eq!(code, 0, "{s}");
    let acked = n(&s, "counts.acked");
    assert!(acked >= 70, "{s}");
    assert_eq!(n(&s, "counts.sent"), acked);
    assert_eq!(n(&s, "counts.expected"), acked * 39);
    assert_eq!(n(&s, "counts.delivered"), n(&s, "counts.expected"));
    assert_eq!(n(&s, "counts.lost") + n(&s, "counts.duplicated") + n(&s, "counts.out_of_order"), 0);
    assert_eq!(n(&s, "delivery.count"), n(&s, "counts.delivered"));
    assert!(s["servers"][0]["rss_loaded_kib"].as_u64().unwrap() > 0);

    let (code, s) = loadtest(&["dm", "--pairs", "10", "--rate", "100", "--duration", "2"], Some(&creds), &[&server]);
    assert_eq!(code, 0, "{s}");
    assert!(n(&s, "counts.acked") >= 190, "{s}");
    assert_eq!(n(&s, "counts.expected"), n(&s, "counts.acked"));
    assert_eq!(n(&s, "counts.delivered"), n(&s, "counts.acked"));

    let (code, s) = loadtest(
        &["mixed", "--pairs", "5", "--group-size", "10", "--rate", "60", "--mix", "dm=1,group=2", "--duration", "2"],
        Some(&creds),
        &[&server],
    );
    assert_eq!(code, 0, "{s}");
    assert_eq!(n(&s, "counts.delivered"), n(&s, "counts.expected"));
    // 40 DMs (1 recipient each) and 80 group messages (9 recipients each) in 2 s.
    assert!(n(&s, "counts.expected") >= 35 + 75 * 9, "{s}");

    let (code, s) = loadtest(&["connect", "--users", "200", "--duration", "1"], Some(&creds), &[&server]);
    assert_eq!(code, 0, "{s}");
    assert_eq!((n(&s, "counts.connected"), n(&s, "counts.connect_failed")), (200, 0));
    assert_eq!(n(&s, "connect.count"), 200);
    assert!(s["connect_rate_per_s"].as_f64().unwrap() > 0.0);

    let (code, s) = loadtest(&["reconnect", "--users", "100"], Some(&creds), &[&server]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(n(&s, "reconnect.count"), 100);
    assert_eq!(n(&s, "sync.count"), 100);
    assert_eq!(n(&s, "counts.errors"), 0);
}

#[test]
fn a_threshold_that_cannot_hold_fails_the_run() {
    let (_dir, creds, server) = embedded();
    let (code, s) = loadtest(
        &["dm", "--pairs", "2", "--rate", "20", "--duration", "1", "--threshold", "delivery_p99_ms<0.001"],
        Some(&creds),
        &[&server],
    );
    assert_eq!(code, 1, "{s}");
    assert_eq!(s["passed"], false);
    assert_eq!(s["thresholds"][0]["ok"], false);
    // The counts are still whole: the threshold, not the delivery, failed.
    assert_eq!(n(&s, "counts.delivered"), n(&s, "counts.acked"));

    let (code, s) = loadtest(
        &["dm", "--pairs", "2", "--rate", "20", "--duration", "1", "--threshold", "lost==0"],
        Some(&creds),
        &[&server],
    );
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["thresholds"][0]["ok"], true);
}

#[test]
fn the_floor_answers_the_group_scenario_like_natter() {
    let floor = start_floor();
    let (code, s) = loadtest(&["group", "--group-size", "50", "--rate", "50", "--duration", "2"], None, &[&floor]);
    assert_eq!(code, 0, "{s}");
    assert!(n(&s, "counts.acked") >= 95, "{s}");
    assert_eq!(n(&s, "counts.delivered"), n(&s, "counts.acked") * 49);
    assert_eq!(n(&s, "counts.out_of_order") + n(&s, "counts.duplicated"), 0);
}

#[test]
fn a_group_spread_over_two_cluster_nodes_and_two_worker_processes_loses_nothing() {
    let db_name = format!("natter_lt_test_{}", std::process::id());
    let admin = "postgres://postgres@127.0.0.1:5432";
    let psql = |sql: &str| {
        let out = Command::new("psql").arg(format!("{admin}/postgres")).args(["-qAtc", sql]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    psql(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"));
    psql(&format!("CREATE DATABASE {db_name}"));
    let db = format!("{admin}/{db_name}");
    let creds = create_app(&db);
    let prefix = format!("lttest{}", std::process::id());
    let a = start(&db, "nats://127.0.0.1:4222", &prefix);
    let b = start(&db, "nats://127.0.0.1:4222", &prefix);
    let (code, s) = loadtest(
        &[
            "group",
            "--group-size",
            "60",
            "--senders",
            "3",
            "--rate",
            "60",
            "--duration",
            "2",
            "--procs",
            "2",
            "--source-ips",
            "2",
        ],
        Some(&creds),
        &[&a, &b],
    );
    drop((a, b));
    psql(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"));
    assert_eq!(code, 0, "{s}");
    assert!(n(&s, "counts.acked") >= 110, "{s}");
    assert_eq!(n(&s, "counts.expected"), n(&s, "counts.acked") * 59);
    assert_eq!(n(&s, "counts.delivered"), n(&s, "counts.expected"));
    assert_eq!(s["servers"].as_array().unwrap().len(), 2);
    assert_eq!(s["procs"], 2);
}

/// A throwaway CA and a certificate for 127.0.0.1 in `dir` (the repository's test-certs.sh).
fn test_certificate(dir: &std::path::Path) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/test-certs.sh");
    let out = Command::new("sh").arg(script).arg(dir).output().expect("sh runs");
    assert!(out.status.success(), "test-certs.sh (needs openssl): {}", String::from_utf8_lossy(&out.stderr));
}

/// A TLS terminator in front of `backend` (what an ingress does); returns its port.
fn tls_proxy(dir: &std::path::Path, backend: std::net::SocketAddr) -> u16 {
    use tokio_rustls::rustls;
    let certs = rustls_pemfile::certs(&mut std::fs::read(dir.join("server.pem")).unwrap().as_slice())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key =
        rustls_pemfile::private_key(&mut std::fs::read(dir.join("server.key")).unwrap().as_slice()).unwrap().unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((io, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(io).await else { return };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
    });
    port
}

#[test]
fn a_wss_target_behind_tls_is_measured_with_server_figures_from_its_metrics_and_a_stamped_series() {
    let dir = tempfile::tempdir().unwrap();
    test_certificate(dir.path());
    let db = format!("sqlite://{}/natter.db", dir.path().display());
    let creds = create_app(&db);
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = Command::new(natter_bin());
    natter(&mut cmd, &db, "", "natter");
    cmd.env("NATTER_HTTP__ADMIN_BIND", format!("127.0.0.1:{admin}")).arg("serve");
    let (child, addr) = natter::launch::serve(&mut cmd, "natter", Duration::from_secs(30)).expect("natter starts");
    let port = tls_proxy(dir.path(), addr);
    let server = Server { child, ws: format!("wss://127.0.0.1:{port}/ws") };

    let out = dir.path().join("summary.json");
    let status = Command::new(env!("CARGO_BIN_EXE_natter-loadtest"))
        .args(["run", "dm", "--pairs", "10", "--rate", "50", "--duration", "2", "--quiet", "--targets", &server.ws])
        .args(["--tls-ca", &dir.path().join("ca.pem").display().to_string()])
        .args(["--server-metrics", &format!("http://127.0.0.1:{admin}/metrics")])
        .arg("--out")
        .arg(&out)
        .env("LOADTEST_APP_KEY", &creds.0)
        .env("LOADTEST_APP_SECRET", &creds.1)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the run over wss:// passed");
    let s: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(n(&s, "counts.connected"), 20, "{s}");
    assert_eq!(n(&s, "counts.lost"), 0);
    assert!(n(&s, "counts.delivered") > 0);
    // Server figures from the target's Prometheus endpoint, no local PID given.
    let server_figures = &s["servers"][0];
    assert_eq!(server_figures["metrics"], format!("http://127.0.0.1:{admin}/metrics"));
    assert!(n(server_figures, "rss_loaded_kib") > 1000, "{server_figures}");
    // CPU comes in whole seconds over HTTP (an integer counter): present, not yet resolvable in
    // a two-second run.
    assert!(server_figures["cpu_total_s"].as_f64().unwrap() >= 0.0, "{server_figures}");
    // Stamped: versions, machine, configuration (without the secret).
    let stamp = &s["stamp"];
    assert_eq!(stamp["server_versions"][0], env!("CARGO_PKG_VERSION"));
    assert!(n(stamp, "machine.cores") > 0 && n(stamp, "machine.memory_kib") > 0, "{stamp}");
    assert_eq!(stamp["config"]["targets"][0], server.ws.as_str());
    assert!(stamp["config"].get("app_secret").is_none() && !s.to_string().contains(&creds.1), "no secret in results");
    // A point a second, beside the summary.
    let series = std::fs::read_to_string(dir.path().join("summary.series.jsonl")).unwrap();
    let points: Vec<Value> = series.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(points.len() >= 2, "{series}");
    assert!(points.iter().any(|p| p["acked_per_s"].as_f64().unwrap() > 0.0), "{series}");
    assert!(points.iter().all(|p| p["server_rss_kib"][0].as_u64().unwrap() > 0), "{series}");
}
