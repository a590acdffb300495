//! Logging (tracing; pretty or JSON) and the Prometheus recorder behind `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogConfig, LogFormat};

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds: sub-millisecond to 10 s.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Installs the process-wide metrics recorder once; later calls reuse it.
pub fn init_metrics() {
    PROMETHEUS.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        match builder.install_recorder() {
            Ok(handle) => handle,
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder already installed elsewhere");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    });
    metrics::gauge!("natter_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// The Prometheus text exposition of every metric.
pub fn render_metrics() -> String {
    PROMETHEUS.get().map(PrometheusHandle::render).unwrap_or_default()
}

/// Drops expired histogram samples and samples the process's memory and CPU; on a timer.
pub fn metrics_upkeep() {
    if let Some(handle) = PROMETHEUS.get() {
        handle.run_upkeep();
    }
    // Linux: resident pages in /proc/self/statm, user+system ticks in /proc/self/stat.
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
        && let Some(pages) = statm.split_whitespace().nth(1).and_then(|p| p.parse::<f64>().ok())
    {
        metrics::gauge!("natter_process_resident_memory_bytes").set(pages * 4096.0);
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
    {
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<f64>().ok()).sum();
        metrics::gauge!("natter_process_cpu_seconds_total").set(ticks / 100.0);
    }
}

/// Logs to stderr; `RUST_LOG` overrides `log.level`. Safe to call more than once.
pub fn init_logging(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match config.format {
        LogFormat::Json => {
            registry.with(fmt::layer().json().flatten_event(true).with_writer(std::io::stderr)).try_init()
        }
        LogFormat::Pretty => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
    };
}
